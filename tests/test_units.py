from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from evoprune.errors import EvopruneError
from evoprune.network.models import build_model
from evoprune.network.units import check_recipe, find_units, kept_channels

DIGITS = (1, 8, 8)


def test_resnet20_units_are_the_block_internal_convs(resnet20_units):
    assert resnet20_units.names == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert resnet20_units.channels.tolist() == [16] * 3 + [32] * 3 + [64] * 3
    unit = resnet20_units.units[4]
    assert (unit.producers, unit.followers, unit.consumers) == (
        ("layer2.1.conv1",), ("layer2.1.bn1",), ("layer2.1.conv2",))
    assert {u.kind for u in resnet20_units} == {"internal"}


def test_residual_option_adds_the_three_stage_groups(resnet20):
    units = find_units(resnet20, DIGITS, residual=True)
    residual = [u for u in units if u.kind == "residual"]
    assert len(units) == 12 and [u.channels for u in residual] == [16, 32, 64]
    stage1 = residual[0]
    assert stage1.name == "conv1"  # the stem is coupled to stage 1 through the skips
    assert stage1.producers == ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2")
    assert "layer2.0.downsample.0" in stage1.consumers


@pytest.mark.parametrize(("name", "n_internal", "n_all"), [
    ("resnet56", 27, 30), ("vgg16", 13, 13), ("mobilenetv2", 20, 25), ("resnet50", 33, 37),
])
def test_unit_counts(name, n_internal, n_all):
    model = build_model(name, 10, (3, 32, 32))
    assert len(find_units(model, (3, 32, 32))) == n_internal
    assert len(find_units(model, (3, 32, 32), residual=True)) == n_all


def test_classifier_output_and_network_input_are_never_pruned():
    model = build_model("vgg16", 10, (3, 32, 32))
    units = find_units(model, (3, 32, 32), residual=True)
    assert units.output_layer == "classifier"
    assert all("classifier" not in u.producers for u in units)
    assert all("features.0" not in u.consumers for u in units)  # the stem's input is the image
    assert units.units[-1].consumers == ("classifier",)  # its inputs may shrink, its outputs not


def test_order_is_stable_across_rebuilds():
    a = find_units(build_model("mobilenetv2", 10, (3, 32, 32)), (3, 32, 32), residual=True)
    b = find_units(build_model("mobilenetv2", 10, (3, 32, 32)), (3, 32, 32), residual=True)
    assert a.names == b.names and a.describe() == b.describe()


def test_find_units_keeps_the_train_flag(resnet20):
    model = build_model("resnet20", 10, DIGITS).train()
    before = [bn.running_mean.clone() for bn in model.modules() if isinstance(bn, torch.nn.BatchNorm2d)]
    find_units(model, DIGITS)
    assert model.training and all(m.training for m in model.modules())
    after = [bn.running_mean for bn in model.modules() if isinstance(bn, torch.nn.BatchNorm2d)]
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_kept_channels_round_half_up_keep_one_and_round_to():
    c = np.array([16, 16, 16, 64, 10])
    r = np.array([0.5, 0.96875, 0.999, 0.3, 0.0])
    assert kept_channels(c, r).tolist() == [8, 1, 1, 45, 10]  # 0.5 -> 1, 0.016 -> 1 (at least one)
    assert kept_channels(np.array([10]), np.array([0.25])).tolist() == [8]  # 7.5 rounds half up
    assert kept_channels(c, r, round_to=8).tolist() == [8, 8, 8, 48, 10]  # r = 0: unpruned
    assert kept_channels(np.array([10]), np.array([0.01]), round_to=8).tolist() == [8]


@pytest.mark.parametrize(("recipe", "message"), [
    ([0.1] * 8, "has 8 ratios but the model has 9"),
    ([0.1] * 8 + [1.0], r"outside \[0, 1\)"),
    ([0.1] * 8 + [-0.1], r"outside \[0, 1\)"),
    ([0.1] * 8 + [float("nan")], r"nan .* outside"),
    ({"layer9.conv1": 0.5}, "unknown unit"),
    (["a"] * 9, "list of numbers"),
])
def test_bad_recipes_say_what_to_change(resnet20_units, recipe, message):
    with pytest.raises(EvopruneError, match=message):
        check_recipe(resnet20_units, recipe)


def test_unit_map_recipes_default_to_unpruned(resnet20_units):
    r = check_recipe(resnet20_units, {"layer2.0.conv1": 0.25})
    assert r.tolist() == [0, 0, 0, 0.25, 0, 0, 0, 0, 0]


@given(st.lists(st.tuples(st.integers(1, 2048), st.floats(0, 1, exclude_max=True)),
                min_size=1, max_size=30),
       st.sampled_from([1, 2, 8, 16]))
def test_kept_channels_properties(pairs, round_to):
    c = np.array([p[0] for p in pairs])
    r = np.array([p[1] for p in pairs])
    kept = kept_channels(c, r, round_to)
    assert ((kept >= 1) & (kept <= c)).all()
    pruned = r > 0
    if round_to == 1:  # nearest integer, at least one
        assert (np.abs(kept - np.maximum(c * (1 - r), 0.5)) <= 0.5 + 1e-9).all()
    else:  # a multiple of round_to unless capped at c; ratio 0 keeps everything
        assert ((kept[pruned] % round_to == 0) | (kept[pruned] == c[pruned])).all()
        assert (kept[~pruned] == c[~pruned]).all()
    assert (kept_channels(c, np.maximum(r, np.minimum(r + 0.1, 0.999)), round_to) <= kept).all()  # monotone


class _LayerScaleNet(torch.nn.Module):
    """A residual stage with a layer scale (`gamma.reshape`), a GRN-style `.view` and a WS conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc1 = torch.nn.Conv2d(16, 32, 1)
        self.fc2 = torch.nn.Conv2d(32, 16, 1)
        self.gamma = torch.nn.Parameter(torch.ones(16))
        self.grn = torch.nn.Parameter(torch.ones(32))
        self.ws = _StdConv(16, 24, 3)
        self.head = torch.nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h = torch.relu(self.fc1(x)) * self.grn.view(1, -1, 1, 1)
        x = x + self.fc2(h) * self.gamma.reshape(1, -1, 1, 1)
        return self.head(torch.relu(self.ws(x)).mean((2, 3)))


class _StdConv(torch.nn.Conv2d):
    """NF-ResNet's weight-standardised conv: the weight is computed in the forward, with a gain."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        self.gain = torch.nn.Parameter(torch.ones(cout, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.nn.functional.batch_norm(self.weight.reshape(1, self.out_channels, -1), None,
                                           None, weight=(self.gain * 0.5).view(-1), training=True,
                                           momentum=0.0).reshape_as(self.weight)
        return torch.nn.functional.conv2d(x, w, self.bias, padding=self.padding)


def test_per_channel_views_are_not_shuffles_and_weight_paths_carry_no_channels():
    from evoprune.network.cost import CostModel, flops_of, params_of
    from evoprune.network.pruning import prune_channels

    model = _LayerScaleNet().eval()
    units = find_units(model, (3, 12, 12), residual=True)
    by_name = {u.name: u for u in units}
    assert units.left_out == ()  # no view is taken for a channel shuffle
    assert by_name["stem"].kind == "residual" and "gamma" in by_name["stem"].followers
    assert "grn" in by_name["fc1"].followers and "ws.gain" in by_name["ws"].followers
    assert by_name["ws"].consumers == ("head",) and "ws" in by_name["stem"].consumers
    cost = CostModel(model, units)
    for recipe in (np.full(len(units), 0.5), np.array([0.25, 0.75, 0.5])):
        kept = cost.kept(recipe)
        pruned = prune_channels(model, units, kept).eval()
        figures = cost.of_channels(kept)
        assert (figures.flops, figures.params) == (flops_of(pruned, (3, 12, 12)), params_of(pruned))
        assert pruned.ws.gain.shape[0] == kept[units.names.index("ws")]
        assert pruned(torch.zeros(2, 3, 12, 12)).shape == (2, 10)


def test_units_are_found_once_per_model_and_found_again_when_it_changes(monkeypatch):
    from evoprune.network import units as units_module

    calls = []
    real = units_module._find_units
    monkeypatch.setattr(units_module, "_find_units", lambda *a: calls.append(a) or real(*a))
    model = build_model("resnet20", 10, DIGITS)
    first = find_units(model, DIGITS)
    assert find_units(model, DIGITS) is first and len(calls) == 1
    assert find_units(model, DIGITS, residual=True) is not first and len(calls) == 2
    model.layer1[0].conv1 = torch.nn.Conv2d(16, 8, 3, padding=1, bias=False)  # a new architecture
    model.layer1[0].bn1 = torch.nn.BatchNorm2d(8)
    model.layer1[0].conv2 = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
    assert find_units(model, DIGITS).channels[0] == 8 and len(calls) == 3


def test_a_model_whose_groups_are_all_residual_says_use_residual():
    class Plain(torch.nn.Module):  # every conv's output is summed into the stage (RepVGG-like)
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.c = torch.nn.Conv2d(8, 8, 1)
            self.head = torch.nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.a(x)
            x = torch.relu(self.b(x) + self.c(x) + x)
            return self.head(x.mean((2, 3)))

    with pytest.raises(EvopruneError, match=r"on a residual path .*residual=True \(`residual`\)"):
        find_units(Plain(), (3, 8, 8))
    assert len(find_units(Plain(), (3, 8, 8), residual=True)) == 1


def test_unit_finding_has_a_time_limit_that_names_where_it_stopped(monkeypatch):
    from evoprune.network import units as units_module

    monkeypatch.setattr(units_module, "TIME_LIMIT", 0.0)
    with pytest.raises(EvopruneError, match=r"took over 0 s \(stopped at [\w.]+: its channels were still being followed through [\w.]+\); raise evoprune.network.units.TIME_LIMIT"):
        find_units(build_model("resnet20", 10, DIGITS), DIGITS)


class _EcaNet(torch.nn.Module):
    """A residual stage gated by ECA: a one-channel Conv1d along the pooled channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.eca = torch.nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.conv(x)
        gate = self.eca(y.mean((2, 3)).view(y.shape[0], 1, -1)).sigmoid()
        x = x + y * gate.view(y.shape[0], -1, 1, 1).expand_as(y)
        return self.head(x.mean((2, 3)))


def test_an_eca_conv1d_along_the_channels_follows_the_kept_channels():
    from evoprune.network.cost import CostModel, flops_of, params_of
    from evoprune.network.pruning import prune_channels

    model = _EcaNet().eval()
    units = find_units(model, (3, 8, 8), residual=True)
    assert units.names == ["stem"] and units.left_out == ()
    assert ("eca", "length", 1) in units.units[0].slices
    cost = CostModel(model, units)
    for kept in ([16], [9], [1]):
        pruned = prune_channels(model, units, kept).eval()
        figures = cost.of_channels(kept)
        assert (figures.flops, figures.params) == (flops_of(pruned, (3, 8, 8)), params_of(pruned))
        assert pruned(torch.zeros(2, 3, 8, 8)).shape == (2, 10)
