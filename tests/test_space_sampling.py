"""The random sampler of the initial, mCB and params spaces matches the paper's distribution.

Target: ratios uniform on [0, r_max]^N kept when every band holds after channel rounding.
The Gibbs sampler and the block sampler (exact rejection from a cost-tilted proposal) are
checked against exact enumeration on small synthetic cost models and against exact rejection
(two-sample KS) on resnet20 (digits, residual units: Gibbs, and blocks under three hubs) and
resnet56 (block-internal units: blocks).
"""

from __future__ import annotations

import functools
import itertools
import time

import numpy as np
import pytest
from scipy.stats import chisquare, ks_2samp, kstest

from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.models import build_model
from evoprune.network.units import find_units, kept_channels
from evoprune.spaces import Decoder, PruningSpace, sampling
from evoprune.spaces.bands import Bound
from evoprune.spaces.repair import repair
from evoprune.spaces.sampling import (
    BlockSampler,
    Sampler,
    count_below,
    levels,
    quadratic_form,
    reject,
    solve_tilt,
    split,
    unit_levels,
)
from evoprune.spaces.solvers import solve_offset

DIGITS = (1, 8, 8)


@functools.cache
def resnet20() -> CostModel:
    model = build_model("resnet20", 10, DIGITS)
    return CostModel(model, find_units(model, DIGITS, residual=True))


@functools.cache
def resnet56_internal() -> CostModel:
    model = build_model("resnet56", 10, DIGITS)
    return CostModel(model, find_units(model, DIGITS, residual=False))


class SmallCost:
    """A cost model with random non-negative quadratic forms over a few small units."""

    def __init__(self, channels: list[int], seed: int, groups: tuple[int, ...] = ()) -> None:
        rng = np.random.default_rng(seed)
        n = len(channels)
        self.channels = np.array(channels, dtype=np.int64)
        self.qf, self.qp = rng.integers(0, 5, (2, n + 1, n + 1))
        if groups:  # units of different groups share no cost term (blocks); -1: a hub
            label = np.array(groups)
            apart = np.append(label, -1)[:, None] != np.append(label, -2)[None, :]
            apart[n, :] = apart[:, n] = False
            hub = np.append(label, 0) == -1
            apart[hub, :] = apart[:, hub] = False
            self.qf[apart] = self.qp[apart] = 0
        full = np.append(self.channels, 1)
        self.base_flops, self.base_params = int(full @ self.qf @ full), int(full @ self.qp @ full)

    def batch(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([np.asarray(kept, np.int64), np.ones((len(kept), 1), np.int64)], 1)
        return np.einsum("mi,ij,mj->m", x, self.qf, x), np.einsum("mi,ij,mj->m", x, self.qp, x)


def small_bound(space: PruningSpace, seed: int, channels: tuple[int, ...] = (4, 5, 6, 4, 5),
                groups: tuple[int, ...] = ()) -> Bound:
    cost = SmallCost(list(channels), seed, groups)
    n = len(cost.channels)
    return Bound(space, cost, n, cost.channels.astype(float),  # type: ignore[arg-type]
                 kept_channels(cost.channels, np.full(n, space.r_max), space.round_to),
                 np.ones(n), np.ones(n), 1.0, 0.3, False, 0.3, 0.3,
                 np.full(n, space.round_to, dtype=np.int64))


def exact_law(b: Bound) -> tuple[np.ndarray, np.ndarray]:
    """Every kept-count vector with its probability under the target (enumerated)."""
    levels = [unit_levels(int(c), b.space.round_to, b.space.r_max) for c in b.cost.channels]
    combos = np.array(list(itertools.product(*[k for k, _, _ in levels])))
    weight = np.prod([ln[np.searchsorted(k, combos[:, u])] for u, (k, _, ln) in enumerate(levels)],
                     axis=0)
    flops, params = b.cost.batch(combos)
    weight = weight * b.inside(flops / b.cost.base_flops, params / b.cost.base_params)
    return combos[weight > 0], weight[weight > 0] / weight.sum()


@pytest.mark.parametrize(("extra", "seed", "window", "shifts", "channels"), [
    ({}, 0, 64, 15, (4, 5, 6, 4, 5)),  # every level in one step
    ({}, 4, 3, 3, (4, 5, 6, 4, 5)),  # random lattices over the levels and narrow flow windows
    ({"c_mcb": 1.0, "mcb_tol": 0.3}, 1, 4, 5, (4, 5, 6, 4, 5)),
    ({"round_to": 2}, 2, 64, 15, (4, 5, 6, 4, 5)),
    ({}, 3, 64, 15, (5, 5, 5, 5)),  # one width: each flow leaves out the unit drawn with it
    ({"delta": 0.2}, 5, 64, 15, (9,)),  # one unit
    ({"c_params": 0.3, "delta": 0.05}, 6, 4, 5, (4, 5, 6, 4, 5)),  # two bands
])
def test_gibbs_draws_the_enumerated_law(monkeypatch, extra, seed, window, shifts, channels):
    monkeypatch.setattr(sampling, "WINDOW", window)
    monkeypatch.setattr(sampling, "SHIFTS", shifts)
    b = small_bound(PruningSpace(**{"c_flops": 0.3, "delta": 0.03, **extra}), seed, channels)
    combos, prob = exact_law(b)
    assert len(combos) >= 2
    # every chain starts at the most likely kept vector (the middle of its ratio intervals)
    start = combos[np.argmax(prob)]
    lv = [unit_levels(int(c), b.space.round_to, b.space.r_max) for c in b.cost.channels]
    r0 = np.array([lo[k == v][0] + 0.5 * ln[k == v][0] for (k, lo, ln), v in zip(lv, start)])
    m = 5000
    r = Sampler(b).gibbs(np.repeat(r0[None], m, 0), seed=seed, sweeps=16)
    kept = kept_channels(b.cost.channels, r, b.space.round_to)
    index = {tuple(c): i for i, c in enumerate(combos)}
    counts = np.bincount([index[tuple(k)] for k in kept], minlength=len(combos))
    assert chisquare(counts, prob * m).pvalue > 0.01
    for u, (k, lo, ln) in enumerate(lv):  # each ratio uniform on its level's interval
        pos = np.searchsorted(k, kept[:, u])
        assert kstest((r[:, u] - lo[pos]) / ln[pos], "uniform").pvalue > 0.01 / len(lv)


def ks_pvalues(decoder: Decoder, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KS p-values of every unit's ratio, the recipe std and mCB between two recipe sets."""
    da, db = decoder.describe(a), decoder.describe(b)
    pairs = [(a[:, u], b[:, u]) for u in range(a.shape[1])]
    pairs += [(da.std, db.std), (da.mcb, db.mcb)]
    return np.array([ks_2samp(x, y).pvalue for x, y in pairs])


def additive(decoder: Decoder, g: np.ndarray) -> np.ndarray:
    """The map this sampler replaced: clip(r_max·g + t), t solved into the band, then repair."""
    b, r_max = decoder.bound, decoder.space.r_max
    t = solve_offset(b, r_max * g, b.target, False)
    return repair(b, np.clip(r_max * g + t[:, None], 0.0, r_max))[0]


@pytest.mark.parametrize("space", [PruningSpace(c_flops=0.1),
                                   PruningSpace(c_flops=0.25, c_mcb=1.0)])
def test_gibbs_matches_rejection_on_resnet20(space):
    decoder = Decoder(space, resnet20())
    n = 600
    exact, _ = reject(decoder.bound, n, np.random.default_rng(1), 10**7, 16384)
    assert len(exact) == n
    starts = decoder.decode(np.random.default_rng(2).random((n, decoder.n_genes))).recipes
    drawn = decoder.sampler.gibbs(starts, seed=3)
    assert decoder.describe(drawn).inside.all()
    p = ks_pvalues(decoder, exact, drawn)
    assert p.min() > 0.01 / len(p), p  # Bonferroni over 12 units, std and mCB
    if space.c_mcb is None:  # the test has power: the old additive map fails it
        old = additive(decoder, np.random.default_rng(2).random((n, decoder.n)))
        assert ks_pvalues(decoder, exact, old).min() < 1e-6


def test_sample_is_deterministic_in_band_and_fast_where_rejection_fails():
    decoder = Decoder(PruningSpace(c_flops=0.02), resnet20())
    assert reject(decoder.bound, 1, np.random.default_rng(0), 40_000, 8192)[0].size == 0
    a, b = decoder.sample(16, seed=5), decoder.sample(16, seed=5)
    assert np.array_equal(a.recipes, b.recipes) and a.inside.all()
    assert not np.array_equal(a.recipes, decoder.sample(16, seed=6).recipes)
    assert len(np.unique(a.recipes.round(6), axis=0)) == 16
    start = time.perf_counter()
    one = decoder.sample(1, seed=7)
    assert time.perf_counter() - start < 1.0  # about 0.05 s on one core
    assert one.inside.all() and one.recipes.shape == (1, 12)


def test_gibbs_path_takes_rejection_where_it_is_cheap():
    decoder = Decoder(PruningSpace(c_flops=0.25), resnet20())
    drawn = decoder.sampler.draw(20, 0, lambda rng, m: np.empty((0, decoder.n)), method="gibbs")
    exact, _ = reject(decoder.bound, 20, np.random.default_rng(0), 10**6, sampling.PILOT)
    assert np.array_equal(drawn, exact)  # the same uniform draws, kept in order


def test_unit_levels_are_the_ratio_intervals_of_kept_channels():
    for c, round_to in ((16, 1), (64, 1), (20, 8), (64, 8)):
        kept, lo, length = unit_levels(c, round_to, 0.95)
        assert length.sum() == pytest.approx(0.95)
        assert np.all(np.diff(kept) > 0) and kept[-1] == c
        r = np.linspace(0, 0.95, 100_001)[1:]
        counts = kept_channels(np.array([c]), r[:, None], round_to)[:, 0]
        for k, a, ln in zip(kept, lo, length, strict=True):
            inside = r[counts == k]
            if ln > 0:
                assert inside.min() == pytest.approx(a, abs=2e-5)
                assert inside.max() == pytest.approx(a + ln, abs=2e-5)
            else:
                assert inside.size == 0


def test_quadratic_form_is_the_exact_cost():
    cost = resnet20()
    b = Decoder(PruningSpace(c_flops=0.5), cost).bound
    kept = np.random.default_rng(0).integers(1, cost.channels + 1, (50, len(cost.channels)))
    x = np.concatenate([kept, np.ones((50, 1), np.int64)], 1)
    for k, s in enumerate((quadratic_form(b, True), quadratic_form(b, False))):
        assert np.array_equal(s, s.T)
        assert np.array_equal((x @ s * x).sum(1) // 2, cost.batch(kept)[k])


def test_count_below_counts_columns_under_each_bound_exactly():
    rng = np.random.default_rng(0)
    c = np.sort(rng.integers(1, 60, (7, 20)), axis=1)
    base = rng.integers(0, 10**6, (7, 9))
    slope = rng.integers(0, 10**5, (7, 9))
    for d in (0, 3, 10**3):
        lo, hi = 2 * 10**6, 4 * 10**6
        got = count_below(base, slope, d, c, (lo, hi))
        cost = base[:, :, None] + slope[:, :, None] * c[:, None, :] + d * c[:, None, :] ** 2
        assert np.array_equal(got[0], (cost < lo).sum(2))
        assert np.array_equal(got[1], (cost < hi).sum(2))


def pooled_chisquare(counts: np.ndarray, expected: np.ndarray) -> float:
    """Chi-square p-value with the cells expecting fewer than 5 draws pooled into one."""
    small = expected < 5
    counts = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    keep = expected > 0
    return float(chisquare(counts[keep], expected[keep]).pvalue)


@pytest.mark.parametrize(("extra", "seed", "groups", "theta", "hubs"), [
    ({}, 0, (0, 0, 1, 2, 2), None, 0),  # three blocks, the tilt solved
    ({}, 1, (0, 0, 0, 0, 0), None, 0),  # one block of every unit
    ({"c_mcb": 1.0, "mcb_tol": 0.3}, 2, (0, 1, 1, 2, 3), None, 0),
    ({"c_params": 0.3}, 3, (0, 0, 1, 1, 2), None, 0),  # two bands
    ({"round_to": 2}, 4, (0, 1, 1, 2, 2), None, 0),
    ({}, 5, (0, 0, 1, 2, 2), (-6.0, 3.0), 0),  # a strong tilt, params tilted with no params band
    ({}, 6, (-1, 0, 0, 1, 1), None, 1),  # unit 0 joins every unit (a residual width): a hub
    ({"c_params": 0.3}, 7, (-1, 0, 0, 1, 1), (-6.0, 3.0), 1),
    ({"c_mcb": 1.0, "mcb_tol": 0.3}, 8, (-1, -1, 0, 1, 1), None, 2),
])
def test_blocks_draw_the_enumerated_law(extra, seed, groups, theta, hubs):
    b = small_bound(PruningSpace(**{"c_flops": 0.3, "delta": 0.03, **extra}), seed, groups=groups)
    combos, prob = exact_law(b)
    assert len(combos) >= 2
    sampler = Sampler(b)
    if theta is None and not hubs:
        assert sampler.block is not None
        blk, rate = sampler.block
    else:
        parts = split(b, sampler.lv, sampler.forms, cap=500)
        assert parts is not None and len(parts.hubs) == hubs
        free = np.array([True, "c_params" in extra or "c_mcb" in extra])
        blk = BlockSampler(b, sampler.lv, parts, solve_tilt(b, parts, free)
                           if theta is None else np.array(theta))
        rate = blk.rate(4096, np.random.default_rng(0))
    assert len(blk.blocks) <= len(set(groups) - {-1})  # small blocks merged
    m = 20_000
    r = blk.draw(m, np.random.default_rng(seed), rate)
    assert r.shape == (m, b.n)
    kept = kept_channels(b.cost.channels, r, b.space.round_to)
    index = {tuple(c): i for i, c in enumerate(combos)}
    counts = np.bincount([index[tuple(k)] for k in kept], minlength=len(combos))
    assert pooled_chisquare(counts, prob * m) > 0.001
    lv = [unit_levels(int(c), b.space.round_to, b.space.r_max) for c in b.cost.channels]
    for u, (k, lo, ln) in enumerate(lv):  # each ratio uniform on its level's interval
        pos = np.searchsorted(k, kept[:, u])
        assert kstest((r[:, u] - lo[pos]) / ln[pos], "uniform").pvalue > 0.001 / len(lv)


def test_block_costs_are_the_exact_cost():
    cost = resnet56_internal()
    b = Decoder(PruningSpace(c_flops=0.5), cost).bound
    lv = levels(b)
    forms = (quadratic_form(b, True), quadratic_form(b, False))
    parts = split(b, lv, forms)
    assert parts is not None and len(parts.hubs) == 0
    assert sorted(np.concatenate([blk.units for blk in parts.blocks])) == list(range(b.n))
    residual = Decoder(PruningSpace(c_flops=0.5), resnet20()).sampler  # a stage is one block ...
    hubbed = split(residual.b, residual.lv, residual.forms)  # ... until its residual width is a hub
    assert hubbed is not None and len(hubbed.hubs) == 3
    assert sorted(residual.b.cost.channels[hubbed.hubs]) == [16, 32, 64]
    for bound, part, c in ((b, parts, cost), (residual.b, hubbed, resnet20())):
        sampler = BlockSampler(bound, levels(bound), part, np.array([-3.0, 1.0]))
        picks, total = sampler.propose(300, np.random.default_rng(0))
        idx = sampler.levels_of(picks)
        flops, params = c.batch(levels(bound).kept[np.arange(bound.n), idx])
        assert np.array_equal(total[:, 0], flops) and np.array_equal(total[:, 1], params)


@pytest.mark.parametrize(("model", "space"), [
    (resnet56_internal, PruningSpace(c_flops=0.45)),
    (resnet56_internal, PruningSpace(c_flops=0.5, c_mcb=1.0)),
    (resnet56_internal, PruningSpace(c_flops=0.5, c_params=0.5)),
    (resnet20, PruningSpace(c_flops=0.25)),  # residual units: three hubs
    (resnet20, PruningSpace(c_flops=0.25, c_mcb=1.0)),
])
def test_blocks_match_rejection(model, space):
    decoder = Decoder(space, model())
    assert decoder.sampler.block is not None
    assert len(decoder.sampler.block[0].parts.hubs) == (3 if model is resnet20 else 0)
    n = 600
    exact, _ = reject(decoder.bound, n, np.random.default_rng(1), 10**7, 65536)
    assert len(exact) == n
    drawn = decoder.sample(n, seed=3)
    assert drawn.inside.all()
    p = ks_pvalues(decoder, exact, drawn.recipes)
    assert p.min() > 0.01 / len(p), p  # Bonferroni over the units, std and mCB


def test_the_tilt_correction_is_what_makes_blocks_exact():
    """A wide band and a strong tilt: corrected draws match rejection, uncorrected ones do not."""
    decoder = Decoder(PruningSpace(c_flops=0.45, delta=0.05), resnet56_internal())
    sampler = decoder.sampler
    blk = BlockSampler(decoder.bound, sampler.lv, split(decoder.bound, sampler.lv, sampler.forms),
                       np.array([-30.0, 0.0]))
    n = 600
    exact, _ = reject(decoder.bound, n, np.random.default_rng(1), 10**6, 16384)
    drawn = blk.draw(n, np.random.default_rng(3), blk.rate(16384, np.random.default_rng(2)))
    p = ks_pvalues(decoder, exact, drawn)
    assert p.min() > 0.01 / len(p), p
    flops = decoder.describe(exact).flops_ratio  # the statistic the tilt moves most
    assert ks_2samp(flops, decoder.describe(drawn).flops_ratio).pvalue > 0.01
    picks, total = blk.propose(20_000, np.random.default_rng(4))  # in-band, tilt not undone
    ratio = total / blk.scale
    inside = np.flatnonzero(decoder.bound.overshoot(ratio[:, 0], ratio[:, 1]) == 0)[:n]
    biased = blk.ratios(blk.levels_of(picks[:, inside]), np.random.default_rng(5))
    assert len(biased) == n
    assert ks_2samp(flops, decoder.describe(biased).flops_ratio).pvalue < 1e-6


def test_sample_takes_blocks_and_keeps_gibbs_callable(monkeypatch):
    decoder = Decoder(PruningSpace(c_flops=0.25, c_params=0.3), resnet56_internal())
    starts = lambda rng, m: decoder.decode(rng.random((m, decoder.n_genes))).recipes  # noqa: E731
    sampler = decoder.sampler
    fast = sampler.draw(1000, 0, starts)
    assert np.array_equal(fast, sampler.draw(1000, 0, starts, method="blocks"))
    assert np.array_equal(decoder.sample(1000, seed=0).recipes, fast)
    assert decoder.describe(fast).inside.all() and len(np.unique(fast, axis=0)) == 1000
    old = sampler.draw(20, 0, starts, method="gibbs")
    assert decoder.describe(old).inside.all() and not np.array_equal(old, fast[:20])
    start = time.perf_counter()
    sampler.draw(1000, 1, starts)
    assert time.perf_counter() - start < 5.0  # about 0.7 s on a busy 2-core EPYC (>= 200/s)
    with pytest.raises(EvopruneError, match="method must be one of"):
        sampler.draw(1, 0, starts, method="fast")
    monkeypatch.setattr(sampling, "HUB_COMBOS", 1000)  # resnet20's 3 residual widths: 28k
    residual = Decoder(PruningSpace(c_flops=0.25), resnet20()).sampler
    assert residual.block is None
    with pytest.raises(EvopruneError, match="block sampler does not apply"):
        residual.draw(1, 0, starts, method="blocks")


def test_bench_sample_prints_both_rates_and_their_ratio(capsys):
    import json

    from evoprune.cli.commands import main

    assert main(["bench", "sample", "--cases", "resnet56-flops-params", "--n", "300",
                 "--n-old", "10", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["method"] == "blocks" and r["inside"] and r["units"] == 27 and r["n"] == 300
    assert r["ratio"] == pytest.approx(r["new_per_s"] / r["old_per_s"]) and r["ratio"] > 2
    assert r["ks_min_p"] > 0.01 / r["ks_tests"] and r["ks_tests"] == 30
    assert r["machine"] and 0 < r["kept_per_proposal"] < 1
    assert main(["bench", "sample", "--cases", "vgg16-mcb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bench sample takes cases from resnet50-mcb" in err[0]
