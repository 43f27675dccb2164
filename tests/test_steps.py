"""One rounding rule for every recipe form: each unit to its channel step (a grouped conv's width).

`uniform:R`, a ratios list, a {unit: ratio} map and the spaces' genotypes keep the same channels;
explicit kept channels that break a step are refused with the unit and the step named.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evoprune.cli.commands import main
from evoprune.errors import EvopruneError
from evoprune.experiments.coverage import FAMILIES, SMALLEST
from evoprune.network.cost import CostModel, flops_of, params_of
from evoprune.network.models import build_model
from evoprune.network.pruning import load_pruned, prune, prune_channels
from evoprune.network.units import (
    check_kept,
    check_recipe,
    find_units,
    kept_channels,
    round_recipe,
    steps,
)
from evoprune.searching.recipe_jobs import PruneJob, run_prune
from evoprune.spaces import Decoder, PruningSpace
from evoprune.store.recipes import parse_recipe_spec

STEPPED = ("regnet_x_400mf", "resnext50_32x4d")  # the two of issue 23, at 32x32
SHAPE = (3, 32, 32)
FIRST_REGNET_UNIT = "trunk_output.block1.block1-0.f.a.0"  # 32 channels, groups of 16


_FOUND: dict = {}


def _units_of(model, in_shape, residual=False, **kwargs):
    """find_units once per architecture: the units name layers, so instances share them."""
    key = (type(model).__name__, tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
           tuple(in_shape), residual, tuple(sorted(kwargs.items())))
    if key not in _FOUND:
        _FOUND[key] = find_units(model, in_shape, residual=residual, **kwargs)
    return _FOUND[key]


@pytest.fixture(autouse=True)
def units_found_once(monkeypatch):
    """The CLI's runs below reuse the units found for the same model (the rounding is tested)."""
    import evoprune.network.units

    monkeypatch.setattr(evoprune.network.units, "find_units", _units_of)


@pytest.fixture(scope="module", params=STEPPED)
def stepped(request):
    """A grouped torchvision model, its default units and cost model at 32x32."""
    model = build_model(f"torchvision:{request.param}", 10, SHAPE).eval()
    units = _units_of(model, SHAPE)
    return request.param, model, units, CostModel(model, units)


def test_every_ratio_form_rounds_each_unit_to_its_step(stepped):
    _, model, units, cost = stepped
    assert (units.steps > 1).sum() >= 16  # every bottleneck's grouped conv
    n = len(units)
    by_list = round_recipe(units, [0.4] * n)
    by_map = round_recipe(units, dict.fromkeys(units.names, 0.4))
    by_cost = cost.kept(np.full(n, 0.4))
    by_space = kept_channels(cost.channels, np.full(n, 0.4), cost.rounding(1))  # Decoder's path
    assert (by_list == by_map).all() and (by_list == by_cost).all() and (by_list == by_space).all()
    assert (by_list % units.steps == 0).all() and (by_list >= units.steps).all()
    exact = np.floor(units.channels * 0.6 / units.steps + 0.5).astype(int) * units.steps
    assert (by_list == np.maximum(exact, units.steps)).all()  # half up to the step, >= one step
    pruned = prune(model, [0.4] * n, units=units)
    assert flops_of(pruned, SHAPE) == cost.of_channels(by_list).flops
    assert params_of(pruned) == cost.of_channels(by_list).params


def test_the_spaces_genotypes_keep_whole_groups(stepped):
    _, _, units, cost = stepped
    decoder = Decoder(PruningSpace(c_flops=0.5), cost)
    decoded = decoder.decode(np.random.default_rng(0).uniform(size=(8, decoder.n_genes)))
    assert decoded.inside.all()
    assert (decoded.kept % units.steps == 0).all()
    for recipe, kept in zip(decoded.recipes, decoded.kept):
        assert (round_recipe(units, recipe) == kept).all()  # a decoded recipe re-prunes exactly


def test_round_to_is_taken_with_the_group_width(stepped):
    _, _, units, _ = stepped
    kept = round_recipe(units, [0.3] * len(units), round_to=8)
    both = np.lcm(units.steps, 8)
    assert (steps(units, 8) == both).all()
    assert ((kept % both == 0) | (kept == units.channels)).all()


def test_prune_uniform_04_on_the_stepped_models_from_the_cli(stepped, tmp_path, capsys):
    name, _, units, _ = stepped
    argv = ["prune", "--model", f"torchvision:{name}", "--dataset", "synthetic:3x32x32:10", "--json"]
    assert main([*argv, "--recipe", "uniform:0.4"]) == 0, capsys.readouterr().err
    r = json.loads(capsys.readouterr().out)
    kept = np.array(r["channels"])
    assert (kept == round_recipe(units, [0.4] * len(units))).all()
    assert (kept % units.steps == 0).all() and r["flops"] < r["base_flops"]
    if name == "regnet_x_400mf":  # 32·0.6 = 19.2 channels: one group of 16, not 19
        i = r["units"].index(FIRST_REGNET_UNIT)
        assert (r["original_channels"][i], r["channels"][i]) == (32, 16)
    (tmp_path / "list.json").write_text(json.dumps([0.4] * len(units)))  # a ratios file
    (tmp_path / "map.json").write_text(json.dumps({"recipe": dict.fromkeys(units.names, 0.4)}))
    for spec in ("list.json", "map.json"):  # what run_prune rounds, as it rounds uniform:0.4
        ratios = check_recipe(units, parse_recipe_spec(str(tmp_path / spec), len(units)))
        assert round_recipe(units, ratios).tolist() == r["channels"]


def test_explicit_channels_that_break_a_step_are_refused_naming_unit_and_step(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"channels": {FIRST_REGNET_UNIT: 19}}))
    argv = ["prune", "--model", "torchvision:regnet_x_400mf", "--dataset", "synthetic:3x32x32:10"]
    assert main([*argv, "--recipe", str(bad), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and FIRST_REGNET_UNIT in err and "multiple of 16" in err \
        and "not 19" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()  # nothing written
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"channels": {FIRST_REGNET_UNIT: 16}}))
    assert main([*argv, "--recipe", str(good), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    i = r["units"].index(FIRST_REGNET_UNIT)
    assert r["channels"][i] == 16 and r["recipe"][i] == 0.5
    assert sum(c != k for c, k in zip(r["original_channels"], r["channels"])) == 1  # rest whole


def test_check_kept_names_the_unit_and_its_step(stepped):
    _, model, units, _ = stepped
    kept = units.channels.copy()
    i = int(np.flatnonzero(units.steps > 1)[0])
    kept[i] -= 1
    with pytest.raises(EvopruneError, match=rf"unit {units.names[i]} .* multiple of "
                                            rf"{units.steps[i]}, not {kept[i]}"):
        prune_channels(model, units, kept)
    kept[i] = units.channels[i] - units.steps[i]
    assert (check_kept(units, kept) == kept).all()
    with pytest.raises(EvopruneError, match="whole counts"):
        check_kept(units, kept + 0.5)
    with pytest.raises(EvopruneError, match=r"keeps 0 channels"):
        check_kept(units, np.where(np.arange(len(units)) == i, 0, kept))


def _prune_and_run(name: str, tmp_path) -> dict:
    """`evoprune prune --recipe uniform:0.4 --out` on torchvision model `name`; checks as a dict."""
    size = SMALLEST.get(name, 32)
    shape = (3, size, size)
    out = tmp_path / f"{name}.pt"
    r = run_prune(PruneJob(model=f"torchvision:{name}", dataset=f"synthetic:3x{size}x{size}:10",
                           recipe="uniform:0.4", out=str(out)))
    back = load_pruned(out).eval()
    with torch.no_grad():
        y = back(torch.randn(2, *shape, generator=torch.Generator().manual_seed(0)))
    units = _units_of(build_model(f"torchvision:{name}", 10, shape), shape)
    return {"steps": units.steps, "kept": np.array(r["channels"]), "flops": r["flops"],
            "measured": flops_of(back, shape), "params": r["params"],
            "measured_params": params_of(back), "runs": bool(torch.isfinite(y).all())
            and tuple(y.shape) == (2, 10), "expected": round_recipe(units, [0.4] * len(units))}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for names in FAMILIES.values() for n in names]
                         + ["regnet_x_800mf", "regnet_y_800mf", "regnet_x_1_6gf", "regnet_y_1_6gf"])
def test_prune_uniform_04_works_on_every_model_of_the_coverage_matrix(name, tmp_path):
    c = _prune_and_run(name, tmp_path)
    assert (c["kept"] == c["expected"]).all() and (c["kept"] % c["steps"] == 0).all()
    assert c["flops"] == c["measured"] and c["params"] == c["measured_params"] and c["runs"]
