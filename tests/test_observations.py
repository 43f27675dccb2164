"""The paper's observations as tests: each verdict on synthetic populations built to hold, to
fail, or to stay undecided, and the statistics under them checked against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evoprune.analysis import observations as obs
from evoprune.analysis.fit import (
    FORMS,
    _fit_form,
    fit_law,
    optimal_mcb,
    refit_many,
    regime_limit,
    unselected_fidelity,
)
from evoprune.analysis.load import StudyData, by_regime


def study(name: str, c: float, drops, mcb=None, *, c_std: float | None = None,
          c_mcb: float | None = None, sampler: str = "random", uniform: int = 0,
          uniform_mcb: float = 1.0, seeds=None, recipes=None, kind: str = "flops") -> StudyData:
    """A study of the given drops (trial order = list order); the first `uniform` rows are the
    uniform recipe (mCB `uniform_mcb`)."""
    drops = np.asarray(drops, float)
    m = len(drops)
    mcb = np.ones(m) if mcb is None else np.asarray(mcb, float).copy()
    is_uniform = np.zeros(m, bool)
    is_uniform[:uniform] = True
    mcb[:uniform] = uniform_mcb
    return StudyData(
        name=name, model="resnet20", dataset="digits",
        space={"kind": "std" if c_std else "mcb", f"c_{kind}": c, "c_std": c_std,
               "c_mcb": c_mcb},
        proxy={"epochs": 1, "lr": 0.01, "batch_size": 32}, sampler=sampler, base_acc=0.98,
        units=["u0", "u1"], numbers=np.arange(m), val_drop=drops, flops_ratio=np.full(m, c),
        params_ratio=np.full(m, c), mcb=mcb, recipe_std=np.zeros(m),
        recipes=np.zeros((m, 2)) if recipes is None else np.asarray(recipes, float),
        is_uniform=is_uniform, seeds=None if seeds is None else np.asarray(seeds))


def std_groups(shift_extreme: float, shift_moderate: float = 0.0, n: int = 60, seed: int = 0,
               extreme=(0.1, 0.02), seeds: bool = False):
    """STD-0.1/0.05/0.01 at a moderate (0.25) and extreme regimes; STD-0.01's drops shifted."""
    rng = np.random.default_rng(seed)
    out = []
    for c, shift in ((0.25, shift_moderate), *((e, shift_extreme) for e in extreme)):
        for s in (0.1, 0.05, 0.01):
            d = rng.normal(10.0, 1.0, n) + (shift if s == 0.01 else 0.0)
            out.append(study(f"STD-{s}-{c}", c, d, c_std=s,
                             seeds=np.arange(n) if seeds else None))
    return by_regime(out)


def test_shift_statistics_match_scipy_and_holm_steps_down():
    """Mann-Whitney and signed-rank p-values equal scipy's (asymptotic, continuity corrected);
    the HL shift is the median of the pairwise differences (Walsh averages when paired)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.5, 1, 48), rng.normal(0, 1, 48)
    above, below = obs.shift_p(x, y, 0.0, paired=False)
    assert above == pytest.approx(stats.mannwhitneyu(x, y, alternative="greater",
                                                     method="asymptotic").pvalue)
    assert below == pytest.approx(stats.mannwhitneyu(x, y, alternative="less",
                                                     method="asymptotic").pvalue)
    assert obs.shift_p(x, y, 0.3, False)[0] == pytest.approx(
        stats.mannwhitneyu(x - 0.3, y, alternative="greater", method="asymptotic").pvalue)
    p_sr = stats.wilcoxon(x - y, alternative="greater", method="approx", correction=True).pvalue
    assert obs.shift_p(x, y, 0.0, paired=True)[0] == pytest.approx(p_sr)
    sh = obs.shift(x, y, False)
    assert sh.estimate == pytest.approx(np.median(np.subtract.outer(x, y)))
    assert sh.lo < sh.estimate < sh.hi and not sh.paired and sh.n == 48
    d = x - y
    walsh = [(d[i] + d[j]) / 2 for i in range(48) for j in range(i, 48)]
    assert obs.shift(x, y, True).estimate == pytest.approx(np.median(walsh))
    assert obs.holm([0.01, 0.04, 0.03, 0.2]).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert obs.decide(0.01, 0.99, 0.05) == obs.HOLDS
    assert obs.decide(0.03, 0.97, 0.05) == obs.NOT_SHOWN  # one-sided 0.03 > α/2
    assert obs.decide(0.99, 0.01, 0.05) == obs.FAILS


def test_std_spaces_holds_when_equivalent_at_moderate_and_better_at_every_extreme():
    """Same distributions at 0.25 (HL shifts within ±0.5, TOST p < 0.025 against ±1 pp), STD-0.01
    3 pp lower at 0.1 and 0.02 (Holm p < 1e-6): holds; 3 pp higher: does not hold."""
    got = obs.std_spaces(std_groups(-3.0), moderate=[0.25])
    assert got.verdict == obs.HOLDS, got.evidence
    pairs = got.numbers["moderate"]["pairs"]
    assert len(pairs) == 3
    assert all(abs(p["shift"]["estimate"]) < 0.5 and p["p_tost"] < 0.025 for p in pairs)
    tests = got.numbers["extreme"]["tests"]
    assert [t["regime"][1] for t in tests] == [0.1, 0.1, 0.02, 0.02]
    assert all(t["shift"]["estimate"] == pytest.approx(-3.0, abs=0.6) for t in tests)
    assert all(t["p_better_holm"] < 1e-6 for t in tests)
    assert any("margin ±1 pp" in e for e in got.evidence)
    worse = obs.std_spaces(std_groups(+3.0), moderate=[0.25])
    assert worse.verdict == obs.FAILS and worse.numbers["extreme_verdict"] == obs.FAILS


def test_std_spaces_needs_every_extreme_regime_and_fails_on_a_moderate_difference():
    """Better at 0.02 only (0.1 equal): not shown, not held; a 3 pp moderate difference is beyond
    the 1 pp margin significantly: does not hold, whatever the extreme regimes say."""
    rng = np.random.default_rng(5)
    studies = []
    for c, shift in ((0.25, 0.0), (0.1, 0.0), (0.02, -3.0)):
        for s in (0.1, 0.05, 0.01):
            studies.append(study(f"{s}{c}", c, rng.normal(10, 1, 60) + (shift if s == 0.01 else 0),
                                 c_std=s))
    partial = obs.std_spaces(by_regime(studies), [0.25])
    assert partial.numbers["extreme_verdict"] == obs.NOT_SHOWN
    assert partial.verdict == obs.NOT_SHOWN
    moderate = obs.std_equivalence(std_groups(-3.0, shift_moderate=3.0), [0.25])
    assert moderate.verdict == obs.FAILS
    assert min(p["p_beyond_holm"] for p in moderate.numbers["pairs"]) < 1e-6
    small = obs.std_spaces(std_groups(-0.05, n=8), moderate=[0.25])
    assert small.verdict == obs.NOT_SHOWN
    assert obs.std_spaces({}, [0.25]).verdict == obs.UNTESTED


def test_std_spaces_pair_trials_by_seed_when_the_studies_record_seeds():
    """A seed effect of SD 3 shared by trial j of every space hides a 0.8 pp shift from
    Mann-Whitney; paired by seed, the signed-rank test finds it (p < 1e-6)."""
    rng = np.random.default_rng(2)
    n = 48
    seed_effect = rng.normal(0, 3.0, n)

    def spaces(seeds):
        out = []
        for s in (0.1, 0.05, 0.01):
            d = 10 + seed_effect + rng.normal(0, 0.3, n) - (0.8 if s == 0.01 else 0.0)
            out.append(study(f"{s}", 0.05, d, c_std=s, seeds=seeds))
        return by_regime(out)

    paired = obs.std_extreme(spaces(np.arange(n)))
    assert paired.verdict == obs.HOLDS
    assert all(t["shift"]["paired"] and t["p_better"] < 1e-6 for t in paired.numbers["tests"])
    unpaired = obs.std_extreme(spaces(None))
    assert unpaired.verdict == obs.NOT_SHOWN
    assert not unpaired.numbers["tests"][0]["shift"]["paired"]
    shuffled = obs.aligned(study("a", 0.05, [1, 2, 3] * 4, seeds=np.arange(12)),
                           study("b", 0.05, np.arange(12.0), seeds=np.arange(12)[::-1]))
    assert shuffled[2] and shuffled[1].tolist() == list(range(11, -1, -1))


def test_std_spaces_report_repeated_networks_and_test_each_once():
    """STD-0.01 at c_flops 0.1 holds two uniform rows and repeats the uniform network in 4
    sampled trials and one other network once: 56 of 62 networks distinct, 5 repeats out of the
    population (n 55 in its tests, the uniform rows apart), the uniform network 6 times with its
    seed SD."""
    import dataclasses

    from evoprune.analysis.load import duplicate_mask

    groups = std_groups(-1.0, n=60, seeds=True)
    regime = ("flops", 0.1)
    spaces = []
    for sp in groups[regime]:
        if sp.space["c_std"] == 0.01:
            m = 62
            ch = np.stack([np.arange(m), np.zeros(m)], axis=1).astype(int)
            ch[[0, 1, 5, 9, 20, 30]] = [7, 7]  # the uniform network: rows 0, 1 and 4 copies
            ch[40] = ch[39]
            drops = np.concatenate([[10.0, 10.5], sp.val_drop[:60]])
            drops[[5, 9, 20, 30]] = [9.0, 11.0, 10.0, 10.5]
            uniform = np.arange(m) < 2
            sp = dataclasses.replace(
                sp, numbers=np.arange(m), val_drop=drops, flops_ratio=np.full(m, 0.1),
                params_ratio=np.full(m, 0.1), mcb=np.ones(m), recipe_std=np.zeros(m),
                recipes=np.zeros((m, 2)), is_uniform=uniform, seeds=np.arange(m) - 2,
                channels=ch, is_duplicate=duplicate_mask(ch, uniform))
        spaces.append(sp)
    groups[regime] = spaces
    got = obs.std_spaces(groups, [0.25])
    (row,) = got.numbers["duplicates"]
    assert (row["trials"], row["distinct"], row["uniform_copies"], row["dropped"]) == (62, 56, 6, 5)
    assert row["uniform_copies_sd"] == pytest.approx(np.std([10, 10.5, 9, 11, 10, 10.5], ddof=1))
    assert "c_flops 0.1 STD-0.01: 56 of 62 networks distinct (the uniform network 6 times" in (
        got.evidence[-1])
    pairs = [t for t in got.numbers["extreme"]["tests"] if t["regime"] == ["flops", 0.1]]
    assert all(t["shift"]["n"] == 55 for t in pairs)


def test_seed_sd_pools_the_uniform_rows():
    """Uniform rows 1, 2, 3 and 5, 7: pooled SD sqrt((2 + 2) / 2) ... over 3 dof."""
    a = study("a", 0.25, [1, 2, 3, 9, 9], uniform=3)
    b = study("b", 0.25, [5, 7, 9], uniform=2)
    sd, dof = obs.seed_sd([a, b])
    assert dof == 3 and sd == pytest.approx(math.sqrt((2 + 2) / 3))


def concentration_groups(signal: float, better: float = 1.0, seed: int = 1, n: int = 48):
    """Three STD spaces (mCB SD 0.1, 0.06, 0.02 around 1.0) at two regimes; drop = signal ·
    ((mCB − 1)/0.07)² + noise, STD-0.01 `better` SD better (it fills the winners)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in (0.1, 0.05):
        for s, sd in ((0.1, 0.1), (0.05, 0.06), (0.01, 0.02)):
            m = rng.normal(1.0, sd, n)
            d = signal * ((m - 1) / 0.07) ** 2 + rng.normal(0, 1, n) - (better if s == 0.01 else 0)
            out.append(study(f"{s}{c}", c, d, m, c_std=s))
    return by_regime(out)


def test_winners_concentrate_holds_with_a_planted_optimum():
    """Drops grow with (mCB − 1)²: the winners' spread is about 0.65 of random subsets' with
    their mix of spaces and 0.35 of random subsets' within a space, both permutation tests
    significant (p < 0.01)."""
    got = obs.winners_concentrate(concentration_groups(4.0), n_perm=500)
    assert got.verdict == obs.HOLDS, got.evidence
    assert got.numbers["stratified"]["ratio"] == pytest.approx(0.65, abs=0.1)
    assert got.numbers["within"]["ratio"] == pytest.approx(0.35, abs=0.1)
    assert got.numbers["stratified"]["null_lo"] > got.numbers["stratified"]["ratio"]
    assert got.numbers["stratified"]["p_narrower"] < 0.01
    assert got.numbers["within"]["p_narrower"] < 0.01
    assert len(got.numbers["regimes"]) == 2 and got.numbers["within"]["strata"] == 6


def test_winners_concentrate_sees_through_a_narrow_space_that_wins():
    """No mCB dependence, but STD-0.01 (narrow mCB) is better and fills the winners: random
    pooled subsets would call them concentrated (spread under half of theirs); random subsets
    with the winners' mix of spaces do not (ratio near 1, not held)."""
    groups = concentration_groups(0.0, better=2.0)
    got = obs.winners_concentrate(groups, n_perm=500)
    assert got.numbers["stratified"]["verdict"] != obs.HOLDS
    assert 0.7 < got.numbers["stratified"]["ratio"] < 1.4
    assert got.verdict != obs.HOLDS
    rng = np.random.default_rng(0)
    for group in groups.values():
        mcb = np.concatenate([s.mcb for s in group])
        drops = np.concatenate([s.val_drop for s in group])
        win = mcb[np.argsort(drops)[:15]]
        naive = np.median([obs.spread(rng.choice(mcb, 15, replace=False)) for _ in range(300)])
        assert obs.spread(win) < 0.5 * naive


def trend_groups(optima: dict[float, float], uniform_gap: float = 0.0, seed: int = 3,
                 n: int = 48):
    """Three STD spaces per FLOPs regime, mCB around the regime's optimum, drop = 2·((mCB −
    optimum)/0.05)² + noise; uniform recipe `uniform_gap` below the optimum."""
    rng = np.random.default_rng(seed)
    out = []
    for c, opt in optima.items():
        for s, sd in ((0.1, 0.08), (0.05, 0.05), (0.01, 0.02)):
            m = np.concatenate([[0.0], rng.normal(opt, sd, n)])
            d = 2 * ((m - opt) / 0.05) ** 2 + rng.normal(0, 1, n + 1)
            out.append(study(f"{s}{c}", c, d, m, c_std=s, uniform=1, uniform_mcb=opt - uniform_gap))
    return by_regime(out)


def test_optimal_mcb_trend_holds_close_to_uniform_and_rising():
    """Optima 1.0, 1.0, 1.1, 1.2 at 0.25 … 0.02, the uniform recipe 0.02 below: close in all four
    regimes (TOST ±0.1) and a rise of about +0.15 past 90%: holds."""
    got = obs.optimal_mcb_trend(trend_groups({0.25: 1.0, 0.1: 1.0, 0.05: 1.1, 0.02: 1.2},
                                             uniform_gap=0.02), n_boot=500)
    assert got.verdict == obs.HOLDS, got.evidence
    assert [r["c_flops"] for r in got.numbers["regimes"]] == [0.25, 0.1, 0.05, 0.02]
    assert all(abs(r["diff"] - 0.02) < 0.03 for r in got.numbers["regimes"])
    assert got.numbers["rise"] == pytest.approx(0.15, abs=0.03)
    assert got.numbers["rise_lo"] > 0.1
    assert got.numbers["close_verdict"] == got.numbers["rise_verdict"] == obs.HOLDS


def test_optimal_mcb_trend_fails_on_a_fall_or_a_far_uniform_recipe():
    """Optima falling from 1.2 to 1.0: the fall is significant, does not hold; the uniform
    recipe 0.3 below the optimum everywhere: far in every regime, does not hold; flat optima:
    the rise is not shown."""
    falling = obs.optimal_mcb_trend(trend_groups({0.25: 1.2, 0.1: 1.2, 0.05: 1.0, 0.02: 1.0}),
                                    n_boot=500)
    assert falling.numbers["rise_verdict"] == obs.FAILS and falling.verdict == obs.FAILS
    assert falling.numbers["rise_hi"] < 0
    far = obs.optimal_mcb_trend(trend_groups({0.25: 1.0, 0.1: 1.0, 0.05: 1.1, 0.02: 1.2},
                                             uniform_gap=0.3), n_boot=500)
    assert far.numbers["close_verdict"] == obs.FAILS and far.verdict == obs.FAILS
    flat = obs.optimal_mcb_trend(trend_groups(dict.fromkeys((0.25, 0.1, 0.05, 0.02), 1.0)),
                                 n_boot=500)
    assert flat.numbers["rise_verdict"] == obs.NOT_SHOWN and flat.verdict == obs.NOT_SHOWN
    assert obs.optimal_mcb_trend({}).verdict == obs.UNTESTED


def law_groups(scale: float = 1.0, seed: int = 4, n: int = 48):
    """Regimes whose optimal mCB is 1 + 0.006/c (FLOPs; params 0.97 + 0.004/c) and whose limit
    follows exp(12.3 (mCB − 1.024)); drops log-normal around it; held-out c_flops 0.035 scaled."""
    rng = np.random.default_rng(seed)

    def spaces(kind, c, k):
        opt = 1 + 0.006 / c if kind == "flops" else 0.97 + 0.004 / c
        limit = k * math.exp(12.3 * (opt - 1.024))
        out = []
        for s, sd in ((0.1, 0.07), (0.05, 0.04), (0.01, 0.015)):
            m = rng.normal(opt, sd, n)
            d = limit * np.exp(0.3 * rng.normal(0, 1, n) + 0.5 * ((m - opt) / 0.05) ** 2)
            out.append(study(f"{s}{kind}{c}", c, d, m, c_std=s, kind=kind))
        return out

    fit = [s for kind, c in (("flops", 0.25), ("flops", 0.1), ("flops", 0.05), ("flops", 0.02),
                             ("params", 0.25), ("params", 0.1)) for s in spaces(kind, c, 1.0)]
    return by_regime(fit), spaces("flops", 0.035, scale)


def test_law_prediction_holds_when_the_held_out_regime_follows_the_law():
    """The law (exponential in mCB, fitted to six regimes with a two-stage bootstrap) predicts
    the held-out limit within ±30%: observed / predicted near 1, its interval within
    [0.77, 1.3]."""
    groups, held = law_groups()
    got = obs.law_prediction(groups, held, n_boot=300)
    assert got.verdict == obs.HOLDS, got.evidence
    r = got.numbers["ratio"]
    assert r["estimate"] == pytest.approx(1.0, abs=0.1)
    assert 1 / 1.3 < r["lo"] < r["hi"] < 1.3
    assert got.numbers["law_form"] in ("exponential", "power") and got.numbers["law_r2"] > 0.95
    assert got.numbers["predicted_mcb"]["estimate"] == pytest.approx(1 + 0.006 / 0.035, abs=0.02)
    assert "two-stage bootstrap" in got.evidence[1]


def test_law_prediction_sets_the_law_against_the_budget_only_null():
    """Where the law holds, its held-out error is beside the budget-only null's (a log–log line
    of the limit against c_flops, and interpolation), with a bootstrap difference and the
    leave-one-regime-out errors of every FLOPs regime (the held-out one included)."""
    groups, held = law_groups()
    got = obs.law_prediction(groups, held, n_boot=300)
    null = got.numbers["budget_null"]
    flops = [p for p in obs.regime_limits(groups, n_boot=300) if p.regime[0] == "flops"]
    c = np.log([p.regime[1] for p in flops])
    b, a = np.polyfit(c, np.log([p.limit.estimate for p in flops]), 1)
    assert null["line"] == pytest.approx(math.exp(a + b * math.log(0.035)))
    assert null["law"] == pytest.approx(got.numbers["predicted_limit"]["estimate"])
    loo = null["leave_one_out"]
    assert [r["c_flops"] for r in loo["regimes"]] == [0.25, 0.1, 0.05, 0.035, 0.02]
    assert loo["held_out"]["err_law"] == pytest.approx(abs(null["observed"] - null["law"]),
                                                       rel=0.05)
    d = null["difference"]
    assert d["lo"] <= d["estimate"] <= d["hi"] and null["verdict"] in obs.VERDICTS
    assert any("budget-only null" in e for e in got.evidence)
    assert any("leaving out each FLOPs regime" in e for e in got.evidence)


def test_law_prediction_fails_when_the_held_out_regime_is_off_the_law():
    """Held-out drops twice the law's: the ratio's interval lies above 1.3, does not hold; too
    few regimes to fit: not tested."""
    groups, held = law_groups(scale=2.0)
    got = obs.law_prediction(groups, held, n_boot=300)
    assert got.verdict == obs.FAILS
    assert got.numbers["ratio"]["lo"] > 1.3
    few = dict(list(groups.items())[:3])
    assert obs.law_prediction(few, held, n_boot=50).verdict == obs.UNTESTED
    assert obs.law_prediction(groups, [], n_boot=50).verdict == obs.UNTESTED


def test_trials_to_reach_counts_in_trial_order_after_a_skip():
    """The first drop ≤ 2 is trial 3 (the 4th); with 2 skipped it is the 2nd counted; none
    reaches −1: n + 1."""
    s = study("s", 0.05, [9, 8, 7, 2, 1])
    assert obs.trials_to_reach(s, 2.0) == 4
    assert obs.trials_to_reach(s, 2.0, skip=2) == 2
    assert obs.trials_to_reach(s, -1.0) == 6
    assert obs.best_so_far(s).tolist() == [9, 8, 7, 2, 1]


def race(n_pairs: int, evo_hits, rnd_hits, prefix: int = 8):
    """Paired NSGA-II / random runs of 48 trials sharing their first `prefix` recipes."""
    rng = np.random.default_rng(2)
    evolved, random_ = [], []
    for i in range(n_pairs):
        shared = rng.uniform(0, 1, (prefix, 2))
        for hits, sampler, out in ((evo_hits, "nsga2", evolved), (rnd_hits, "random", random_)):
            d = rng.uniform(10, 20, 48)
            h = hits[i % len(hits)]
            d[h - 1:h + 5] = 1.0  # six of 48 low: the random runs' 10% quantile is ≈ 1
            recipes = np.vstack([shared, rng.uniform(0, 1, (48 - prefix, 2))])
            out.append(study(f"{sampler}{i}", 0.05, d, sampler=sampler, recipes=recipes))
    return evolved, random_


def test_sampler_efficiency_pairs_seeds_and_leaves_out_the_shared_prefix():
    """Eight paired seeds, shared first 8 trials found from the recipes; NSGA-II reaches the
    threshold 3–5 trials after them, random 20–40: signed-rank p 1/256 one-sided, holds;
    swapped: does not hold; four pairs: exploratory, not shown."""
    evolved, random_ = race(8, (11, 12, 13), (28, 38, 48))
    got = obs.sampler_efficiency(evolved, random_)
    assert got.numbers["prefix"] == [8] * 8
    assert got.numbers["nsga2"] == [3, 4, 5, 3, 4, 5, 3, 4]
    assert got.numbers["p"] == pytest.approx(1 / 256)
    assert got.verdict == obs.HOLDS
    assert obs.sampler_efficiency(random_, evolved).verdict == obs.FAILS
    few = obs.sampler_efficiency(evolved[:4], random_[:4])
    assert few.verdict == obs.NOT_SHOWN and few.numbers["exploratory"]
    assert "exploratory" in few.evidence[1]
    assert obs.sampler_efficiency(evolved, random_, prefix=0).numbers["nsga2"][0] == 11


def test_sampler_efficiency_says_when_the_first_draws_were_not_shared():
    """Runs with two uniform rows first (not counted) and different first draws: the count
    starts after each run's own first 8 sampled trials, the evidence says they were not the same
    draws and compares them (NSGA-II's 10 pp lower: Mann-Whitney p small)."""
    rng = np.random.default_rng(5)
    evolved, random_ = [], []
    for i in range(2):
        for sampler, first, out in (("nsga2", 10.0, evolved), ("random", 20.0, random_)):
            d = np.concatenate([[1.0, 1.0], rng.uniform(first, first + 2, 8),
                                rng.uniform(30, 40, 16)])
            d[12 + i] = 0.5
            out.append(study(f"{sampler}{i}", 0.05, d, sampler=sampler, uniform=2,
                             recipes=rng.uniform(0, 1, (26, 2))))
    got = obs.sampler_efficiency(evolved, random_, prefix=8)
    assert got.numbers["prefix"] == [8, 8] and got.numbers["shared"] == [0, 0]
    assert not got.numbers["same_start"]
    assert got.numbers["nsga2"] == [3, 4] and got.numbers["random"] == [3, 4]
    assert "not the same draws" in got.evidence[0]
    first = got.numbers["first_draws"]
    assert first["p"] < 0.001 and first["shift"]["estimate"] == pytest.approx(-10, abs=1)
    assert "Shared first trials" not in " ".join(got.evidence)


def gain_pairs(gains, seeds: int = 3, noise: float = 0.2, seed: int = 0):
    """(c_flops, seed, winner, uniform) over 5 regimes × `seeds`; uniform − winner = gain +
    noise."""
    rng = np.random.default_rng(seed)
    return [(c, s, 5.0 - g + rng.normal(0, noise), 5.0)
            for c, g in zip((0.25, 0.1, 0.05, 0.035, 0.02), gains) for s in range(seeds)]


def test_retrained_vs_uniform_takes_the_regime_as_the_unit():
    """5 regimes × 3 seeds, gain 0.5 pp: the mean of the regime means and its t interval over the
    5 regime means (not the 15 pairs), holds; a loss: does not hold; 3 regimes: exploratory, not
    shown; no pairs: not tested."""
    pairs = gain_pairs([0.5] * 5)
    got = obs.retrained_vs_uniform(pairs)
    g = np.array([u - w for _c, _s, w, u in pairs]).reshape(5, 3).mean(axis=1)
    ci = stats.ttest_1samp(g, 0.0).confidence_interval(0.95)
    assert got.verdict == obs.HOLDS
    assert got.numbers["mean_gain"] == pytest.approx(g.mean())
    assert (got.numbers["std"]["lo"], got.numbers["std"]["hi"]) == pytest.approx((ci.low, ci.high))
    assert got.numbers["p"] == pytest.approx(stats.ttest_1samp(g, 0, alternative="greater").pvalue)
    assert [r["gain"] for r in got.numbers["per_regime"]] == pytest.approx(g)
    assert got.numbers["std"]["regimes"] == 5 and got.numbers["std"]["n"] == 15
    assert "5 regime means" in got.evidence[0]
    assert obs.retrained_vs_uniform(gain_pairs([-0.5] * 5)).verdict == obs.FAILS
    few = obs.retrained_vs_uniform([p for p in gain_pairs([0.5] * 5) if p[0] > 0.04])
    assert few.verdict == obs.NOT_SHOWN and few.numbers["std"]["exploratory"]
    assert obs.retrained_vs_uniform(gain_pairs([0.05] * 5, noise=0.5)).verdict == obs.NOT_SHOWN
    assert obs.retrained_vs_uniform([]).verdict == obs.UNTESTED


def test_the_seeds_of_one_regime_are_not_replicates():
    """Gains +1.0, +0.8, −0.3, +0.9, −0.2 pp, 20 seeds each with little noise: over 100 pairs a
    pair-level t calls the mean gain (+0.44) significant; over the 5 regimes it is not shown."""
    gains = [1.0, 0.8, -0.3, 0.9, -0.2]
    pairs = gain_pairs(gains, seeds=20, noise=0.1)
    g = np.array([u - w for _c, _s, w, u in pairs])
    assert stats.ttest_1samp(g, 0.0).pvalue < 0.05  # what counting seeds as replicates says
    got = obs.retrained_vs_uniform(pairs)
    assert got.verdict == obs.NOT_SHOWN and 0.1 < got.numbers["std"]["p"] < 0.3


def test_retrained_vs_uniform_reads_the_mcb_winner_and_the_unselected_fidelity():
    """The mCB-space winner is a second reading (its own verdict) and decides alone when there
    are no STD pairs; recipes retrained without selection give τ with an interval."""
    got = obs.retrained_vs_uniform(gain_pairs([0.5] * 5), mcb_pairs=gain_pairs([-0.5] * 5),
                                   unselected=([1, 2, 3, 4, 5, 6], [1.1, 2.2, 2.9, 4.5, 4.4, 6.1]),
                                   n_boot=200)
    assert got.verdict == obs.HOLDS and got.numbers["mcb"]["verdict"] == obs.FAILS
    assert got.numbers["unselected_fidelity"]["tau"]["estimate"] == pytest.approx(
        stats.kendalltau([1, 2, 3, 4, 5, 6], [1.1, 2.2, 2.9, 4.5, 4.4, 6.1]).statistic)
    assert "without selection" in got.evidence[-1]
    alone = obs.retrained_vs_uniform([], mcb_pairs=gain_pairs([-0.5] * 5))
    assert alone.verdict == obs.FAILS


def test_within_regime_fidelity_ranks_inside_each_regime():
    """Regime 1 ranked perfectly (τ 1, best kept), regime 2 reversed (τ −1, best lost); the
    evidence quotes τ per regime with its n, never a pooled τ (pooled, the budget orders them)."""
    tau, same = obs.within_regime_fidelity([([1, 2, 3], [0.1, 0.2, 0.3]),
                                            ([1, 2, 3], [0.3, 0.2, 0.1])])
    assert tau == pytest.approx(0.0) and same == 1
    fid = {0.25: ([1, 2, 3], [0.1, 0.2, 0.3]), 0.1: ([11, 12, 13], [3.3, 3.2, 3.1])}
    got = obs.retrained_vs_uniform([(0.25, 0, 1.0, 2.0)], fidelity=fid)
    rows = got.numbers["tau_per_regime"]
    assert [(r["regime"], r["n"], r["tau"]) for r in rows] == [(0.25, 3, 1.0), (0.1, 3, -1.0)]
    assert "c_flops 0.25 τ +1.00 (n 3" in got.evidence[-1]
    assert "c_flops 0.1 τ -1.00 (n 3" in got.evidence[-1]
    pooled = stats.kendalltau([1, 2, 3, 11, 12, 13], [0.1, 0.2, 0.3, 3.3, 3.2, 3.1]).statistic
    assert pooled > 0.5 and f"{pooled:.2f}" not in got.evidence[-1]


def test_optimal_mcb_from_pooled_std_spaces_feeds_the_trend():
    """optimal_mcb on a population whose drops are lowest at mCB 1.2 finds 1.2 ± 0.05."""
    rng = np.random.default_rng(3)
    m = rng.uniform(0.8, 1.6, 300)
    o = optimal_mcb(m, 10 * (m - 1.2) ** 2, regime=("flops", 0.02), fraction=0.1, n_boot=200)
    assert abs(o.center.estimate - 1.2) < 0.05


def test_refit_many_matches_curve_fit_row_by_row():
    """The vectorised Levenberg–Marquardt refit agrees with scipy's curve_fit to 1e-4."""
    rng = np.random.default_rng(0)
    for form, truth, xs in (("exponential", (1e-5, 12.0), np.linspace(1.0, 1.3, 6)),
                            ("power", (2.0, 10.0), np.linspace(1.0, 1.3, 6)),
                            ("inverse", (1.0, 0.006), np.array([0.75, 0.9, 0.95, 0.98]))):
        f = FORMS[form][0]
        x = np.tile(xs, (20, 1))
        y = f(x, *truth) * (1 + rng.normal(0, 0.05, x.shape))
        p0 = _fit_form(form, xs, f(xs, *truth))
        got = refit_many(form, x, y, p0)
        want = np.array([_fit_form(form, x[i], y[i], p0) for i in range(20)])
        assert np.allclose(got, want, rtol=1e-4), form


def test_two_stage_law_keeps_one_sample_row_per_replicate():
    """fit_law with replicate points: samples (n_boot, 2), row b fitted to replicate b."""
    x = np.array([1.0, 1.05, 1.1, 1.2, 1.3])
    rng = np.random.default_rng(1)
    xd = x + rng.normal(0, 0.005, (50, 5))
    yd = 0.5 * np.exp(3 * xd) * (1 + rng.normal(0, 0.02, (50, 5)))
    fit = fit_law(x, 0.5 * np.exp(3 * x), forms=("exponential",), draws=(xd, yd))
    assert fit.samples.shape == (50, 2)
    assert fit.samples[7] == pytest.approx(_fit_form("exponential", xd[7], yd[7]), rel=1e-4)
    assert fit.params[1].lo < 3 < fit.params[1].hi


def test_regime_limit_is_a_low_quantile_with_bootstrap_draws():
    """The limit is the 5% quantile of the drops, not the minimum; draws of both estimates."""
    drops = np.arange(100.0)
    lim = regime_limit(np.ones(100), drops, quantile=0.05, n_boot=300)
    assert lim.limit.estimate == pytest.approx(np.quantile(drops, 0.05))
    assert lim.center_draws.shape == lim.limit_draws.shape == (300,)
    assert lim.limit.lo < lim.limit.estimate < lim.limit.hi


def test_unselected_fidelity_has_a_bootstrap_interval():
    """τ-b as scipy computes it (ties included) with a percentile interval around it."""
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(0, 1, 20), 1)
    y = np.round(x + rng.normal(0, 1, 20), 1)
    f = unselected_fidelity(x, y, n_boot=500)
    assert f.tau.estimate == pytest.approx(stats.kendalltau(x, y).statistic)
    assert f.tau.lo < f.tau.estimate < f.tau.hi and f.n == 20
