"""Every torchvision CNN family and a user model with concatenations, groups and a shuffle.

The matrix checks, per model at its smallest input: units found, analytic cost = FlopCounterMode
and parameter count of the pruned model, the pruned model runs, save/load round-trips with
weights_only, and decoded recipes land in their FLOPs band. CI runs one model a family.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from evoprune.cli.commands import main
from evoprune.errors import EvopruneError
from evoprune.experiments.coverage import FAMILIES, check_model, format_coverage
from evoprune.network.cost import CostModel, flops_of, params_of
from evoprune.network.models import build_model
from evoprune.network.pruning import build_graph, prune_channels, unit_scores
from evoprune.network.units import find_units, frozen_mappings

FIRST = [names[0] for names in FAMILIES.values()]
REST = [name for names in FAMILIES.values() for name in names[1:]]


@pytest.mark.parametrize("name", FIRST)
def test_one_model_a_family_prunes_exactly(name):
    row = check_model(name)
    assert row.units > 0 and row.exact and row.runs and row.round_trip and row.in_band, row
    assert row.flops < row.measured_flops + 1 and row.params == row.measured_params
    if name in ("resnext50_32x4d", "regnet_x_400mf"):
        assert row.grouped_units >= 16  # every bottleneck's grouped conv loses whole groups
    if name.startswith("shufflenet"):  # the groups that cross a channel shuffle stay, with why
        assert row.left_out > 0 and any("shuffle" in why for why in row.reasons)
    else:
        assert row.left_out == 0, row.reasons


@pytest.mark.slow
@pytest.mark.parametrize("name", REST)
def test_the_other_models_of_each_family_prune_exactly(name):
    assert check_model(name).ok


def test_every_torchvision_classifier_is_in_a_checked_family_or_refused_with_a_reason():
    import torchvision

    from evoprune.experiments.coverage import NOT_FILTER_PRUNING

    models = torchvision.models.list_models(module=torchvision.models)
    cnns = [m for m in models if m.startswith(tuple(FAMILIES))]
    refused = [m for m in models if m.startswith(tuple(NOT_FILTER_PRUNING))]
    assert sorted(cnns + refused) == sorted(models)  # nothing falls between the two lists
    assert len(FAMILIES) == 17 and len(cnns) >= 60
    for family, names in FAMILIES.items():
        assert all(n in models and n.startswith(family) for n in names)
    with pytest.raises(EvopruneError, match="transformer"):
        build_model(f"torchvision:{refused[0]}", 10, (3, 224, 224))


def test_the_coverage_table_names_the_machine_and_each_check():
    text = format_coverage([check_model("squeezenet1_1").to_dict()])
    assert text.startswith("machine: ") and "| squeezenet | squeezenet1_1 | 32×32 | 25 (0) | 0 |" \
        " yes | yes |" in text and "vit:" in text


USER_NET = textwrap.dedent('''
    import torch
    from torch import nn


    def channel_shuffle(x, groups):
        b, c, h, w = x.shape
        return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


    class UserNet(nn.Module):
        """Two concatenated branches, a grouped 3x3, a depthwise conv and a channel shuffle."""

        def __init__(self, num_classes=10, in_channels=3):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(16), nn.ReLU())
            self.a = nn.Conv2d(16, 16, 1)
            self.b = nn.Conv2d(16, 8, 3, padding=1)
            self.bn_cat = nn.BatchNorm2d(24)
            self.expand = nn.Conv2d(24, 32, 1, bias=False)
            self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False)
            self.bn_g = nn.BatchNorm2d(32)
            self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
            self.pw = nn.Conv2d(32, 32, 1)
            self.out = nn.Conv2d(32, 48, 3, stride=2, padding=1)
            self.head = nn.Linear(48, num_classes)

        def forward(self, x):
            x = self.stem(x)
            x = self.bn_cat(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))
            x = torch.relu(self.bn_g(self.grouped(torch.relu(self.expand(x)))))
            x = channel_shuffle(torch.relu(self.pw(torch.relu(self.dw(x)))), 4)
            return self.head(torch.relu(self.out(x)).mean((2, 3)))


    def build(num_classes, in_channels):
        return UserNet(num_classes, in_channels)
''')


@pytest.fixture
def usernet(tmp_path, monkeypatch):
    (tmp_path / "usernet.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "usernet:build"


def test_a_user_model_with_concat_groups_depthwise_and_shuffle_prunes_exactly(usernet):
    model = build_model(usernet, 10, (3, 16, 16))
    units = find_units(model, (3, 16, 16))
    by_name = {u.name: u for u in units}
    assert set(by_name) == {"stem.0", "a", "b", "expand", "out"}
    assert by_name["expand"].step == 8 and "grouped" in by_name["expand"].followers
    assert "dw" in by_name["expand"].followers and by_name["expand"].consumers == ("pw",)
    assert ("a", "out", 1) in by_name["a"].slices and ("expand", "in", 1) in by_name["b"].slices
    assert [name for name, _ in units.left_out] == ["pw"]
    assert "shuffle" in units.left_out[0][1]
    cost = CostModel(model, units)
    rng = np.random.default_rng(0)
    for recipe in [np.full(len(units), 0.5), *rng.uniform(0, 0.9, (4, len(units)))]:
        kept = cost.kept(recipe)
        assert kept[units.names.index("expand")] % 8 == 0  # whole groups of the grouped conv
        pruned = prune_channels(model, units, kept)
        figures = cost.of_channels(kept)
        assert (figures.flops, figures.params) == (flops_of(pruned, (3, 16, 16)), params_of(pruned))
        assert pruned.grouped.groups == kept[units.names.index("expand")] // 8
        assert pruned(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_a_user_model_prunes_and_searches_from_the_cli(usernet, tmp_path, capsys):
    assert main(["prune", "--model", usernet, "--dataset", "synthetic:3x16x16:10",
                 "--recipe", "uniform:0.5", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["units"] == ["stem.0", "a", "b", "expand", "out"]
    storage = f"sqlite:///{tmp_path / 'user.db'}"
    assert main(["train", "--model", usernet, "--dataset", "synthetic:3x16x16:10", "--epochs", "1",
                 "--device", "cpu", "--out", str(tmp_path / "base.pt")]) == 0
    assert main(["search", "--model", usernet, "--dataset", "synthetic:3x16x16:10",
                 "--c-flops", "0.5", "--n-trials", "4", "--uniform-seeds", "1",
                 "--population", "4", "--proxy-epochs", "1",
                 "--checkpoint", str(tmp_path / "base.pt"), "--storage", storage,
                 "--device", "cpu", "--baselines", "none"]) == 0
    capsys.readouterr()
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert all(abs(t.user_attrs["flops_ratio"] - 0.5) <= 0.002 for t in trials)


def test_l2_from_torch_pruning_keeps_the_channels_the_filter_norms_keep():
    """On resnet20 (plain chains and residual stages) Torch-Pruning's group L2 over the filters a
    channel owns ranks as the sum of squared filter norms of its producers did before."""
    model = build_model("resnet20", 10, (3, 32, 32))
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p)
    units = find_units(model, (3, 32, 32), residual=True)
    modules = dict(model.named_modules())
    graph = build_graph(model, (3, 32, 32))
    with frozen_mappings():
        for unit in units:
            ours = unit_scores(graph, modules, unit, "l2")
            norms = sum(modules[p].weight.detach().double().reshape(unit.channels, -1).pow(2).sum(1)
                        for p in unit.producers).numpy()
            assert np.allclose(ours, norms, rtol=1e-5)
            assert (np.argsort(-ours, kind="stable") == np.argsort(-norms, kind="stable")).all()
