from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoprune.bench import reject_sample
from evoprune.cost import CostModel
from evoprune.errors import EvopruneError
from evoprune.models import build_model
from evoprune.spaces import Decoder, PruningSpace
from evoprune.spaces.bands import bind, primary
from evoprune.spaces.repair import ratios_for, repair
from evoprune.spaces.solvers import (
    BISECT_INNER,
    BISECT_OUTER,
    continuous,
    perturbation,
    relaxed,
    solve_offset,
    solve_std,
    solve_two,
)
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
    accepted, draws = reject_sample(decoder, 5, seed=0, max_draws=400_000)
    assert draws >= 4096 and draws % 4096 == 0 and len(accepted.recipes) == 5
    assert accepted.inside.all()
    assert_inside(decoder.space, cost, accepted.recipes)


def test_rejection_sampler_counts_its_draws_and_keeps_exactly_the_in_band_ones():
    cost = cost_model("resnet20", True)
    space = PruningSpace(c_flops=0.5, delta=0.05)
    decoder = Decoder(space, cost)
    accepted, draws = reject_sample(decoder, 10**6, seed=3, max_draws=250, batch=100)
    assert draws == 300  # whole batches until max_draws is reached
    rng = np.random.default_rng(3)  # the same draws, judged one by one on the exact cost
    drawn = rng.uniform(0.0, space.r_max, (300, len(cost.channels)))
    flops = np.array([cost.of_channels(kept_channels(cost.channels, r)).flops_ratio for r in drawn])
    inside = np.abs(flops - 0.5) <= 0.05
    assert 0 < inside.sum() < 300
    assert np.array_equal(accepted.recipes, drawn[inside]) and accepted.inside.all()
    first, draws = reject_sample(decoder, 2, seed=3, max_draws=10**6, batch=100)
    assert draws == 100 and np.array_equal(first.recipes, drawn[inside][:2])  # stops at n


# ------------------------------------------------------------------- the decoder's parts
def test_importing_the_space_does_not_import_torch():
    code = "import sys; from evoprune.spaces import PruningSpace; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_bind_constants():
    cost = cost_model("resnet56", True)
    b = bind(PruningSpace(c_params=0.1, r_max=0.9, round_to=8), cost)
    assert b.n == len(cost.channels) and (b.target, b.use_params, b.s_max) == (0.1, True, 7.2)
    assert np.array_equal(b.kmin, kept_channels(cost.channels, np.full(b.n, 0.9), 8))
    for v in (b.d, b.z_neutral):
        assert abs(v.mean()) < 1e-12 and abs(v.std() - 1) < 1e-12
    assert primary(PruningSpace(c_flops=0.3, c_mcb=1.0)) == (0.3, False)


def test_violation_counts_each_overshoot_in_half_widths():
    cost = cost_model("resnet56", True)
    b = bind(PruningSpace(c_flops=0.25, c_std=0.1), cost)
    full = np.zeros((1, b.n))  # FLOPs ratio 1 and std 0: both bands missed
    v = b.violation(kept_channels(cost.channels, full), full)
    assert v[0] == pytest.approx((1 - 0.25 - 0.002) / 0.002 + (0.1 - 0.005) / 0.005)
    mcb = bind(PruningSpace(c_flops=1.0, c_mcb=2.0, mcb_tol=0.5), cost)
    assert mcb.violation(cost.channels[None], full)[0] == pytest.approx((2 - 1 - 0.5) / 0.5)


def test_solve_offset_hits_the_relaxed_target_within_its_bisection_width():
    cost = cost_model("resnet56", True)
    base = 0.95 * np.random.default_rng(0).random((64, len(cost.channels)))
    for space, target in ((PruningSpace(c_flops=0.25), 0.25), (PruningSpace(c_params=0.1), 0.1)):
        b = bind(space, cost)
        t = solve_offset(b, base, target, b.use_params)
        f, p = relaxed(b, np.clip(base + t[:, None], 0.0, 0.95))
        width = 0.95 - base.min(1) + base.max(1)  # the bracket of t
        # |t - root| <= width / 2^(steps+1); the relaxed ratios move at most 2 per unit of t
        assert (np.abs((p if b.use_params else f) - target)
                <= 2 * width / 2.0 ** (BISECT_INNER + 1)).all()


def test_solve_two_meets_both_relaxed_targets():
    cost = cost_model("resnet56", True)
    r0 = 0.95 * np.random.default_rng(1).random((64, len(cost.channels)))
    for space in (PruningSpace(c_flops=0.25, c_mcb=1.0), PruningSpace(c_flops=0.3, c_params=0.2)):
        b = bind(space, cost)
        r = solve_two(b, r0)
        f, p = relaxed(b, r)
        second = f / p - 1.0 if space.c_mcb is not None else p - 0.2
        assert np.abs(f - space.c_flops).max() < 1e-7
        assert np.abs(second).max() < 1e-3  # 1% of the mCB tolerance, half the params band
        assert ((r >= 0) & (r <= 0.95)).all()


def test_solve_std_spreads_to_c_std_within_the_scale_bisection():
    cost = cost_model("resnet56", True)
    b = bind(PruningSpace(c_flops=0.05, c_std=0.1), cost)
    z = perturbation(b, np.random.default_rng(2).random((64, b.n)), 1.0)
    assert np.abs(z.mean(1)).max() < 1e-12 and np.abs(z.std(1) - 1).max() < 1e-12
    r = solve_std(b, z)
    f, _ = relaxed(b, r)
    assert np.abs(f - 0.05).max() < 1e-7
    at_c_std = np.clip(0.1 * z + solve_offset(b, 0.1 * z, 0.05, False)[:, None], 0, 0.95)
    assert (at_c_std.std(1) < 0.099).sum() > 10  # clipping ate spread: σ grew past c_std there
    sigma_width = 0.1 * 8.0 + 0.95 - 0.1  # σ's bracket; std(clip(u + σz)) moves about 1 per σ
    assert np.abs(r.std(1) - 0.1).max() <= 2 * sigma_width / 2.0 ** (BISECT_OUTER + 1)


def test_repair_ends_inside_every_band_and_leaves_inside_rows_alone():
    cost = cost_model("resnet56", True)
    for space in (PruningSpace(c_flops=0.25, round_to=8), PruningSpace(c_flops=0.1, c_std=0.05),
                  PruningSpace(c_flops=0.25, c_mcb=1.0)):
        b = bind(space, cost)
        start = continuous(b, np.random.default_rng(4).random((32, b.n)), 1.0)
        before = b.violation(kept_channels(cost.channels, start, space.round_to), start)
        r, ok = repair(b, start)
        assert ok.all() and (before > 0).any()
        assert (b.violation(kept_channels(cost.channels, r, space.round_to), r) == 0).all()
        assert_inside(space, cost, r)
        assert np.array_equal(r[before == 0], start[before == 0])


def test_ratios_for_keeps_the_asked_channels():
    cost = cost_model("resnet56", True)
    rng = np.random.default_rng(5)
    for round_to in (1, 8):
        b = bind(PruningSpace(c_flops=0.25, round_to=round_to), cost)
        kept = kept_channels(cost.channels, 0.95 * rng.random((200, b.n)), round_to)
        r = ratios_for(b, kept, rng.random((200, b.n)))
        assert ((r >= 0) & (r <= 0.95)).all()
        assert np.array_equal(kept_channels(cost.channels, r, round_to), kept)
