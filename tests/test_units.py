from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from evoprune.errors import EvopruneError
from evoprune.models import build_model
from evoprune.units import check_recipe, find_units, kept_channels

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
