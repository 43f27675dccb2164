"""The paper's observations as tests: each verdict on synthetic populations built to hold or not."""

from __future__ import annotations

import numpy as np
import pytest

from evoprune.analysis import observations as obs
from evoprune.analysis.fit import Interval, OptimalMCB, fit_law, optimal_mcb, predict
from evoprune.analysis.load import StudyData, by_regime


def study(name: str, c: float, drops, mcb=None, *, c_std: float | None = None,
          c_mcb: float | None = None, sampler: str = "random", uniform: bool = False
          ) -> StudyData:
    """A study of the given drops (trial order = list order); trial 0 uniform if asked."""
    drops = np.asarray(drops, float)
    m = len(drops)
    mcb = np.ones(m) if mcb is None else np.asarray(mcb, float)
    is_uniform = np.zeros(m, bool)
    is_uniform[0] = uniform
    return StudyData(
        name=name, model="resnet20", dataset="digits",
        space={"kind": "std" if c_std else "mcb", "c_flops": c, "c_std": c_std, "c_mcb": c_mcb},
        proxy={"epochs": 1, "lr": 0.01, "batch_size": 32}, sampler=sampler, base_acc=0.98,
        units=["u0", "u1"], numbers=np.arange(m), acc_drop=drops, flops_ratio=np.full(m, c),
        params_ratio=np.full(m, c), mcb=mcb, recipe_std=np.zeros(m),
        recipes=np.zeros((m, 2)), is_uniform=is_uniform)


def std_groups(shift_extreme: float, shift_moderate: float = 0.0, n: int = 60, seed: int = 0):
    """STD-0.1/0.05/0.01 at a moderate (0.25) and an extreme (0.02) regime; STD-0.01's drops
    shifted by the given amounts."""
    rng = np.random.default_rng(seed)
    out = []
    for c, shift in ((0.25, shift_moderate), (0.02, shift_extreme)):
        for s in (0.1, 0.05, 0.01):
            d = rng.normal(10.0, 1.0, n) + (shift if s == 0.01 else 0.0)
            out.append(study(f"STD-{s}-{c}", c, d, c_std=s))
    return by_regime(out)


def test_std_spaces_holds_when_std001_is_better_only_at_the_extreme_regime():
    """Same distributions at 0.25, STD-0.01 3 pp lower at 0.02: holds; the reverse: does not."""
    holds = obs.std_spaces(std_groups(-3.0), moderate=[0.25])
    assert holds.verdict == obs.HOLDS
    assert holds.numbers["decided_at"] == 0.02
    assert all(t["p"] > 0.05 / 3 for t in holds.numbers["moderate"][0]["ks"])
    assert all(t["p"] < 1e-6 for t in holds.numbers["extreme"][0]["mann_whitney"])
    assert obs.std_spaces(std_groups(+3.0), moderate=[0.25]).verdict == obs.FAILS
    assert obs.std_spaces(std_groups(-3.0, shift_moderate=5.0), moderate=[0.25]).verdict == obs.FAILS
    assert obs.std_spaces(std_groups(-0.05, n=8), moderate=[0.25]).verdict in (obs.NOT_SHOWN,
                                                                               obs.FAILS)


def test_winners_concentrate_when_the_drop_grows_away_from_an_optimal_mcb():
    """drop = 20·(mCB − 1.1)²: the best 10% sit near 1.1 (holds); drops independent of mCB:
    the winners' IQR is that of random subsets (not held)."""
    rng = np.random.default_rng(1)
    groups, flat = [], []
    for c in (0.25, 0.1):
        for s in (0.1, 0.01):
            m = rng.uniform(0.6, 1.6, 100)
            groups.append(study(f"a{s}{c}", c, 20 * (m - 1.1) ** 2 + rng.normal(0, 0.05, 100), m,
                                c_std=s))
            flat.append(study(f"b{s}{c}", c, rng.normal(5, 1, 100), m, c_std=s))
    got = obs.winners_concentrate(by_regime(groups), n_perm=500)
    assert got.verdict == obs.HOLDS
    assert all(abs(r["winners_median"] - 1.1) < 0.05 for r in got.numbers["regimes"])
    assert got.numbers["combined_p"] < 1e-3
    assert obs.winners_concentrate(by_regime(flat), n_perm=500).verdict != obs.HOLDS


def _optimal(c: float, est: float, lo: float, hi: float) -> OptimalMCB:
    return OptimalMCB(("flops", c), 100, 10, Interval(est, lo, hi), (lo, hi),
                      Interval(1.0, 1.0, 2.0), 1.0)


def test_optimal_mcb_trend_needs_near_one_at_moderate_and_a_separated_rise():
    """Near 1 at 0.25 and 1.3 [1.2, 1.4] at 0.02: holds; overlapping: not shown; 0.7 at the
    moderate regime or a fall: does not hold."""
    rising = [_optimal(0.25, 1.0, 0.95, 1.05), _optimal(0.1, 1.05, 0.98, 1.1),
              _optimal(0.02, 1.3, 1.2, 1.4)]
    assert obs.optimal_mcb_trend(rising, [0.25]).verdict == obs.HOLDS
    overlap = [*rising[:2], _optimal(0.02, 1.1, 1.0, 1.2)]
    assert obs.optimal_mcb_trend(overlap, [0.25]).verdict == obs.NOT_SHOWN
    away = [_optimal(0.25, 0.7, 0.65, 0.75), *rising[1:]]
    assert obs.optimal_mcb_trend(away, [0.25]).verdict == obs.FAILS
    falling = [*rising[:2], _optimal(0.02, 0.9, 0.85, 0.95)]
    got = obs.optimal_mcb_trend(falling, [0.25])
    assert got.verdict == obs.FAILS and got.numbers["rises"] is False


def test_law_prediction_holds_inside_the_interval_and_fails_outside():
    """Laws fitted to mCB*(x) = 0.8 + 0.8x² and drop = 0.2·e^(2·mCB*) with 1% and 3% noise: the
    held-out regime's true values are inside (holds); a drop 10 pp off is outside (does not)."""
    cs = np.array([0.5, 0.25, 0.1, 0.05, 0.02])
    x = 1 - cs
    mcb = 0.8 + 0.8 * x ** 2
    drop = 0.2 * np.exp(2 * mcb)
    rng = np.random.default_rng(1)
    curve = fit_law(x, mcb * (1 + rng.normal(0, 0.01, 5)),
                    forms=("exponential", "linear", "inverse"), n_boot=300)
    law = fit_law(mcb, drop * (1 + rng.normal(0, 0.03, 5)), n_boot=300)
    pred = predict(curve, law, 0.15)
    true_mcb = 0.8 + 0.8 * 0.85 ** 2
    held = OptimalMCB(("flops", 0.15), 100, 10, Interval(true_mcb, true_mcb, true_mcb),
                      (true_mcb, true_mcb), Interval(0.2 * np.exp(2 * true_mcb), 0, 0), None)
    got = obs.law_prediction(law, curve, pred, held)
    assert got.verdict == obs.HOLDS, got.evidence
    assert got.numbers["drop_inside"] and got.numbers["mcb_inside"]
    off = held._replace(best_drop=Interval(held.best_drop.estimate + 10, 0, 0))
    assert obs.law_prediction(law, curve, pred, off).verdict == obs.FAILS
    assert obs.law_prediction(None, curve, pred, held, note="needs 4").verdict == obs.UNTESTED
    away = held._replace(center=Interval(true_mcb + 0.3, 0, 0))  # the mCB curve misses
    assert obs.law_prediction(law, curve, pred, away).verdict == obs.FAILS
    wide = obs.law_prediction(law, curve, pred, held, max_width=0.01)
    assert wide.verdict == obs.NOT_SHOWN and "too wide" in wide.evidence[-1]


def test_trials_to_reach_counts_in_trial_order():
    """The first drop ≤ threshold is trial 3 (the 4th); none reaches −1: n + 1."""
    s = study("s", 0.05, [9, 8, 7, 2, 1])
    assert obs.trials_to_reach(s, 2.0) == 4
    assert obs.trials_to_reach(s, -1.0) == 6
    assert obs.best_so_far(s).tolist() == [9, 8, 7, 2, 1]


def test_sampler_efficiency_holds_when_nsga2_gets_there_first():
    """Evolved runs reach the random runs' best 10% by trial 3–5, random runs by 20–40: holds
    (Mann-Whitney p = 1/70 for 4 against 4); swapped: does not hold."""
    rng = np.random.default_rng(2)

    def run(hit: int, sampler: str, i: int) -> StudyData:
        d = rng.uniform(10, 20, 48)
        d[hit - 1:hit + 5] = 1.0  # six of 48 low: 12.5% of the random runs, so their 10% ≈ 1
        return study(f"{sampler}{i}", 0.05, d, sampler=sampler)

    evolved = [run(h, "nsga2", i) for i, h in enumerate((3, 4, 5, 3))]
    random_ = [run(h, "random", i) for i, h in enumerate((20, 30, 40, 25))]
    got = obs.sampler_efficiency(evolved, random_)
    assert got.verdict == obs.HOLDS
    assert got.numbers["nsga2"] == [3, 4, 5, 3]
    assert got.numbers["p"] < 0.02  # 1/70 exactly without ties; scipy corrects for them
    assert obs.sampler_efficiency(random_, evolved).verdict == obs.FAILS


def test_retrained_vs_uniform_uses_a_signed_rank_test_over_regimes():
    """Five regimes, winner better in all: p = 1/32, holds; better in 3 of 5 by little: not
    shown; worse: does not hold."""
    better = [(c, 1.0, 2.0 + i) for i, c in enumerate((0.25, 0.1, 0.05, 0.035, 0.02))]
    got = obs.retrained_vs_uniform(better)
    assert got.verdict == obs.HOLDS and got.numbers["p"] == pytest.approx(1 / 32)
    mixed = [(0.25, 1.0, 1.1), (0.1, 1.0, 1.2), (0.05, 1.0, 1.3), (0.035, 2.0, 1.0),
             (0.02, 3.0, 1.0)]
    assert obs.retrained_vs_uniform(mixed).verdict == obs.NOT_SHOWN
    worse = [(c, u, w) for c, w, u in better]
    assert obs.retrained_vs_uniform(worse).verdict == obs.FAILS
    assert obs.retrained_vs_uniform([]).verdict == obs.UNTESTED


def test_optimal_mcb_from_pooled_std_spaces_feeds_the_trend():
    """optimal_mcb on a population whose drops are lowest at mCB 1.2 finds 1.2 ± 0.05."""
    rng = np.random.default_rng(3)
    m = rng.uniform(0.8, 1.6, 300)
    o = optimal_mcb(m, 10 * (m - 1.2) ** 2, regime=("flops", 0.02), fraction=0.1, n_boot=200)
    assert abs(o.center.estimate - 1.2) < 0.05


def test_within_regime_fidelity_ranks_inside_each_regime():
    """Regime 1 ranked perfectly (τ 1, best kept), regime 2 reversed (τ −1, best lost)."""
    tau, same = obs.within_regime_fidelity([([1, 2, 3], [0.1, 0.2, 0.3]),
                                            ([1, 2, 3], [0.3, 0.2, 0.1])])
    assert tau == pytest.approx(0.0) and same == 1
    got = obs.retrained_vs_uniform([(0.25, 1.0, 2.0)], fidelity=[([1, 2, 3], [0.1, 0.2, 0.3])])
    assert got.numbers["within_regime_kendall_tau"] == pytest.approx(1.0)
