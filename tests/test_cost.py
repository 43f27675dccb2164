from __future__ import annotations

import numpy as np
import pytest
import torch

from evoprune.network.cost import CostModel, flops_of, params_of
from evoprune.network.models import build_model
from evoprune.network.pruning import prune_channels
from evoprune.network.units import find_units, kept_channels

CASES = {  # model: input shape of the exactness check
    "resnet20": (3, 32, 32), "resnet56": (3, 32, 32), "resnet110": (3, 32, 32),
    "vgg16": (3, 32, 32), "mobilenetv2": (3, 32, 32),
    "resnet18": (3, 64, 64), "resnet50": (3, 64, 64),
}


def random_recipes(n_units: int, n: int, seed: int) -> list[np.ndarray]:
    """Uniform ratios in [0, 0.95), a third of them pushed near 1 (0.97-0.999), plus extremes."""
    rng = np.random.default_rng(seed)
    recipes = [np.zeros(n_units), np.full(n_units, 0.999)]
    while len(recipes) < n:
        r = rng.uniform(0, 0.95, n_units)
        near_one = rng.random(n_units) < 0.33
        r[near_one] = rng.uniform(0.97, 0.999, near_one.sum())
        recipes.append(r)
    return recipes


@pytest.mark.parametrize("residual", [False, True], ids=["internal", "residual"])
@pytest.mark.parametrize("name", CASES)
def test_analytic_cost_equals_the_measured_pruned_model(name, residual):
    shape = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, 10, shape)
    units = find_units(model, shape, residual=residual)
    cost = CostModel(model, units)
    assert cost.base_flops == flops_of(model, shape) and cost.base_params == params_of(model)
    for i, recipe in enumerate(random_recipes(len(units), 20, seed=len(name))):
        round_to = 8 if i % 5 == 4 else 1
        kept = kept_channels(units.channels, recipe, round_to)
        pruned = prune_channels(model, units, kept)
        analytic = cost.of_recipe(recipe, round_to)
        # independent counters: torch's FlopCounterMode and a parameter count of the real model
        assert (analytic.flops, analytic.params) == (flops_of(pruned, shape), params_of(pruned)), \
            f"recipe {i} (round_to {round_to})"
        widths = [pruned.get_submodule(u.name).weight.shape[0] for u in units]
        assert widths == kept.tolist()


def test_resnet50_at_224_costs_4_09_gmacs():
    model = build_model("resnet50", 1000, (3, 224, 224))
    cost = CostModel(model, find_units(model, (3, 224, 224)))
    assert cost.base_flops // 2 == 4_089_184_256  # the 4.09 GMACs papers quote
    assert cost.base_params == 25_557_032
    full = cost.of_channels(cost.channels)
    assert (full.flops_ratio, full.params_ratio, full.mcb) == (1.0, 1.0, 1.0)


def test_mcb_is_eq2(resnet20, resnet20_cost):
    c = resnet20_cost.of_recipe(np.full(9, 0.5))
    base = resnet20_cost.base_flops / resnet20_cost.base_params
    assert c.mcb == pytest.approx((c.flops / c.params) / base, rel=1e-15)
    assert c.macs * 2 == c.flops
    assert c.to_dict()["macs"] == c.macs


def test_fast_recipe_path_matches_the_validated_path(resnet20_cost):
    rng = np.random.default_rng(1)
    for _ in range(200):
        r = rng.uniform(0, 0.999, 9)
        assert resnet20_cost.of_recipe(r) == resnet20_cost.of_recipe(r.tolist())
        assert resnet20_cost.of_recipe(r) == resnet20_cost.of_channels(resnet20_cost.kept(r))


def test_fast_recipe_path_still_refuses_bad_ratios(resnet20_cost):
    from evoprune.errors import EvopruneError

    for bad in (1.0, -0.01, float("nan"), float("inf")):
        r = np.full(9, 0.3)
        r[2] = bad
        with pytest.raises(EvopruneError, match="outside"):
            resnet20_cost.of_recipe(r)


def test_batch_matches_single_evaluations(resnet20_cost):
    rng = np.random.default_rng(2)
    kept = np.stack([resnet20_cost.kept(rng.uniform(0, 0.9, 9)) for _ in range(50)])
    flops, params = resnet20_cost.batch(kept)
    singles = [resnet20_cost.of_channels(k) for k in kept]
    assert flops.tolist() == [c.flops for c in singles]
    assert params.tolist() == [c.params for c in singles]


def test_linear_after_a_spatial_flatten_is_exact():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 5, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.ReLU(),
                          nn.Linear(7, 4))
    units = find_units(model, (2, 8, 8))
    assert units.names == ["0", "3", "6"] and units.output_layer == "8"
    cost = CostModel(model, units)
    for recipe in ([0.5, 0.4, 0.3], [0.9, 0.0, 0.8], [0.0, 0.0, 0.0]):
        pruned = prune_channels(model, units, cost.kept(recipe))
        c = cost.of_recipe(recipe)
        assert (c.flops, c.params) == (flops_of(pruned, (2, 8, 8)), params_of(pruned))
    assert pruned(torch.zeros(1, 2, 8, 8)).shape == (1, 4)
