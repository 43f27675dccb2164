"""Statistics with the regime as the unit: the hierarchical bootstrap, duplicates, the law
against the budget-only null, Kendall τ inside a regime; each checked on data with a known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evoprune.analysis.regime_stats import (
    dedupe_networks,
    error_difference,
    hierarchical_bootstrap,
    law_vs_budget_null,
    null_line_draws,
    tau_within_regimes,
)


def test_hierarchical_bootstrap_means_the_cluster_means_and_uses_t_over_them():
    """Clusters of 1, 2 and 3 seeds: the estimate is the mean of the cluster means (not of the 6
    seeds), the interval and p are the t over the 3 cluster means."""
    diffs = [np.array([1.0]), np.array([0.0, 1.0]), np.array([2.0, 2.0, 5.0])]
    h = hierarchical_bootstrap(diffs, n_boot=500, seed=1)
    means = np.array([1.0, 0.5, 3.0])
    assert h["estimate"] == pytest.approx(means.mean())
    assert (h["n_clusters"], h["n_seeds"]) == (3, 6)
    ci = stats.ttest_1samp(means, 0.0).confidence_interval(0.95)
    assert (h["lo"], h["hi"]) == pytest.approx((ci.low, ci.high))
    assert h["p"] == pytest.approx(stats.ttest_1samp(means, 0.0).pvalue)
    assert h["boot_lo"] < h["estimate"] < h["boot_hi"]
    assert h["boot_lo"] >= 0.0 and h["boot_hi"] <= 5.0  # resampled means stay in the seeds' range


def test_hierarchical_bootstrap_edge_cases():
    """No cluster: NaN and p 1; equal nonzero means over 2 clusters are decisive; one cluster
    never is."""
    empty = hierarchical_bootstrap([], n_boot=50)
    assert math.isnan(empty["estimate"]) and empty["p"] == 1.0
    same = hierarchical_bootstrap([[0.5, 0.5], [0.5]], n_boot=50)
    assert same["p_greater"] == 0.0 and same["lo"] == same["hi"] == 0.5
    one = hierarchical_bootstrap([[0.4, 0.6, 0.5]], n_boot=50)
    assert one["p"] == 1.0 and one["n_clusters"] == 1


def _clusters(rng: np.random.Generator, effect: float, c: int = 5, s: int = 3) -> list:
    """c regimes × s seeds: a regime effect (SD 0.25 pp) shared by its seeds, seed noise 0.2 pp."""
    return [effect + rng.normal(0, 0.25) + rng.normal(0, 0.2, s) for _ in range(c)]


def test_hierarchical_bootstrap_calibrates_with_5_regimes():
    """300 simulations of 5 regimes × 3 seeds: under no gain the t over regime means rejects at
    α 0.05 within the binomial band (≤ 0.05 + 3 SE ≈ 0.088); under a 0.6 pp gain in more than
    80%; the seed-level t (15 pairs as replicates) rejects far more often under the null."""
    n = 300
    null_t = null_seeds = power = 0
    for i in range(n):
        rng = np.random.default_rng([7, i])
        d = _clusters(rng, 0.0)
        null_t += hierarchical_bootstrap(d, n_boot=200, seed=i)["p"] < 0.05
        null_seeds += stats.ttest_1samp(np.concatenate(d), 0.0).pvalue < 0.05
        power += hierarchical_bootstrap(_clusters(rng, 0.6), n_boot=200, seed=i)["p"] < 0.05
    band = 0.05 + 3 * math.sqrt(0.05 * 0.95 / n)
    assert 0.01 <= null_t / n <= band
    assert null_seeds / n > 0.15  # why the seed is not the unit
    assert power / n > 0.8


def test_dedupe_keeps_the_first_occurrence_and_counts_copies():
    """Rows 0 and 2 equal, 1 and 3 and 4 equal: rows 0 and 1 kept, standing for 2 and 3 rows."""
    ch = np.array([[4, 8], [2, 8], [4, 8], [2, 8], [2, 8], [1, 1]])
    keep, counts = dedupe_networks(ch)
    assert keep.tolist() == [0, 1, 5] and counts.tolist() == [2, 3, 1]
    keep, counts = dedupe_networks(np.empty((0, 3)))
    assert len(keep) == 0


def test_duplicates_leave_the_population_but_not_the_uniform_rows(tmp_path):
    """A study whose searched trials repeat the uniform network and each other: the uniform rows
    stay (seed noise), the repeats leave the population, the count says so; a baseline trial is
    out of the population too."""
    from evoprune.analysis.edf import population
    from evoprune.analysis.load import StudyData, duplicate_mask

    ch = np.array([[4, 4], [4, 4], [2, 4], [4, 4], [2, 4], [3, 3], [1, 4]])
    uniform = np.array([True, True, False, False, False, False, False])
    dup = duplicate_mask(ch, uniform)
    assert dup.tolist() == [False, False, False, True, True, False, False]
    m = len(ch)
    s = StudyData(name="s", model="m", dataset="d", space={"c_flops": 0.1, "c_std": 0.01},
                  proxy={}, sampler="random", base_acc=0.9, units=["a", "b"],
                  numbers=np.arange(m), val_drop=np.arange(m, dtype=float),
                  flops_ratio=np.full(m, 0.1), params_ratio=np.full(m, 0.1), mcb=np.ones(m),
                  recipe_std=np.zeros(m), recipes=ch.astype(float), is_uniform=uniform,
                  is_baseline=np.array([False] * 6 + [True]), is_duplicate=dup, channels=ch)
    assert population(s).tolist() == [2, 5]
    d = s.duplicates()
    assert (d["trials"], d["distinct"], d["uniform_copies"], d["dropped"]) == (7, 4, 3, 2)


def test_law_vs_budget_null_when_the_limit_is_a_power_of_the_budget():
    """Limits exactly 2·c^−0.8 and an optimal mCB that carries no extra information: the null's
    log–log line predicts every left-out regime exactly; interpolation is exact where it
    interpolates only up to its curvature."""
    c = np.array([0.25, 0.1, 0.05, 0.035, 0.02])
    y = 2 * c ** -0.8
    m = 1 + 0.01 * np.log(c)
    r = law_vs_budget_null(c, y, m, held_out=0.035)
    assert all(row["err_line"] == pytest.approx(0, abs=1e-9) for row in r["regimes"])
    assert r["held_out"]["c_flops"] == 0.035 and r["held_out_better"] == "line"
    assert [row["interp_extrapolated"] for row in r["regimes"]] == [True, False, False, False, True]
    inner = r["regimes"][2]
    expect = np.interp(np.log(0.05), np.log([0.02, 0.035, 0.1, 0.25]),
                       2 * np.array([0.02, 0.035, 0.1, 0.25]) ** -0.8)
    assert inner["interp"] == pytest.approx(expect)


def test_law_vs_budget_null_when_the_law_holds_and_the_budget_line_bends():
    """Limits = exp(12.3 (mCB − 1.024)) through mCB = 1 + 0.006/c (the calibration's planted law):
    the law, refitted without each regime, predicts the held-out 0.035 better than the line."""
    c = np.array([0.25, 0.1, 0.05, 0.035, 0.02])
    m = 1 + 0.006 / c
    y = np.exp(np.log(30) / 0.276 * (m - 1.024))
    r = law_vs_budget_null(c, y, m, held_out=0.035)
    h = r["held_out"]
    assert h["err_law"] < 0.05 * h["observed"] < h["err_line"]


def test_null_line_draws_match_one_fit_per_row_and_error_difference_reads_the_sign():
    """Each replicate's log–log line equals np.polyfit's; a law closer than the null in every
    replicate gives p law better ≈ 1/(n + 1)."""
    rng = np.random.default_rng(0)
    c = np.array([0.25, 0.1, 0.05, 0.02])
    draws = 2 * c ** -0.8 * np.exp(rng.normal(0, 0.1, (20, 4)))
    got = null_line_draws(c, draws, 0.035)
    for row, g in zip(draws, got):
        b, a = np.polyfit(np.log(c), np.log(row), 1)
        assert g == pytest.approx(np.exp(a + b * np.log(0.035)))
    obs = np.full(20, 10.0)
    d = error_difference(obs, obs + 0.1, obs + 1.0)
    assert d["estimate"] == pytest.approx(-0.9) and d["p_law_better"] == pytest.approx(1 / 21)
    assert d["p_null_better"] == 1.0


def test_tau_is_read_inside_each_regime_never_pooled():
    """Two regimes each ranked backwards (τ −1) whose budgets order them: pooled τ would be
    positive; per regime it is −1 with n 4, and scipy's p."""
    groups = {("flops", 0.25): ([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1]),
              ("flops", 0.02): ([11, 12, 13, 14], [9.4, 9.3, 9.2, 9.1]),
              ("flops", 0.1): ([1, 2], [1, 2])}
    rows = tau_within_regimes(groups)
    assert [(r["n"], r["tau"]) for r in rows[:2]] == [(4, -1.0), (4, -1.0)]
    assert rows[0]["p"] == pytest.approx(stats.kendalltau([1, 2, 3, 4], [4, 3, 2, 1]).pvalue)
    assert rows[2]["tau"] is None and not rows[0]["best_by_proxy_is_best"]
    pooled = stats.kendalltau([1, 2, 3, 4, 11, 12, 13, 14],
                              [0.4, 0.3, 0.2, 0.1, 9.4, 9.3, 9.2, 9.1]).statistic
    assert pooled > 0.1  # the budget's order outweighs two perfectly reversed rankings


def test_tau_within_a_regime_calibrates():
    """300 regimes of 8 networks: with no relation scipy's τ test rejects at α 0.05 within the
    binomial band; with retrained = proxy + noise (correlation ≈ 0.96) in more than 80%."""
    n = 300
    fp = power = 0
    for i in range(n):
        rng = np.random.default_rng([11, i])
        x = rng.normal(0, 1, 8)
        rows = tau_within_regimes({"a": (x, rng.normal(0, 1, 8)),
                                   "b": (x, x + rng.normal(0, 0.3, 8))})
        fp += rows[0]["p"] < 0.05
        power += rows[1]["p"] < 0.05
    assert fp / n <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n)
    assert power / n > 0.8
