"""The paper's observations (a)–(f) as tests on study populations; each returns an Observation.

Every function is pure: it takes studies or fitted results and returns a verdict with the numbers
behind it. Verdicts: "holds" (the claimed direction, significant at `alpha`), "not shown" (the
claimed direction, not significant, or a fit too weak to judge), "does not hold" (the opposite
direction, or an observed value outside the predicted interval), "not tested" (no data for it).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from evoprune.analysis.edf import population
from evoprune.analysis.fit import LawFit, OptimalMCB, Prediction, n_winners
from evoprune.analysis.load import StudyData

HOLDS, NOT_SHOWN, FAILS, UNTESTED = "holds", "not shown", "does not hold", "not tested"
Regime = tuple[str, float]


class Observation(NamedTuple):
    """One observation of the paper, its verdict here, one evidence line per test, the numbers."""

    key: str
    claim: str
    verdict: str
    evidence: list[str]
    numbers: dict[str, Any]


def _std_spaces(group: Sequence[StudyData]) -> dict[float, StudyData]:
    """The STD spaces of one regime by c_std."""
    return {float(s.space["c_std"]): s for s in group if s.space.get("c_std") is not None}


def _drops(s: StudyData) -> np.ndarray:
    return s.acc_drop[population(s)]


def std_spaces(groups: dict[Regime, list[StudyData]], moderate: Sequence[float], *,
               alpha: float = 0.05) -> Observation:
    """(a) STD spaces differ little at moderate regimes; the smallest STD is better at extreme ones.

    Moderate: two-sided KS on every pair of STD spaces, Bonferroni over the pairs of a regime.
    Extreme: one-sided Mann-Whitney U (the smallest STD's drops lower) against each other space,
    Bonferroni over them; the verdict rests on the most extreme regime.
    """
    claim = ("STD spaces differ little at moderate regimes; STD-0.01 (the smallest STD) is better "
             "at extreme ones")
    evidence: list[str] = []
    numbers: dict[str, Any] = {"moderate": [], "extreme": []}
    moderate_differs: list[bool] = []
    extreme: list[tuple[float, bool, bool]] = []  # (c, better in median, significant)
    for regime in sorted(groups, key=lambda r: -r[1]):
        spaces = _std_spaces(groups[regime])
        if len(spaces) < 2:
            continue
        c = regime[1]
        medians = {k: float(np.median(_drops(s))) for k, s in spaces.items()}
        med = ", ".join(f"STD-{k:g} {v:.2f}" for k, v in sorted(medians.items(), reverse=True))
        if c in moderate:
            pairs = list(itertools.combinations(sorted(spaces, reverse=True), 2))
            tests = []
            for a, b in pairs:
                with warnings.catch_warnings():  # ties: scipy falls back to the asymptotic p
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ks = stats.ks_2samp(_drops(spaces[a]), _drops(spaces[b]))
                tests.append({"a": a, "b": b, "D": float(ks.statistic), "p": float(ks.pvalue)})
            cut = alpha / len(pairs)
            differs = any(t["p"] < cut for t in tests)
            moderate_differs.append(differs)
            numbers["moderate"].append({"c_flops": c, "medians": medians, "ks": tests, "cut": cut})
            ks_text = "; ".join(f"STD-{t['a']:g} vs STD-{t['b']:g} D {t['D']:.2f} p {t['p']:.3f}"
                                for t in tests)
            evidence.append(f"c_flops {c:g} (moderate): median drops {med} pp; KS {ks_text} "
                            f"(Bonferroni cut {cut:.3f}): "
                            + ("a pair differs" if differs else "no pair differs"))
        else:
            low = min(spaces)
            others = [k for k in spaces if k != low]
            tests = []
            for k in sorted(others, reverse=True):
                u = stats.mannwhitneyu(_drops(spaces[low]), _drops(spaces[k]), alternative="less")
                tests.append({"other": k, "U": float(u.statistic), "p": float(u.pvalue)})
            cut = alpha / len(others)
            better = all(medians[low] < medians[k] for k in others)
            significant = all(t["p"] < cut for t in tests)
            extreme.append((c, better, significant))
            numbers["extreme"].append({"c_flops": c, "medians": medians, "smallest_std": low,
                                       "mann_whitney": tests, "cut": cut})
            mw = "; ".join(f"vs STD-{t['other']:g} p {t['p']:.3g}" for t in tests)
            evidence.append(f"c_flops {c:g} (extreme): median drops {med} pp; one-sided "
                            f"Mann-Whitney STD-{low:g} lower {mw} (Bonferroni cut {cut:.3f}): "
                            + ("better" if better and significant else
                               "better in median, not significant" if better else "not better"))
    if not moderate_differs or not extreme:
        return Observation("a", claim, UNTESTED, evidence or ["needs STD spaces at moderate and "
                                                                "extreme regimes"], numbers)
    c_ext, better, significant = min(extreme)  # the most extreme regime decides
    if any(moderate_differs) or not better:
        verdict = FAILS
    elif significant:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    numbers["decided_at"] = c_ext
    return Observation("a", claim, verdict, evidence, numbers)


def _iqr(x: np.ndarray) -> float:
    q1, q3 = np.quantile(x, [0.25, 0.75])
    return float(q3 - q1)


def winners_concentrate(groups: dict[Regime, list[StudyData]], *, fraction: float = 0.1,
                        n_perm: int = 2000, alpha: float = 0.05, seed: int = 0) -> Observation:
    """(b) The winners' mCB is concentrated: their IQR against random subsets of the same size.

    Per regime, the STD spaces' populations are pooled; the winners are the best `fraction`.
    p = P(IQR of a random subset ≤ the winners' IQR), permutation; Fisher combines the regimes.
    """
    claim = "winners (best 10%) concentrate near an optimal mCB"
    rng = np.random.default_rng(seed)
    evidence, rows, ps = [], [], []
    for regime in sorted(groups, key=lambda r: -r[1]):
        spaces = list(_std_spaces(groups[regime]).values())
        if not spaces:
            continue
        mcb = np.concatenate([s.mcb[population(s)] for s in spaces])
        drops = np.concatenate([_drops(s) for s in spaces])
        k = n_winners(len(mcb), fraction=fraction)
        if k < 3 or len(mcb) < 2 * k:
            continue
        win = mcb[np.argsort(drops, kind="stable")[:k]]
        observed = _iqr(win)
        null = np.array([_iqr(rng.choice(mcb, size=k, replace=False)) for _ in range(n_perm)])
        p = float((1 + np.sum(null <= observed)) / (1 + n_perm))
        ps.append(p)
        row = {"c_flops": regime[1], "n": len(mcb), "k": k, "winners_median": float(np.median(win)),
               "winners_iqr": observed, "population_iqr": _iqr(mcb),
               "null_iqr_median": float(np.median(null)), "p": p}
        rows.append(row)
        evidence.append(f"c_flops {regime[1]:g}: winners' mCB median {row['winners_median']:.3f}, "
                        f"IQR {observed:.3f} vs {row['null_iqr_median']:.3f} for random subsets of "
                        f"{k} of {len(mcb)} (population IQR {row['population_iqr']:.3f}); "
                        f"permutation p {p:.3g}")
    if not rows:
        return Observation("b", claim, UNTESTED, ["needs STD spaces with at least 30 trials"],
                           {"regimes": rows})
    combined = float(stats.combine_pvalues(ps, method="fisher").pvalue) if len(ps) > 1 else ps[0]
    narrower = sum(r["winners_iqr"] < r["null_iqr_median"] for r in rows)
    evidence.append(f"narrower than random subsets in {narrower} of {len(rows)} regimes; "
                    f"Fisher's combined p {combined:.3g}")
    if narrower * 2 <= len(rows):
        verdict = FAILS
    elif combined < alpha:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    return Observation("b", claim, verdict, evidence, {"regimes": rows, "combined_p": combined})


def optimal_mcb_trend(optimal: Sequence[OptimalMCB], moderate: Sequence[float], *,
                      near: float = 0.1) -> Observation:
    """(c) Optimal mCB near 1.0 (interval meets 1 ± near) at moderate regimes, rising at extreme.

    Rising is significant when the most extreme regime's interval lies above the mildest one's.
    """
    claim = "the optimal mCB is near 1.0 and rises at extreme reduction"
    flops = sorted((o for o in optimal if o.regime[0] == "flops"), key=lambda o: -o.regime[1])
    if len(flops) < 2:
        return Observation("c", claim, UNTESTED, ["needs at least two FLOPs regimes"], {})
    evidence, rows = [], []
    for o in flops:
        c = o.center
        close = c.lo <= 1 + near and c.hi >= 1 - near
        rows.append({"c_flops": o.regime[1], "mcb": c.estimate, "lo": c.lo, "hi": c.hi,
                     "uniform_mcb": o.uniform_mcb, "near_1": close})
        uni = f"; uniform recipe {o.uniform_mcb:.3f}" if o.uniform_mcb is not None else ""
        evidence.append(f"c_flops {o.regime[1]:g}: optimal mCB {c.estimate:.3f} "
                        f"[{c.lo:.3f}, {c.hi:.3f}]{uni}"
                        + (f" (meets 1.0 ± {near:g})" if close else " (away from 1.0)"))
    mild, ext = flops[0], flops[-1]
    rho = stats.spearmanr([1 - o.regime[1] for o in flops], [o.center.estimate for o in flops])
    rises = ext.center.estimate > mild.center.estimate
    separated = ext.center.lo > mild.center.hi
    falls_apart = ext.center.hi < mild.center.lo
    evidence.append(f"from c_flops {mild.regime[1]:g} to {ext.regime[1]:g}: "
                    f"{mild.center.estimate:.3f} -> {ext.center.estimate:.3f} "
                    + ("(a rise; the intervals separate)" if separated else
                       "(a fall; the intervals separate)" if falls_apart else
                       "(the intervals overlap)")
                    + f"; Spearman rho(reduction, optimal mCB) {float(rho.statistic):.2f}")
    moderate_rows = [r for r in rows if r["c_flops"] in moderate] or rows[:1]
    near_ok = all(r["near_1"] for r in moderate_rows)
    if not near_ok or not rises:
        verdict = FAILS
    elif separated:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    return Observation("c", claim, verdict, evidence,
                       {"regimes": rows, "spearman_rho": float(rho.statistic),
                        "rises": rises, "separated": separated})


def law_prediction(law: LawFit | None, curve: LawFit | None, prediction: Prediction | None,
                   held_out: OptimalMCB | None, *, min_r2: float = 0.9,
                   max_width: float = 100.0, note: str | None = None) -> Observation:
    """(d) The law fits (R² ≥ min_r2) and its prediction covers a held-out regime's optimal mCB
    and best drop; an interval of the drop wider than `max_width` pp cannot test it."""
    claim = "the drop-limit law fits and predicts a held-out regime within its interval"
    if law is None or curve is None or prediction is None or held_out is None:
        return Observation("d", claim, UNTESTED,
                           [note or "needs a law, an mCB curve and a held-out regime"], {})
    params = ", ".join(f"{n} {p.estimate:.3g} [{p.lo:.3g}, {p.hi:.3g}]"
                       for n, p in zip(law.names, law.params))
    mcb_in = prediction.mcb.lo <= held_out.center.estimate <= prediction.mcb.hi
    drop_in = prediction.drop.lo <= held_out.best_drop.estimate <= prediction.drop.hi
    evidence = [
        f"law: {law.form}, {params}, R² {law.r2:.3f} on {len(law.x)} regimes; "
        f"mCB curve: {curve.form}, R² {curve.r2:.3f}",
        f"held-out c_flops {prediction.c_flops:g}: predicted optimal mCB "
        f"{prediction.mcb.estimate:.3f} [{prediction.mcb.lo:.3f}, {prediction.mcb.hi:.3f}], "
        f"observed {held_out.center.estimate:.3f} ({'inside' if mcb_in else 'outside'})",
        f"held-out c_flops {prediction.c_flops:g}: predicted best drop "
        f"{prediction.drop.estimate:.2f} [{prediction.drop.lo:.2f}, {prediction.drop.hi:.2f}] pp, "
        f"observed {held_out.best_drop.estimate:.2f} pp ({'inside' if drop_in else 'outside'})",
    ]
    width = prediction.drop.hi - prediction.drop.lo
    if width > max_width:
        evidence.append(f"the predicted drop's interval is {width:.0f} pp wide (more than "
                        f"{max_width:g} pp): too wide to test the law")
    if not (drop_in and mcb_in):
        verdict = FAILS
    elif law.r2 >= min_r2 and width <= max_width:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    return Observation("d", claim, verdict, evidence,
                       {"law_form": law.form, "law_r2": law.r2, "curve_r2": curve.r2,
                        "predicted_mcb": prediction.mcb._asdict(),
                        "predicted_drop": prediction.drop._asdict(),
                        "observed_mcb": held_out.center.estimate,
                        "observed_drop": held_out.best_drop.estimate,
                        "mcb_inside": mcb_in, "drop_inside": drop_in})


def trials_to_reach(study: StudyData, threshold: float) -> int:
    """COMPLETE trials (in trial order) until one has a drop ≤ threshold; n + 1 if none does."""
    order = np.argsort(study.numbers, kind="stable")
    hit = np.flatnonzero(study.acc_drop[order] <= threshold)
    return int(hit[0] + 1) if len(hit) else len(order) + 1


def best_so_far(study: StudyData) -> np.ndarray:
    """The best drop after each COMPLETE trial, in trial order."""
    return np.minimum.accumulate(study.acc_drop[np.argsort(study.numbers, kind="stable")])


def sampler_efficiency(evolved: Sequence[StudyData], random: Sequence[StudyData], *,
                       quantile: float = 0.1, alpha: float = 0.05) -> Observation:
    """(e) NSGA-II reaches the random runs' best `quantile` in fewer trials (Mann-Whitney U)."""
    claim = "NSGA-II reaches the random space's best 10% in fewer trials than random sampling"
    if not evolved or not random:
        return Observation("e", claim, UNTESTED, ["needs NSGA-II and random studies"], {})
    threshold = float(np.quantile(np.concatenate([_drops(s) for s in random]), quantile))
    t_evo = [trials_to_reach(s, threshold) for s in evolved]
    t_rnd = [trials_to_reach(s, threshold) for s in random]
    n = max(len(s.numbers) for s in (*evolved, *random))
    u = stats.mannwhitneyu(t_evo, t_rnd, alternative="less")
    best_evo = [float(s.acc_drop.min()) for s in evolved]
    best_rnd = [float(s.acc_drop.min()) for s in random]
    u_best = stats.mannwhitneyu(best_evo, best_rnd, alternative="less")
    med_evo, med_rnd = float(np.median(t_evo)), float(np.median(t_rnd))
    evidence = [
        f"threshold: the random runs' {quantile:.0%} quantile, {threshold:.2f} pp; "
        f"budget {n} trials a run ({n + 1} = never reached)",
        f"trials to reach it: NSGA-II {t_evo} (median {med_evo:g}), random {t_rnd} "
        f"(median {med_rnd:g}); one-sided Mann-Whitney p {float(u.pvalue):.3g}",
        f"best drop at the full budget: NSGA-II {[round(b, 2) for b in best_evo]} (median "
        f"{np.median(best_evo):.2f} pp), random {[round(b, 2) for b in best_rnd]} (median "
        f"{np.median(best_rnd):.2f} pp); one-sided Mann-Whitney p {float(u_best.pvalue):.3g} "
        "(a second reading, not the claim's test)",
    ]
    if med_evo > med_rnd:
        verdict = FAILS
    elif med_evo < med_rnd and u.pvalue < alpha:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    return Observation("e", claim, verdict, evidence,
                       {"threshold": threshold, "nsga2": t_evo, "random": t_rnd,
                        "p": float(u.pvalue), "best_nsga2": best_evo, "best_random": best_rnd,
                        "p_best": float(u_best.pvalue)})


def within_regime_fidelity(groups: Sequence[tuple[Sequence[float], Sequence[float]]]
                           ) -> tuple[float, int]:
    """Mean Kendall τ of proxy against retrained drops within each regime (regimes with ≥ 3
    networks), and in how many regimes the best by proxy is also the best retrained."""
    taus, same = [], 0
    for proxy, retrained in groups:
        proxy, retrained = np.asarray(proxy, float), np.asarray(retrained, float)
        if len(proxy) >= 3:
            tau = stats.kendalltau(proxy, retrained).statistic
            if np.isfinite(tau):
                taus.append(float(tau))
        if len(proxy):
            same += bool(retrained[np.argmin(proxy)] <= retrained.min())
    return (float(np.mean(taus)) if taus else float("nan")), same


def retrained_vs_uniform(pairs: Sequence[tuple[float, float, float]], *, alpha: float = 0.05,
                         resolution: float | None = None,
                         fidelity: Sequence[tuple[Sequence[float], Sequence[float]]] = ()
                         ) -> Observation:
    """(f) The searched winner beats the uniform recipe after equal retraining.

    `pairs` holds (c_flops, winner's retrained drop, uniform's retrained drop), one per regime;
    one-sided Wilcoxon signed-rank over the regimes on uniform − winner. `fidelity` (per regime:
    proxy and retrained drops of every retrained network) adds how well the proxy ranked them.
    """
    claim = "the searched winner beats the uniform recipe after equal retraining"
    if not pairs:
        return Observation("f", claim, UNTESTED, ["needs retrained winners and uniform recipes"], {})
    diff = np.array([u - w for _c, w, u in pairs])
    evidence = [f"c_flops {c:g}: winner {w:.2f} pp, uniform {u:.2f} pp ({u - w:+.2f})"
                for c, w, u in sorted(pairs, key=lambda p: -p[0])]
    p = float(stats.wilcoxon(diff, alternative="greater").pvalue) if np.any(diff != 0) else 1.0
    wins = int(np.sum(diff > 0))
    evidence.append(f"the winner is better in {wins} of {len(pairs)} regimes, mean gain "
                    f"{diff.mean():+.2f} pp; one-sided Wilcoxon signed-rank p {p:.3g}"
                    + (f"; one test image is {resolution:.2f} pp" if resolution else ""))
    numbers: dict[str, Any] = {}
    if fidelity:
        tau, same = within_regime_fidelity(fidelity)
        numbers = {"within_regime_kendall_tau": tau, "proxy_best_is_retrained_best": same}
        evidence.append(f"the proxy's ranking of the retrained networks (uniform included): "
                        f"Kendall τ {tau:.2f} within a regime on average; the best by proxy is "
                        f"the best retrained in {same} of {len(fidelity)} regimes")
    if np.median(diff) <= 0:
        verdict = FAILS
    elif p < alpha:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    return Observation("f", claim, verdict, evidence,
                       {"pairs": [list(p_) for p_ in pairs], "wins": wins, "p": p,
                        "mean_gain": float(diff.mean()), **numbers})
