from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import ndtri

from evoprune.bench.suite import reject_sample
from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.models import build_model
from evoprune.network.units import find_units, kept_channels
from evoprune.spaces import Decoder, PruningSpace
from evoprune.spaces.bands import bind, primary
from evoprune.spaces.repair import ratios_for, repair
from evoprune.spaces.solvers import (
    BISECT_INNER,
    SECOND_MARGIN,
    bisect_tilt,
    continuous,
    relaxed,
    solve_offset,
    solve_pair,
    std_map,
    tilt_one,
    tilted,
    tilted_mean,
)

SHAPES = {"resnet20": (3, 32, 32), "resnet56": (3, 32, 32), "vgg16": (3, 32, 32),
          "mobilenetv2": (3, 32, 32), "resnet50": (3, 224, 224)}


@functools.cache
def cost_model(name: str, residual: bool) -> CostModel:
    model = build_model(name, 10, SHAPES[name])
    return CostModel(model, find_units(model, SHAPES[name], residual=residual))


def assert_inside(space: PruningSpace, cost: CostModel, recipes: np.ndarray) -> None:
    """Check every band independently of the decoder: exact cost of the rounded channels."""
    assert ((recipes >= 0) & (recipes <= space.r_max)).all()
    top = space.c_flops_max if space.c_flops_max is not None else space.c_flops
    for r in recipes:
        c = cost.of_channels(kept_channels(cost.channels, r, space.round_to))
        if space.c_flops is not None:
            assert space.c_flops - space.delta <= c.flops_ratio <= top + space.delta
        if space.c_params is not None:
            assert abs(c.params_ratio - space.c_params) <= space.delta
        if space.c_mcb is not None:
            assert abs(c.mcb - space.c_mcb) <= space.mcb_tol


@st.composite
def spaces(draw):
    kind = draw(st.sampled_from(["initial", "std", "mcb", "params", "flops+params", "range"]))
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
    if kind == "range":
        std = draw(st.sampled_from([None, 0.05]))
        top = draw(st.floats(c + 0.01, 1.0))
        return PruningSpace(c_flops=c, c_flops_max=top, c_std=std, **common)
    return PruningSpace(c_flops=c, c_params=draw(st.floats(0.02, 0.9)), **common)


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(SHAPES)), residual=st.booleans(), space=spaces(),
       seed=st.integers(0, 2**16))
def test_every_decoded_recipe_is_inside_every_band(name, residual, space, seed):
    cost = cost_model(name, residual)
    try:
        decoder = Decoder(space, cost)
    except EvopruneError as exc:  # refused up front, saying what is reachable
        assert "reachable" in str(exc) or "widen `delta`" in str(exc), str(exc)
        return
    genotypes = np.random.default_rng(seed).random((16, decoder.n_genes))
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
    with pytest.raises(EvopruneError, match=r"reachable c_flops is \[0\.06\d+, 1\].*`residual`"):
        Decoder(PruningSpace(c_flops=0.02, c_std=0.05), cost)


def test_unreachable_mcb_gives_the_reachable_range():
    with pytest.raises(EvopruneError, match=r"reachable mCB is about \[\d\.\d+, \d\.\d+\]"):
        Decoder(PruningSpace(c_flops=0.5, c_mcb=5.0), cost_model("resnet56", False))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "needs `c_flops` or `c_params`"),
    ({"c_flops": 0.0}, r"c_flops must be in \(0, 1\]"),
    ({"c_flops": 0.3, "c_mcb": 1.0, "c_std": 0.1}, "not several"),
    ({"c_params": 0.3, "c_mcb": 1.0}, "needs `c_flops`"),
    ({"c_flops": 0.3, "c_std": 0.6}, "c_std must be in"),
    ({"c_flops": 0.3, "r_max": 1.0}, "r_max"),
    ({"c_flops": 0.3, "delta": 0}, "delta"),
    ({"c_flops": 0.3, "round_to": 0}, "round_to"),
    ({"c_flops": float("nan")}, "c_flops"),
    ({"c_flops": 0.3, "c_flops_max": 0.3}, r"c_flops_max must be in \(c_flops = 0.3, 1\]"),
    ({"c_flops": 0.3, "c_flops_max": 1.2}, "c_flops_max must be in"),
    ({"c_params": 0.3, "c_flops_max": 0.5}, "a FLOPs range needs `c_flops`"),
    ({"c_flops": 0.1, "c_flops_max": 0.5, "c_mcb": 1.0}, "a FLOPs range takes no `c_mcb`"),
    ({"c_flops": 0.1, "c_flops_max": 0.5, "c_params": 0.2}, "a FLOPs range takes no"),
])
def test_bad_space_configurations(kwargs, message):
    with pytest.raises(EvopruneError, match=message):
        PruningSpace(**kwargs)


def test_std_space_recipe_std_spreads_as_n_normal_numbers_do():
    # STD-x: ratios u + x·z with z ~ N(0, 1) per unit; the recipe std is not pinned but spreads
    # as the std of N normal numbers does (Fig. 2, row 2 of the paper)
    cost = cost_model("resnet56", True)
    for c_flops, c_std in ((0.5, 0.1), (0.25, 0.05), (0.1, 0.01)):
        out = Decoder(PruningSpace(c_flops=c_flops, c_std=c_std), cost).sample(1000, seed=3)
        iid = (c_std * np.random.default_rng(3).standard_normal((20000, len(cost.channels)))).std(1)
        assert out.std.mean() == pytest.approx(iid.mean(), rel=0.02)
        assert out.std.std() == pytest.approx(iid.std(), rel=0.1)  # about 13% of c_std
        assert out.std.std() > 0.1 * c_std
        assert out.inside.all()


def test_space_text_and_plain_data():
    ranged = PruningSpace(c_flops=0.1, c_flops_max=0.5, c_std=0.1)
    assert (ranged.label, ranged.kind) == ("STD-0.1", "std")
    assert ranged.bands() == "(FLOPs 0.1–0.5 ±0.002, perturbation σ 0.1, r_max 0.95, round_to 1)"
    assert PruningSpace(c_flops=0.25).bands() == "(FLOPs 0.25±0.002, r_max 0.95, round_to 1)"
    data = ranged.to_dict()
    assert data["c_flops_max"] == 0.5 and "std_tol" not in data
    assert PruningSpace.from_dict({**data, "std_tol": 0.05}) == ranged  # old studies' attrs load


def test_budget_range_takes_a_target_gene():
    cost = cost_model("resnet56", True)
    for space in (PruningSpace(c_flops=0.1, c_flops_max=0.5),
                  PruningSpace(c_flops=0.1, c_flops_max=0.5, c_std=0.05)):
        decoder = Decoder(space, cost)
        n = len(cost.channels)
        assert decoder.n_genes == n + 1
        g = np.full((5, n + 1), 0.5)
        g[:, -1] = [0.0, 0.25, 0.5, 0.75, 1.0]
        out = decoder.decode(g)  # the relaxed FLOPs hit the target; rounding moves them a little
        assert out.flops_ratio == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5], abs=0.015)
        assert (np.diff(out.flops_ratio) > 0.06).all()
        assert_inside(space, cost, out.recipes)
        with pytest.raises(EvopruneError, match=rf"genotype has {n} genes but the space takes "
                                                rf"{n + 1} \({n} units and 1 FLOPs target gene\)"):
            decoder.decode(np.full((1, n), 0.5))
        drawn = decoder.sample(400, seed=0)
        assert_inside(space, cost, drawn.recipes)
        counts = np.histogram(drawn.flops_ratio, bins=4, range=(0.098, 0.502))[0]
        if space.kind == "std":  # the target is uniform in the range
            assert counts.min() > 70, counts
        u = decoder.uniform()
        assert abs(u.flops_ratio[0] - 0.3) <= 0.002 and np.ptp(u.recipes[0]) <= 0.1


def test_tilted_law_quantiles_and_means():
    g = (np.arange(100_000) + 0.5) / 100_000
    for a in (-40.0, -3.0, 0.0, 1e-9, 2.0, 500.0):
        r = tilted(g, np.full_like(g, a), 0.95)
        assert ((r >= 0) & (r <= 0.95)).all() and (np.diff(r) >= 0).all()
        assert r.mean() == pytest.approx(float(tilted_mean(np.array(a), 0.95)), abs=1e-4)
    assert tilted_mean(np.array([0.0, -3.0 / 0.95]), 0.95) == pytest.approx(
        [0.475, 0.95 * (1 / (1 - np.exp(3.0)) + 1 / 3.0)])
    assert tilted(np.array([0.25]), np.array([0.0]), 0.8)[0] == pytest.approx(0.2)
    theta = bisect_tilt(np.array([1000.0, 1000.0]), lambda t: t < np.array([-3.7, 250.0]), 28)
    assert theta == pytest.approx([-3.7, 250.0], rel=1e-6)


def test_decode_of_uniform_genotypes_keeps_units_off_r_max():
    # the additive map clip(r_max·g + t) put 27% and 41% of the units at r_max at c_flops 0.05
    # and 0.02 (resnet20, residual units); the tilt map puts a unit there only as its gene → 1
    cost = cost_model("resnet20", True)
    for space, at_most in ((PruningSpace(c_flops=0.05), 0.01), (PruningSpace(c_flops=0.02), 0.05),
                           (PruningSpace(c_flops=0.02, c_mcb=1.0), 0.05)):
        decoder = Decoder(space, cost)
        out = decoder.decode(np.random.default_rng(0).random((500, decoder.n_genes)))
        assert (out.recipes >= space.r_max - 1e-9).mean() <= at_most
        assert out.inside.all()


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
    assert b.n == len(cost.channels) and (b.target, b.use_params, b.lo, b.hi) == (0.1, True, 0.1, 0.1)
    assert np.array_equal(b.kmin, kept_channels(cost.channels, np.full(b.n, 0.9), 8))
    for w in (b.wf, b.wp):
        assert abs(w.mean() - 1) < 1e-12 and (w > 0).all()
    residual = np.array([u.kind == "residual" for u in cost.units])
    assert b.wf[residual].min() > 2 * b.wf[~residual].max()  # a stage's width costs the most
    assert b.tilt_max == pytest.approx(64 / 0.9 / min(b.wf.min(), b.wp.min()))
    assert primary(PruningSpace(c_flops=0.3, c_mcb=1.0)) == (0.3, False)
    ranged = bind(PruningSpace(c_flops=0.1, c_flops_max=0.5), cost)
    assert (ranged.target, ranged.lo, ranged.hi, ranged.n_genes) == (0.3, 0.1, 0.5, b.n + 1)


def test_violation_counts_each_overshoot_in_half_widths():
    cost = cost_model("resnet56", True)
    b = bind(PruningSpace(c_flops=0.25, c_std=0.1), cost)
    full = np.zeros((1, b.n))  # FLOPs ratio 1: the FLOPs band missed (an STD space has no std band)
    v = b.violation(kept_channels(cost.channels, full), full)
    assert v[0] == pytest.approx((1 - 0.25 - 0.002) / 0.002)
    mcb = bind(PruningSpace(c_flops=1.0, c_mcb=2.0, mcb_tol=0.5), cost)
    assert mcb.violation(cost.channels[None], full)[0] == pytest.approx((2 - 1 - 0.5) / 0.5)
    ranged = bind(PruningSpace(c_flops=0.1, c_flops_max=0.5), cost)
    f = np.array([0.05, 0.0985, 0.3, 0.5015, 0.6])
    assert ranged.overshoot(f, f) == pytest.approx([(0.05 - 0.002) / 0.002, 0, 0, 0,
                                                    (0.1 - 0.002) / 0.002])


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


def test_solve_pair_meets_flops_and_keeps_the_second_band():
    cost = cost_model("resnet56", True)
    g = np.random.default_rng(1).random((64, len(cost.channels)))
    for space in (PruningSpace(c_flops=0.25, c_mcb=1.0), PruningSpace(c_flops=0.3, c_params=0.2)):
        b = bind(space, cost)
        r = solve_pair(b, g)
        f, p = relaxed(b, r)
        second, centre, tol = ((f / p, 1.0, 0.1) if space.c_mcb is not None else (p, 0.2, 0.002))
        assert np.abs(f - space.c_flops).max() < 1e-6
        assert np.abs(second - centre).max() <= SECOND_MARGIN * tol * 1.01 + 2e-5  # bisection width
        assert ((r >= 0) & (r <= 0.95)).all()
    wide = bind(PruningSpace(c_flops=0.25, c_mcb=1.0, mcb_tol=0.5), cost)
    free, lone = solve_pair(wide, g), tilt_one(wide, g, 0.25)
    f, p = relaxed(wide, lone)
    kept = np.abs(f / p - 1.0) <= SECOND_MARGIN * 0.5
    assert kept.sum() >= 48 and not kept.all()
    assert np.abs(free - lone)[kept].max() < 1e-4  # rows already inside the band keep one tilt
    assert np.abs(free - lone)[~kept].max() > 0.01


def test_std_map_is_a_common_offset_on_x_times_normal_quantiles():
    cost = cost_model("resnet56", True)
    b = bind(PruningSpace(c_flops=0.05, c_std=0.1), cost)
    g = np.random.default_rng(2).random((64, b.n))
    r = std_map(b, g, 0.05)
    f, _ = relaxed(b, r)
    assert np.abs(f - 0.05).max() < 1e-7
    z = 0.1 * ndtri(g)
    free = (r > 0) & (r < 0.95)
    offset = np.where(free, r - z, np.nan)
    assert np.nanmax(offset, 1) - np.nanmin(offset, 1) == pytest.approx(np.zeros(64), abs=1e-12)
    clipped = np.where(z + np.nanmean(offset, 1)[:, None] <= 0, 0.0, 0.95)
    assert np.array_equal(r[~free], clipped[~free])
    mid = std_map(b, np.full((1, b.n), 0.5), 0.05)
    assert np.ptp(mid) == 0  # the neutral genotype is the uniform recipe


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
