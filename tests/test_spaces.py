from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoprune.cost import CostModel
from evoprune.errors import EvopruneError
from evoprune.models import build_model
from evoprune.spaces import Decoder, PruningSpace
from evoprune.units import find_units, kept_channels

SHAPES = {"resnet20": (3, 32, 32), "resnet56": (3, 32, 32), "vgg16": (3, 32, 32),
          "mobilenetv2": (3, 32, 32), "resnet50": (3, 224, 224)}


@functools.cache
def cost_model(name: str, residual: bool) -> CostModel:
    model = build_model(name, 10, SHAPES[name])
    return CostModel(model, find_units(model, SHAPES[name], residual=residual))


def assert_inside(space: PruningSpace, cost: CostModel, recipes: np.ndarray) -> None:
    """Check every band independently of the decoder: exact cost of the rounded channels."""
    assert ((recipes >= 0) & (recipes <= space.r_max)).all()
    for r in recipes:
        c = cost.of_channels(kept_channels(cost.channels, r, space.round_to))
        if space.c_flops is not None:
            assert abs(c.flops_ratio - space.c_flops) <= space.delta
        if space.c_params is not None:
            assert abs(c.params_ratio - space.c_params) <= space.delta
        if space.c_mcb is not None:
            assert abs(c.mcb - space.c_mcb) <= space.mcb_tol
        if space.c_std is not None:
            assert abs(r.std() - space.c_std) <= space.std_tol * space.c_std


@st.composite
def spaces(draw):
    kind = draw(st.sampled_from(["initial", "std", "mcb", "params", "flops+params"]))
    c = draw(st.floats(0.02, 0.9))
    r_max = draw(st.sampled_from([0.8, 0.9, 0.95, 0.99]))
    round_to = draw(st.sampled_from([1, 1, 1, 8]))
    common = {"r_max": r_max, "round_to": round_to}
    if kind == "initial":
        return PruningSpace(c_flops=c, **common)
    if kind == "std":
        band = draw(st.sampled_from(["c_flops", "c_params"]))
        return PruningSpace(**{band: c}, c_std=draw(st.sampled_from([0.01, 0.05, 0.1])), **common)
    if kind == "mcb":
        return PruningSpace(c_flops=c, c_mcb=draw(st.floats(0.6, 1.6)), **common)
    if kind == "params":
        return PruningSpace(c_params=c, **common)
    return PruningSpace(c_flops=c, c_params=draw(st.floats(0.02, 0.9)), **common)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(SHAPES)), residual=st.booleans(), space=spaces(),
       seed=st.integers(0, 2**16))
def test_every_decoded_recipe_is_inside_every_band(name, residual, space, seed):
    cost = cost_model(name, residual)
    try:
        decoder = Decoder(space, cost)
    except EvopruneError as exc:  # refused up front, saying what is reachable
        assert "reachable" in str(exc) or "widen --delta" in str(exc), str(exc)
        return
    genotypes = np.random.default_rng(seed).random((16, len(cost.channels)))
    genotypes[0] = 0.0  # the corners of the box too
    genotypes[1] = 1.0
    out = decoder.decode(genotypes)
    assert out.inside.all()
    assert_inside(space, cost, out.recipes)
    assert_inside(space, cost, decoder.sample(4, seed).recipes)


PAPER_REGIMES = [(0.25, s) for s in (0.1, 0.05, 0.01)] + [(0.1, s) for s in (0.1, 0.05, 0.01)] + \
    [(0.05, s) for s in (0.1, 0.05, 0.01)] + [(0.02, s) for s in (0.1, 0.05, 0.01)]


@pytest.mark.parametrize("name", ["resnet56", "resnet50"])
def test_paper_regimes_reproduce(name):
    # STD-0.1/0.05/0.01 at c_flops 0.25..0.02; mCB 1.0 at 0.5 and 0.25; c_params 0.25..0.02.
    cost = cost_model(name, True)  # the extreme bands need the residual-coupled groups
    spaces_ = [PruningSpace(c_flops=f, c_std=s) for f, s in PAPER_REGIMES]
    spaces_ += [PruningSpace(c_flops=f, c_mcb=1.0, mcb_tol=0.1) for f in (0.5, 0.25)]
    spaces_ += [PruningSpace(c_params=p) for p in (0.25, 0.1, 0.05, 0.02)]
    for space in spaces_:
        out = Decoder(space, cost).sample(24, seed=1)
        assert out.inside.all(), space
        assert_inside(space, cost, out.recipes)


def test_internal_only_extreme_band_says_to_search_residual_groups():
    cost = cost_model("resnet56", False)
    floor = cost.of_channels(kept_channels(cost.channels, np.full(27, 0.95))).flops_ratio
    assert 0.04 < floor < 0.065  # resnet56 keeps ~6% of its FLOPs with every internal unit at R
    with pytest.raises(EvopruneError, match=r"reachable c_flops is \[0\.06\d+, 1\].*--residual"):
        Decoder(PruningSpace(c_flops=0.02, c_std=0.05), cost)


def test_unreachable_mcb_gives_the_reachable_range():
    with pytest.raises(EvopruneError, match=r"reachable mCB is about \[\d\.\d+, \d\.\d+\]"):
        Decoder(PruningSpace(c_flops=0.5, c_mcb=5.0), cost_model("resnet56", False))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "needs --c-flops or --c-params"),
    ({"c_flops": 0.0}, r"c_flops must be in \(0, 1\]"),
    ({"c_flops": 0.3, "c_mcb": 1.0, "c_std": 0.1}, "not several"),
    ({"c_params": 0.3, "c_mcb": 1.0}, "needs --c-flops"),
    ({"c_flops": 0.3, "c_std": 0.6}, "c_std must be in"),
    ({"c_flops": 0.3, "r_max": 1.0}, "r_max"),
    ({"c_flops": 0.3, "delta": 0}, "delta"),
    ({"c_flops": 0.3, "round_to": 0}, "round_to"),
    ({"c_flops": float("nan")}, "c_flops"),
])
def test_bad_space_configurations(kwargs, message):
    with pytest.raises(EvopruneError, match=message):
        PruningSpace(**kwargs)


def test_std_space_std_is_c_std_within_the_stated_tolerance():
    cost = cost_model("resnet56", True)
    for c_flops, c_std in ((0.5, 0.1), (0.05, 0.1), (0.02, 0.01)):
        space = PruningSpace(c_flops=c_flops, c_std=c_std)
        out = Decoder(space, cost).sample(64, seed=3)
        assert np.abs(out.std - c_std).max() <= 0.05 * c_std


def test_decode_is_deterministic_and_nearby_genotypes_give_nearby_recipes():
    cost = cost_model("resnet50", False)
    for space in (PruningSpace(c_flops=0.25), PruningSpace(c_flops=0.25, c_mcb=1.0),
                  PruningSpace(c_flops=0.25, c_std=0.05)):
        decoder = Decoder(space, cost)
        rng = np.random.default_rng(0)
        g = rng.random((50, len(cost.channels)))
        a, b = decoder.decode(g).recipes, decoder.decode(g).recipes
        assert np.array_equal(a, b)
        near = decoder.decode(np.clip(g + rng.normal(0, 1e-3, g.shape), 0, 1)).recipes
        far = decoder.decode(rng.random(g.shape)).recipes
        step = np.abs(near - a).max(1)
        assert np.median(step) < 0.02  # a channel step or two, against ~0.3 between strangers
        assert np.median(np.abs(far - a).max(1)) > 10 * np.median(step)


def test_uniform_recipe_is_the_band_baseline():
    cost = cost_model("resnet56", True)
    for space in (PruningSpace(c_flops=0.25), PruningSpace(c_flops=0.25, c_mcb=1.0),
                  PruningSpace(c_flops=0.1, c_std=0.1)):
        u = Decoder(space, cost).uniform()
        assert abs(u.flops_ratio[0] - space.c_flops) <= space.delta
        assert np.ptp(u.recipes[0]) <= 0.1  # one ratio, give or take rounding steps


def test_rejection_sampler_is_the_slow_reference():
    cost = cost_model("resnet20", True)
    decoder = Decoder(PruningSpace(c_flops=0.25), cost)
    accepted, draws = decoder.reject_sample(5, seed=0, max_draws=400_000)
    assert draws >= 4096 and len(accepted.recipes) == 5 and accepted.inside.all()
    assert_inside(decoder.space, cost, accepted.recipes)
