"""The paper's observations (a)–(f) as tests on study populations; each returns an Observation.

Every verdict is a two-sided decision at level α: "holds" when the claimed direction is
significant (its one-sided test at α/2, so the (1 − α) interval lies on the claimed side),
"does not hold" only when the opposite direction is significant the same way, "not shown"
otherwise, "not tested" where there are no data. Claims that something is small ("differ
little", "close", "predicts") are equivalence tests (TOST) with a stated margin; claims over
several regimes are Holm-corrected. Each evidence line names its test, effect size, interval
and α. scripts/calibrate_verdicts.py measures each test's rates on simulated populations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from evoprune.analysis.edf import population
from evoprune.analysis.fit import (
    LAW_FORMS,
    MCB_CURVE_FORMS,
    LawFit,
    RegimeLimit,
    fit_law,
    n_winners,
    regime_limit,
    selected_values,
    unselected_fidelity,
    winners_median_draws,
)
from evoprune.analysis.load import StudyData
from evoprune.analysis.regime_stats import (
    error_difference,
    hierarchical_bootstrap,
    law_vs_budget_null,
    null_line_draws,
    tau_within_regimes,
)
from evoprune.errors import EvopruneError

HOLDS, NOT_SHOWN, FAILS, UNTESTED = "holds", "not shown", "does not hold", "not tested"
VERDICTS = (HOLDS, NOT_SHOWN, FAILS, UNTESTED)
Regime = tuple[str, float]
Groups = dict[Regime, list[StudyData]]


class Observation(NamedTuple):
    """One observation of the paper, its verdict here, one evidence line per test, the numbers."""

    key: str
    claim: str
    verdict: str
    evidence: list[str]
    numbers: dict[str, Any]


def decide(p_claim: float, p_opposite: float, alpha: float) -> str:
    """Two-sided decision: holds if the claim's one-sided p < α/2, fails if the opposite's is."""
    if p_claim < alpha / 2:
        return HOLDS
    if p_opposite < alpha / 2:
        return FAILS
    return NOT_SHOWN


def combine(*verdicts: str) -> str:
    """A claim made of parts: fails if one part fails, holds if all hold, else not shown."""
    if FAILS in verdicts:
        return FAILS
    if all(v == UNTESTED for v in verdicts):
        return UNTESTED
    return HOLDS if all(v == HOLDS for v in verdicts) else NOT_SHOWN


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted p < the level)."""
    p = np.asarray(p, float)
    m = len(p)
    if not m:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def _std_spaces(group: Sequence[StudyData]) -> dict[float, StudyData]:
    """The STD spaces of one regime by c_std."""
    return {float(s.space["c_std"]): s for s in group if s.space.get("c_std") is not None}


def _drops(s: StudyData) -> np.ndarray:
    return s.val_drop[population(s)]


def _pooled(group: Sequence[StudyData]) -> tuple[np.ndarray, np.ndarray]:
    """mCB and drops of the STD spaces' populations of one regime, pooled."""
    spaces = list(_std_spaces(group).values())
    if not spaces:
        return np.empty(0), np.empty(0)
    return (np.concatenate([s.mcb[population(s)] for s in spaces]),
            np.concatenate([_drops(s) for s in spaces]))


def _uniform_mcb(group: Sequence[StudyData]) -> float | None:
    values = [s.uniform_mcb for s in group if s.uniform_mcb is not None]
    return float(np.median(values)) if values else None


def seed_sd(group: Sequence[StudyData]) -> tuple[float, int] | None:
    """The proxy's seed SD from the uniform recipe's rows (several seeds), pooled over studies."""
    rows = [s.val_drop[s.is_uniform] for s in group if int(np.sum(s.is_uniform)) >= 2]
    if not rows:
        return None
    dof = sum(len(r) - 1 for r in rows)
    return float(math.sqrt(sum(float(np.sum((r - r.mean()) ** 2)) for r in rows) / dof)), dof


# --- location shifts: Hodges–Lehmann with Mann-Whitney, or signed-rank when paired by seed ---


def _ties(v: np.ndarray) -> float:
    _, t = np.unique(v, return_counts=True)
    return float(np.sum(t.astype(float) ** 3 - t))


class Shift(NamedTuple):
    """The location shift of x over y (x − y): Hodges–Lehmann estimate and its interval."""

    estimate: float
    lo: float
    hi: float
    paired: bool  # Wilcoxon signed-rank on seed-matched differences, else Mann-Whitney
    n: int  # pairs, or the smaller sample


def shift_p(x: np.ndarray, y: np.ndarray, delta: float, paired: bool) -> tuple[float, float]:
    """One-sided p-values against shift = delta: (H1 shift > delta, H1 shift < delta); normal
    approximation with tie and continuity corrections."""
    if paired:
        e = np.round(x - y - delta, 9)
        e = e[e != 0]
        n = len(e)
        if n == 0:
            return 1.0, 1.0
        r = stats.rankdata(np.abs(e))
        stat = float(r[e > 0].sum())
        mu = n * (n + 1) / 4
        var = n * (n + 1) * (2 * n + 1) / 24 - _ties(np.abs(e)) / 48
    else:
        a = np.round(x - delta, 9)
        b = np.round(y, 9)
        n1, n2 = len(a), len(b)
        both = np.concatenate([a, b])
        n = n1 + n2
        stat = float(stats.rankdata(both)[:n1].sum() - n1 * (n1 + 1) / 2)
        mu = n1 * n2 / 2
        var = n1 * n2 / 12 * ((n + 1) - _ties(both) / (n * (n - 1)))
    if var <= 0:
        return 1.0, 1.0
    sd = math.sqrt(var)
    return (float(stats.norm.sf((stat - mu - 0.5) / sd)),
            float(stats.norm.cdf((stat - mu + 0.5) / sd)))


def shift(x: np.ndarray, y: np.ndarray, paired: bool, alpha: float = 0.05) -> Shift:
    """Hodges–Lehmann shift of x over y with its distribution-free (1 − α) interval (Moses for
    two samples, Walsh averages for paired differences; normal approximation for the ranks)."""
    z = stats.norm.ppf(1 - alpha / 2)
    if paired:
        d = x - y
        i, j = np.triu_indices(len(d))
        w = np.sort((d[i] + d[j]) / 2)
        n = len(d)
        k = math.floor(n * (n + 1) / 4 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24))
    else:
        w = np.sort((x[:, None] - y[None, :]).ravel())
        m, n_ = len(x), len(y)
        k = math.floor(m * n_ / 2 - z * math.sqrt(m * n_ * (m + n_ + 1) / 12))
        n = min(m, n_)
    k = min(max(k, 0), (len(w) - 1) // 2)
    return Shift(float(np.median(w)), float(w[k]), float(w[len(w) - 1 - k]), paired, n)


def aligned(a: StudyData, b: StudyData, min_pairs: int = 8) -> tuple[np.ndarray, np.ndarray, bool]:
    """The two populations' drops, matched by proxy seed where both studies record seeds
    (common random numbers: trial j of every space uses the same seed), else as they are."""
    xa, xb = _drops(a), _drops(b)
    sa, sb = a.seeds, b.seeds
    if sa is None or sb is None:
        return xa, xb, False
    sa, sb = np.asarray(sa)[population(a)], np.asarray(sb)[population(b)]
    if len(np.unique(sa)) < len(sa) or len(np.unique(sb)) < len(sb):
        return xa, xb, False
    common, ia, ib = np.intersect1d(sa, sb, return_indices=True)
    if len(common) < min_pairs:
        return xa, xb, False
    return xa[ia], xb[ib], True


def _test_name(paired: bool) -> str:
    return "Wilcoxon signed-rank, paired by seed" if paired else "Mann-Whitney"


def _fmt(sh: Shift) -> str:
    return f"HL shift {sh.estimate:+.2f} pp [{sh.lo:+.2f}, {sh.hi:+.2f}]"


# --- (a) STD spaces ---

A_CLAIM = ("STD spaces differ little at moderate regimes; STD-0.01 (the smallest STD) is better "
           "at every extreme one")


def _seed_note(group: Sequence[StudyData]) -> str:
    sd = seed_sd(group)
    return f"; the proxy's seed SD {sd[0]:.2f} pp ({sd[1]} dof, uniform rows)" if sd else ""


def std_equivalence(groups: Groups, moderate: Sequence[float], *, margin: float = 1.0,
                    alpha: float = 0.05) -> Observation:
    """(a), moderate regimes: every pair of STD spaces equivalent within ±margin pp.

    Per pair, a TOST on the Hodges–Lehmann shift (Mann-Whitney, or signed-rank when the trials
    are paired by seed), each one-sided test at α/2; holds if every pair of every moderate
    regime is equivalent (intersection-union); fails if a shift beyond ±margin is significant
    at α/2 after Holm over all pairs.
    """
    claim = f"STD spaces differ by less than {margin:g} pp at moderate regimes"
    evidence: list[str] = []
    rows: list[dict[str, Any]] = []
    for regime in sorted(groups, key=lambda r: -r[1]):
        spaces = _std_spaces(groups[regime])
        if regime[1] not in moderate or len(spaces) < 2:
            continue
        for a, b in itertools.combinations(sorted(spaces, reverse=True), 2):
            x, y, paired = aligned(spaces[a], spaces[b])
            if min(len(x), len(y)) < 3:
                continue
            sh = shift(x, y, paired, alpha)
            above_hi, below_hi = shift_p(x, y, margin, paired)
            above_lo, below_lo = shift_p(x, y, -margin, paired)
            rows.append({"regime": list(regime), "a": a, "b": b, "shift": sh._asdict(),
                         "p_tost": max(below_hi, above_lo), "p_beyond": min(above_hi, below_lo)})
    if not rows:
        return Observation("a-moderate", claim, UNTESTED, ["needs two STD spaces at a moderate "
                                                            "regime"], {"pairs": rows})
    adj = holm([r["p_beyond"] for r in rows])
    for r, p in zip(rows, adj):
        r["p_beyond_holm"] = float(p)
        sh = Shift(**r["shift"])
        evidence.append(
            f"{r['regime'][0]} {r['regime'][1]:g} (moderate): STD-{r['a']:g} − STD-{r['b']:g} "
            f"{_fmt(sh)} ({1 - alpha:.0%}, {_test_name(sh.paired)}, n {sh.n}); TOST against "
            f"±{margin:g} pp p {r['p_tost']:.3g}, beyond the margin p {r['p_beyond']:.3g} "
            f"(Holm {p:.3g})" + _seed_note(groups[tuple(r["regime"])]))
    equivalent = all(r["p_tost"] < alpha / 2 for r in rows)
    beyond = bool(np.any(adj < alpha / 2))
    verdict = FAILS if beyond else HOLDS if equivalent else NOT_SHOWN
    evidence.append(f"TOST, margin ±{margin:g} pp, each side at α/2 = {alpha / 2:g}: "
                    + ("every pair equivalent" if equivalent else
                       f"{sum(r['p_tost'] < alpha / 2 for r in rows)} of {len(rows)} pairs "
                       "equivalent")
                    + ("; a shift beyond the margin is significant (Holm)" if beyond else ""))
    return Observation("a-moderate", claim, verdict, evidence,
                       {"pairs": rows, "margin": margin, "alpha": alpha})


def std_extreme(groups: Groups, *, extreme_from: float = 0.1, alpha: float = 0.05
                ) -> Observation:
    """(a), extreme regimes (every c ≤ extreme_from): the smallest STD's drops lower than each
    other STD space's, Holm over all comparisons, each direction at α/2.

    Holds if every comparison is significant in the claimed direction; fails if any is
    significant in the opposite one (the smallest STD worse).
    """
    claim = f"STD-0.01 (the smallest STD) is better at every regime with c ≤ {extreme_from:g}"
    rows: list[dict[str, Any]] = []
    for regime in sorted(groups, key=lambda r: -r[1]):
        spaces = _std_spaces(groups[regime])
        if regime[1] > extreme_from or len(spaces) < 2:
            continue
        low = min(spaces)
        for k in sorted((k for k in spaces if k != low), reverse=True):
            x, y, paired = aligned(spaces[low], spaces[k])
            if min(len(x), len(y)) < 3:
                continue
            above, below = shift_p(x, y, 0.0, paired)
            rows.append({"regime": list(regime), "smallest": low, "other": k,
                         "shift": shift(x, y, paired, alpha)._asdict(),
                         "p_better": below, "p_worse": above})
    if not rows:
        return Observation("a-extreme", claim, UNTESTED, ["needs two STD spaces at an extreme "
                                                           "regime"], {"tests": rows})
    better, worse = holm([r["p_better"] for r in rows]), holm([r["p_worse"] for r in rows])
    evidence = []
    for r, pb, pw in zip(rows, better, worse):
        r["p_better_holm"], r["p_worse_holm"] = float(pb), float(pw)
        sh = Shift(**r["shift"])
        evidence.append(
            f"{r['regime'][0]} {r['regime'][1]:g} (extreme): STD-{r['smallest']:g} − "
            f"STD-{r['other']:g} {_fmt(sh)} ({1 - alpha:.0%}, {_test_name(sh.paired)}, n {sh.n}); "
            f"p lower {r['p_better']:.3g} (Holm {pb:.3g}), p higher {r['p_worse']:.3g} "
            f"(Holm {pw:.3g})")
    all_better = bool(np.all(better < alpha / 2))
    any_worse = bool(np.any(worse < alpha / 2))
    verdict = FAILS if any_worse else HOLDS if all_better else NOT_SHOWN
    evidence.append(f"{len(rows)} one-sided tests, Holm, each direction at α/2 = {alpha / 2:g}: "
                    f"{int(np.sum(better < alpha / 2))} significantly better"
                    + (f", {int(np.sum(worse < alpha / 2))} significantly worse" if any_worse
                       else ""))
    return Observation("a-extreme", claim, verdict, evidence,
                       {"tests": rows, "extreme_from": extreme_from, "alpha": alpha})


def std_spaces(groups: Groups, moderate: Sequence[float], *, extreme_from: float = 0.1,
               margin: float = 1.0, alpha: float = 0.05) -> Observation:
    """(a) STD spaces differ little at moderate regimes (std_equivalence) and the smallest STD
    is better at every extreme one (std_extreme); fails if either part fails."""
    mod = std_equivalence(groups, moderate, margin=margin, alpha=alpha)
    ext = std_extreme(groups, extreme_from=extreme_from, alpha=alpha)
    verdict = combine(mod.verdict, ext.verdict)
    dups = duplicate_rows(groups)
    evidence = [*mod.evidence, *ext.evidence,
                f"moderate: {mod.verdict}; extreme: {ext.verdict}"]
    if dups:
        evidence.append(duplicate_text(dups))
    return Observation("a", A_CLAIM, verdict, evidence,
                       {"moderate": mod.numbers, "extreme": ext.numbers,
                        "moderate_verdict": mod.verdict, "extreme_verdict": ext.verdict,
                        "duplicates": dups})


def duplicate_rows(groups: Groups) -> list[dict[str, Any]]:
    """Per study holding repeated networks: trials, distinct networks, the uniform network's
    copies and the repeats the population leaves out."""
    rows = []
    for regime in sorted(groups, key=lambda r: (r[0], -r[1])):
        for s in groups[regime]:
            d = s.duplicates()
            if d["dropped"]:
                u = np.flatnonzero(s.is_uniform)
                same = (np.all(s.channels == s.channels[u[0]], axis=1)
                        if len(u) and s.channels is not None else np.zeros(0, bool))
                sd = float(np.std(s.val_drop[same], ddof=1)) if same.sum() >= 2 else None
                rows.append({"regime": list(regime), "study": s.name, "space": s.label, **d,
                             "uniform_copies_sd": sd})
    return rows


def duplicate_text(rows: list[dict[str, Any]]) -> str:
    """One evidence line: where identical networks repeat, and that the tests count each once."""
    parts = [f"c_{r['regime'][0]} {r['regime'][1]:g} {r['space']}: {r['distinct']} of "
             f"{r['trials']} networks distinct (the uniform network {r['uniform_copies']} times"
             + (f", its proxy drop's SD over those seeds {r['uniform_copies_sd']:.2f} pp"
                if r["uniform_copies_sd"] is not None and r["uniform_copies"] > 2 else "") + ")"
             for r in rows]
    return ("duplicates: identical networks (the same kept channels) repeat in "
            + "; ".join(parts) + f". The EDFs, the laws and every test read each network once "
            f"(its first trial; {sum(r['dropped'] for r in rows)} repeats left out), so a "
            "repeat cannot inflate n")


# --- (b) winners concentrate ---


def spread(v: np.ndarray) -> np.ndarray:
    """Mean absolute deviation from the median along the last axis."""
    return np.mean(np.abs(v - np.median(v, axis=-1, keepdims=True)), axis=-1)


def _subsets(rng: np.random.Generator, values: np.ndarray, k: int, n_draw: int) -> np.ndarray:
    """n_draw random subsets of k of `values`, without replacement: (n_draw, k)."""
    if k == 0:
        return np.empty((n_draw, 0))
    idx = np.argsort(rng.random((n_draw, len(values))), axis=1)[:, :k]
    return values[idx]


class _Stratum(NamedTuple):
    """One stratum of the concentration test: the winners' spread against random subsets."""

    label: str
    k: int
    n: int
    observed: float
    null: np.ndarray  # spreads of random subsets with the same mix of spaces


def _stratum(rng: np.random.Generator, label: str, mcbs: list[np.ndarray],
             drops: list[np.ndarray], fraction: float, n_perm: int) -> _Stratum | None:
    """Winners of the pooled spaces `mcbs`/`drops`, and random subsets drawn space by space
    with the winners' counts."""
    sizes = [len(m) for m in mcbs]
    n = sum(sizes)
    k = n_winners(n, fraction=fraction)
    if k < 3 or n < 2 * k:
        return None
    mcb, drop = np.concatenate(mcbs), np.concatenate(drops)
    space = np.repeat(np.arange(len(sizes)), sizes)
    win = np.argsort(drop, kind="stable")[:k]
    counts = np.bincount(space[win], minlength=len(sizes))
    null = spread(np.concatenate([_subsets(rng, m, int(c), n_perm)
                                  for m, c in zip(mcbs, counts)], axis=1))
    return _Stratum(label, k, n, float(spread(mcb[win])), null)


def _concentration(strata: list[_Stratum], alpha: float) -> dict[str, Any]:
    """Mean over strata of log(winners' spread / random subsets' median spread): its ratio
    exp(mean), the permutation p each way, and the central (1 − α) range of random subsets'."""
    tiny = 1e-12
    refs = [max(float(np.median(s.null)), tiny) for s in strata]
    t = float(np.mean([np.log(max(s.observed, tiny) / r) for s, r in zip(strata, refs)]))
    t_null = np.mean([np.log(np.maximum(s.null, tiny) / r) for s, r in zip(strata, refs)], axis=0)
    b = len(t_null)
    lo, hi = np.exp(np.quantile(t_null, [alpha / 2, 1 - alpha / 2]))
    return {"ratio": float(np.exp(t)), "null_lo": float(lo), "null_hi": float(hi),
            "p_narrower": float((1 + np.sum(t_null <= t)) / (1 + b)),
            "p_wider": float((1 + np.sum(t_null >= t)) / (1 + b)), "strata": len(strata)}


def winners_concentrate(groups: Groups, *, fraction: float = 0.1, n_perm: int = 2000,
                        alpha: float = 0.05, seed: int = 0) -> Observation:
    """(b) The winners' mCB is concentrated: the winners' spread (mean absolute deviation from
    their median) against random subsets, two permutation tests, each direction at α/2.

    Stratified: per regime the STD spaces are pooled, the winners are the best `fraction`, and
    random subsets keep the winners' mix of spaces (a space whose mCB is narrow by construction
    cannot make the winners look concentrated). Within-space: the best `fraction` of each space
    against random subsets of it. Statistic: the mean over strata of log(spread / the random
    subsets' median spread). Holds if both tests find the winners narrower; fails if either
    finds them wider.
    """
    claim = "winners (best 10%) concentrate near an optimal mCB"
    rng = np.random.default_rng(seed)
    pooled, within = [], []
    for regime in sorted(groups, key=lambda r: -r[1]):
        spaces = _std_spaces(groups[regime])
        name = f"{regime[0]} {regime[1]:g}"
        mcbs = [s.mcb[population(s)] for s in spaces.values()]
        drops = [_drops(s) for s in spaces.values()]
        if not spaces:
            continue
        st = _stratum(rng, name, mcbs, drops, fraction, n_perm)
        if st is not None:
            pooled.append(st)
        for c, m, d in zip(spaces, mcbs, drops):
            st = _stratum(rng, f"{name} STD-{c:g}", [m], [d], fraction, n_perm)
            if st is not None:
                within.append(st)
    if not pooled:
        return Observation("b", claim, UNTESTED, ["needs STD spaces with at least 3 winners "
                                                  "(21 trials at 10%)"], {"regimes": []})
    rows = [{"regime": s.label, "n": s.n, "k": s.k, "winners_spread": s.observed,
             "null_spread_median": float(np.median(s.null))} for s in pooled]
    evidence = [f"{row['regime']}: winners' mCB spread {row['winners_spread']:.3f} vs "
                f"{row['null_spread_median']:.3f} for random subsets of {row['k']} of {row['n']} "
                "with the winners' mix of spaces" for row in rows]
    verdicts: list[str] = []
    numbers: dict[str, Any] = {}
    for name, strata in (("stratified by space", pooled), ("within space", within)):
        if not strata:
            verdicts.append(UNTESTED)
            evidence.append(f"{name}: no space with at least 3 winners")
            continue
        r = _concentration(strata, alpha)
        v = decide(r["p_narrower"], r["p_wider"], alpha)
        verdicts.append(v)
        numbers["stratified" if name.startswith("strat") else "within"] = {**r, "verdict": v}
        evidence.append(f"{name} ({r['strata']} strata): winners' mCB spread {r['ratio']:.2f}× "
                        f"the random subsets' (geometric mean over strata; {1 - alpha:.0%} of "
                        f"random subsets within [{r['null_lo']:.2f}, {r['null_hi']:.2f}]); "
                        f"permutation p narrower {r['p_narrower']:.3g}, wider "
                        f"{r['p_wider']:.3g} (each at α/2 = {alpha / 2:g}): {v}")
    return Observation("b", claim, combine(*verdicts), evidence, {"regimes": rows, **numbers})


# --- (c) the optimal mCB against the uniform recipe's, and its rise ---


def _boot_p(draws: np.ndarray, value: float) -> tuple[float, float]:
    """Percentile-bootstrap one-sided p-values against `value`: (H1 above, H1 below), each
    (1 + draws on the other side) / (1 + draws)."""
    d = draws[np.isfinite(draws)]
    if not len(d):
        return 1.0, 1.0
    return (float((1 + np.sum(d <= value)) / (1 + len(d))),
            float((1 + np.sum(d >= value)) / (1 + len(d))))


def _tost(draws: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Bootstrap TOST: (p inside (low, high), p outside it on one side)."""
    above_hi, below_hi = _boot_p(draws, high)
    above_lo, below_lo = _boot_p(draws, low)
    return max(below_hi, above_lo), min(above_hi, below_lo)


def _interval(v: np.ndarray, alpha: float) -> tuple[float, float]:
    """Central (1 − α) percentile interval of the finite values."""
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _centers(groups: Groups, fraction: float, n_boot: int, alpha: float,
             rng: np.random.Generator) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Per FLOPs regime (mildest first) the optimal mCB of the pooled STD spaces, its bootstrap
    draws and the uniform recipe's mCB."""
    rows, draws = [], []
    for regime in sorted(groups, key=lambda r: -r[1]):
        mcb, drops = _pooled(groups[regime])
        k = n_winners(len(mcb), fraction=fraction)
        if regime[0] != "flops" or len(mcb) < max(2 * k, 6):
            continue
        d = winners_median_draws(mcb, drops, k, rng.integers(0, len(mcb), (n_boot, len(mcb))))
        lo, hi = _interval(d, alpha)
        rows.append({"c_flops": regime[1], "n": len(mcb), "k": k, "lo": lo, "hi": hi,
                     "mcb": float(np.median(mcb[np.argsort(drops, kind="stable")[:k]])),
                     "uniform_mcb": _uniform_mcb(groups[regime])})
        draws.append(d)
    return rows, draws


def _close(rows: list[dict[str, Any]], draws: list[np.ndarray], margin: float, alpha: float
           ) -> tuple[str, str]:
    """Optimal − uniform per regime, a TOST against ±margin, Holm over the regimes: holds in a
    majority equivalent, fails with half or more beyond the margin. Annotates the rows."""
    close = [i for i, r in enumerate(rows) if r["uniform_mcb"] is not None]
    if not close:
        return UNTESTED, "close to the uniform recipe: no uniform recipe in these studies"
    for i in close:
        r, diff = rows[i], draws[i] - rows[i]["uniform_mcb"]
        r["diff"] = r["mcb"] - r["uniform_mcb"]
        r["diff_lo"], r["diff_hi"] = _interval(diff, alpha)
        r["p_tost"], r["p_beyond"] = _tost(diff, -margin, margin)
    eq, far = holm([rows[i]["p_tost"] for i in close]), holm([rows[i]["p_beyond"] for i in close])
    for i, pe, pf in zip(close, eq, far):
        rows[i]["p_tost_holm"], rows[i]["p_beyond_holm"] = float(pe), float(pf)
    n_eq, n_far = int(np.sum(eq < alpha / 2)), int(np.sum(far < alpha / 2))
    verdict = (FAILS if 2 * n_far >= len(close) else HOLDS if 2 * n_eq > len(close)
               else NOT_SHOWN)
    return verdict, (f"close to the uniform recipe (TOST ±{margin:g}, Holm, each side at α/2 = "
                     f"{alpha / 2:g}): equivalent in {n_eq} of {len(close)} regimes, "
                     f"significantly beyond the margin in {n_far}: {verdict}")


def _rise(rows: list[dict[str, Any]], draws: list[np.ndarray], rise_from: float, alpha: float
          ) -> tuple[str, str, dict[str, Any]]:
    """Mean optimal mCB of the regimes with c < rise_from minus the others', bootstrap."""
    ext = [i for i, r in enumerate(rows) if r["c_flops"] < rise_from]
    mild = [i for i, r in enumerate(rows) if r["c_flops"] >= rise_from]
    if not ext or not mild:
        return UNTESTED, f"rise: needs regimes on both sides of c_flops {rise_from:g}", {}
    d = np.mean([draws[i] for i in ext], axis=0) - np.mean([draws[i] for i in mild], axis=0)
    rise = float(np.mean([rows[i]["mcb"] for i in ext]) - np.mean([rows[i]["mcb"] for i in mild]))
    lo, hi = _interval(d, alpha)
    p_up, p_down = _boot_p(d, 0.0)
    verdict = decide(p_up, p_down, alpha)
    text = (f"rise past {1 - rise_from:.0%} reduction: mean optimal mCB at c_flops < "
            f"{rise_from:g} minus at c_flops ≥ {rise_from:g} {rise:+.3f} [{lo:+.3f}, {hi:+.3f}] "
            f"({1 - alpha:.0%} bootstrap); p rise {p_up:.3g}, p fall {p_down:.3g} (each at "
            f"α/2 = {alpha / 2:g}): {verdict}")
    return verdict, text, {"rise": rise, "rise_lo": lo, "rise_hi": hi, "p_rise": p_up,
                           "p_fall": p_down}


def optimal_mcb_trend(groups: Groups, *, fraction: float = 0.1, margin: float = 0.1,
                      rise_from: float = 0.1, n_boot: int = 1000, alpha: float = 0.05,
                      seed: int = 0) -> Observation:
    """(c) The optimal mCB (the winners' median over the pooled STD spaces, per FLOPs regime)
    is close to the uniform recipe's mCB in most regimes, and rises past 1 − rise_from FLOPs
    reduction; percentile bootstraps over each regime's trials, each direction at α/2.

    Close: per regime a TOST of optimal − uniform against ±margin, Holm over the regimes; holds
    if a majority of regimes is equivalent, fails if at least half are significantly beyond the
    margin. Rise: the mean optimal mCB of the regimes with c < rise_from minus that of the
    others; holds if its interval is above 0, fails if below.
    """
    claim = ("the optimal mCB is close to the uniform recipe's mCB in most regimes and rises "
             f"past {1 - rise_from:.0%} FLOPs reduction")
    rows, draws = _centers(groups, fraction, n_boot, alpha, np.random.default_rng(seed))
    if not rows:
        return Observation("c", claim, UNTESTED, ["needs FLOPs regimes with STD spaces"], {})
    close_verdict, close_text = _close(rows, draws, margin, alpha)
    rise_verdict, rise_text, rise_numbers = _rise(rows, draws, rise_from, alpha)
    evidence = []
    for r in rows:
        uni = (f"; uniform recipe {r['uniform_mcb']:.3f}, optimal − uniform {r['diff']:+.3f} "
               f"[{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}], TOST ±{margin:g} p {r['p_tost']:.3g} "
               f"(Holm {r['p_tost_holm']:.3g})" if r["uniform_mcb"] is not None else
               "; no uniform recipe")
        evidence.append(f"c_flops {r['c_flops']:g}: optimal mCB {r['mcb']:.3f} [{r['lo']:.3f}, "
                        f"{r['hi']:.3f}] (winners' median, {r['k']} of {r['n']}; "
                        f"{1 - alpha:.0%} bootstrap){uni}")
    return Observation("c", claim, combine(close_verdict, rise_verdict),
                       [*evidence, close_text, rise_text],
                       {"regimes": rows, "margin": margin, "alpha": alpha,
                        "close_verdict": close_verdict, "rise_verdict": rise_verdict,
                        **rise_numbers})


# --- (d) the drop-limit law and a held-out regime ---


def regime_limits(groups: Groups, *, fraction: float = 0.1, quantile: float = 0.05,
                  n_boot: int = 1000, seed: int = 0) -> list[RegimeLimit]:
    """Each regime's optimal mCB and limit (the `quantile` of its pooled STD populations) with
    bootstrap draws over its trials; regimes in group order."""
    out = []
    for i, (regime, group) in enumerate(groups.items()):
        mcb, drops = _pooled(group)
        if len(mcb) >= 6:
            out.append(regime_limit(mcb, drops, regime=regime, fraction=fraction,
                                    quantile=quantile, n_boot=n_boot, seed=seed + 7919 * i))
    return out


class _Chain(NamedTuple):
    """The law and the optimal-mCB curve fitted to regime points, with their replicates."""

    law: LawFit
    curve: LawFit | None
    law_points: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x, y and replicates
    curve_points: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None


def _fit_chain(points: list[RegimeLimit], forms: Sequence[str], curve_forms: Sequence[str],
               with_curve: bool) -> _Chain:
    """Fit the law over all `points` and, if asked, the curve over the FLOPs ones (two-stage
    replicates); EvopruneError where the law cannot be fitted."""
    law_points = (np.array([p.center.estimate for p in points]),
                  np.array([p.limit.estimate for p in points]),
                  np.stack([p.center_draws for p in points], axis=1),
                  np.stack([p.limit_draws for p in points], axis=1))
    law = fit_law(law_points[0], law_points[1], forms=forms, what="the drop-limit law",
                  draws=law_points[2:])
    flops = [p for p in points if p.regime[0] == "flops"]
    if not with_curve or not flops:
        return _Chain(law, None, law_points, None)
    x = np.array([1 - p.regime[1] for p in flops])
    n_boot = len(flops[0].center_draws)
    curve_points = (x, np.array([p.center.estimate for p in flops]), np.tile(x, (n_boot, 1)),
                    np.stack([p.center_draws for p in flops], axis=1))
    try:
        curve = fit_law(curve_points[0], curve_points[1], forms=curve_forms,
                        what="the optimal-mCB curve", draws=curve_points[2:])
    except EvopruneError:
        return _Chain(law, None, law_points, None)
    return _Chain(law, curve, law_points, curve_points)


def law_prediction(groups: Groups, held_out: Sequence[StudyData], *, fraction: float = 0.1,
                   quantile: float = 0.05, tolerance: float = 0.3, n_boot: int = 1000,
                   alpha: float = 0.05, seed: int = 0, forms: Sequence[str] = LAW_FORMS,
                   curve_forms: Sequence[str] = MCB_CURVE_FORMS) -> Observation:
    """(d) The drop-limit law fitted over every regime of `groups` (FLOPs and params) predicts
    the held-out regime's limit within ±tolerance (relative).

    Each regime's limit is the `quantile` of its drops, its optimal mCB the winners' median; a
    two-stage bootstrap resamples the trials of every regime and refits the law (limit against
    optimal mCB) and the optimal-mCB curve (against FLOPs reduction, FLOPs regimes) to each
    replicate, each replicate choosing its form by AICc (so the interval carries the choice of
    form too). The held-out FLOPs regime is predicted through the curve, then the law; its own
    limit is bootstrapped too, so the ratio observed / predicted carries both uncertainties.
    Holds if the ratio's (1 − α) interval lies inside [1/(1 + tolerance), 1 + tolerance] (a
    TOST, each side at α/2); fails if it lies entirely outside.
    """
    claim = "the drop-limit law fits and predicts a held-out regime"
    mcb, drops = _pooled(held_out)
    if not held_out or len(mcb) < 6:
        return Observation("d", claim, UNTESTED, ["needs a held-out regime with STD spaces"], {})
    points = regime_limits(groups, fraction=fraction, quantile=quantile, n_boot=n_boot,
                           seed=seed)
    where = held_out[0].regime
    held = regime_limit(mcb, drops, regime=where, fraction=fraction, quantile=quantile,
                        n_boot=n_boot, seed=seed + 104729)
    try:
        chain = _fit_chain(points, forms, curve_forms, where[0] == "flops")
    except EvopruneError as exc:
        return Observation("d", claim, UNTESTED, [str(exc)], {})
    law, curve = chain.law, chain.curve
    params = ", ".join(f"{n} {p.estimate:.3g} [{p.lo:.3g}, {p.hi:.3g}]"
                       for n, p in zip(law.names, law.params))
    evidence = [f"limits ({quantile:.0%} quantile of the drops) against optimal mCB: "
                + "; ".join(f"{p.regime[0]} {p.regime[1]:g} {p.limit.estimate:.2f} pp at mCB "
                            f"{p.center.estimate:.3f}" for p in points),
                f"law: {law.form} (lowest AICc), {params} (two-stage bootstrap, "
                f"{1 - alpha:.0%}), R² {law.r2:.3f} on {len(points)} regimes"]
    numbers: dict[str, Any] = {"law_form": law.form, "law_r2": law.r2, "quantile": quantile,
                               "observed_limit": held.limit._asdict(), "tolerance": tolerance,
                               "observed_mcb": held.center._asdict(), "alpha": alpha}
    direct = selected_values(*chain.law_points, held.center_draws, forms)
    direct_hat = float(law(held.center.estimate))
    if curve is not None and chain.curve_points is not None:
        m_draws = selected_values(*chain.curve_points, 1 - where[1], curve_forms)
        pred = selected_values(*chain.law_points, m_draws, forms)
        m_hat = float(curve(1 - where[1]))
        pred_hat = float(law(m_hat))
        via = f"the mCB curve ({curve.form}, R² {curve.r2:.3f}) then the law"
        m_lo, m_hi = _interval(m_draws, alpha)
        numbers.update(curve_form=curve.form, curve_r2=curve.r2,
                       predicted_mcb={"estimate": m_hat, "lo": m_lo, "hi": m_hi})
        evidence.append(f"held-out {where[0]} {where[1]:g}: predicted optimal mCB {m_hat:.3f} "
                        f"[{m_lo:.3f}, {m_hi:.3f}], observed {held.center.estimate:.3f} "
                        f"[{held.center.lo:.3f}, {held.center.hi:.3f}]")
    else:
        pred, pred_hat, via = direct, direct_hat, "the law at the held-out's optimal mCB"
    with np.errstate(all="ignore"):
        ratio, direct_ratio = held.limit_draws / pred, held.limit_draws / direct
        ratio_hat = held.limit.estimate / pred_hat if pred_hat else math.nan
        direct_hat = held.limit.estimate / direct_hat if direct_hat else math.nan
    top = 1 + tolerance
    p_eq, p_out = _tost(ratio, 1 / top, top)
    verdict = decide(p_eq, p_out, alpha) if math.isfinite(ratio_hat) else NOT_SHOWN
    (lo, hi), (p_lo, p_hi) = _interval(ratio, alpha), _interval(pred, alpha)
    d_lo, d_hi = _interval(direct_ratio, alpha)
    numbers.update(predicted_limit={"estimate": pred_hat, "lo": p_lo, "hi": p_hi}, via=via,
                   ratio={"estimate": ratio_hat, "lo": lo, "hi": hi}, p_equivalent=p_eq,
                   p_outside=p_out, direct_ratio={"estimate": direct_hat, "lo": d_lo, "hi": d_hi})
    evidence += [
        f"held-out {where[0]} {where[1]:g}: predicted limit {pred_hat:.2f} [{p_lo:.2f}, "
        f"{p_hi:.2f}] pp via {via}; observed {held.limit.estimate:.2f} [{held.limit.lo:.2f}, "
        f"{held.limit.hi:.2f}] pp",
        f"observed / predicted {ratio_hat:.2f} [{lo:.2f}, {hi:.2f}] ({1 - alpha:.0%}, both "
        f"bootstraps); TOST against [{1 / top:.2f}, {top:.2f}] p {p_eq:.3g}, outside p "
        f"{p_out:.3g} (each at α/2 = {alpha / 2:g}): {verdict}",
        f"a second reading, the law at the held-out's own optimal mCB: observed / predicted "
        f"{direct_hat:.2f} [{d_lo:.2f}, {d_hi:.2f}]"]
    dups = duplicate_rows({**groups, where: list(held_out)})
    if dups:
        numbers["duplicates"] = dups
        evidence.append("the law's input, " + duplicate_text(dups))
    if where[0] == "flops":
        null = _budget_null(points, held, pred, pred_hat, alpha)
        if null is not None:
            numbers["budget_null"] = null
            evidence += null["evidence"]
    return Observation("d", claim, verdict, evidence, numbers)


NULL_NAMES = {"law": "the law", "line": "the line", "interp": "interpolation"}


def _budget_null(points: list[RegimeLimit], held: RegimeLimit, law_draws: np.ndarray,
                 law_hat: float, alpha: float) -> dict[str, Any] | None:
    """The law against the budget-only null (the limit against c_flops alone: a log–log line and
    interpolation in log c_flops) by held-out prediction error: at the held-out regime (bootstrap difference of
    absolute errors, each direction at α/2) and leaving out each FLOPs regime in turn."""

    flops = [p for p in points if p.regime[0] == "flops"]
    other = [p for p in points if p.regime[0] != "flops"]
    if len(flops) < 2:
        return None
    c = np.array([p.regime[1] for p in flops])
    line = null_line_draws(c, np.stack([p.limit_draws for p in flops], axis=1), held.regime[1])
    line_hat = float(null_line_draws(c, np.array([[p.limit.estimate for p in flops]]),
                                     held.regime[1])[0])
    diff = error_difference(held.limit_draws, law_draws, line, 1 - alpha)
    verdict = decide(diff["p_law_better"], diff["p_null_better"], alpha)
    every = sorted([*flops, held], key=lambda p: -p.regime[1])
    loro = law_vs_budget_null([p.regime[1] for p in every], [p.limit.estimate for p in every],
                              [p.center.estimate for p in every],
                              extra_mcb=[p.center.estimate for p in other],
                              extra_limits=[p.limit.estimate for p in other],
                              held_out=held.regime[1])
    h = loro["held_out"] or {}
    obs_hat = held.limit.estimate
    rows = "; ".join(f"{r['c_flops']:g}: law {r['err_law']:.2f}, line {r['err_line']:.2f}, "
                     f"interpolation {r['err_interp']:.2f}"
                     + (" (extrapolated)" if r["interp_extrapolated"] else "")
                     for r in loro["regimes"])
    mae = loro["mean_abs_error"]
    evidence = [
        f"beyond the budget: at the held-out c_flops {held.regime[1]:g} the budget-only null (a "
        f"straight line of log limit against log c_flops over the {len(flops)} FLOPs regimes) "
        f"predicts {line_hat:.2f} pp and interpolation in log c_flops "
        f"{h.get('interp', math.nan):.2f}, the law {law_hat:.2f}, observed {obs_hat:.2f}: "
        f"absolute errors law {abs(obs_hat - law_hat):.2f}, line {abs(obs_hat - line_hat):.2f}, "
        f"interpolation {h.get('err_interp', math.nan):.2f} pp; law − line error "
        f"{diff['estimate']:+.2f} [{diff['lo']:+.2f}, {diff['hi']:+.2f}] pp ({1 - alpha:.0%}, "
        f"both bootstraps); p law better {diff['p_law_better']:.3g}, p line better "
        f"{diff['p_null_better']:.3g} (each at α/2 = {alpha / 2:g}): "
        + {HOLDS: "the law predicts better than the budget alone",
           FAILS: "the budget alone predicts better than the law",
           NOT_SHOWN: "not shown that the law adds to the budget"}[verdict],
        f"leaving out each FLOPs regime in turn (point estimates, every fit redone without it), "
        f"absolute errors (pp) {rows}; mean law {mae['law']:.2f}, line {mae['line']:.2f}, "
        f"interpolation {mae['interp']:.2f}: lowest "
        + NULL_NAMES.get(loro["better"], "none")]
    return {"line": line_hat, "interp": h.get("interp"), "law": law_hat, "observed": obs_hat,
            "difference": diff, "verdict": verdict, "leave_one_out": loro,
            "evidence": evidence}


# --- (e) the sampler race ---


def _sampled(study: StudyData) -> np.ndarray:
    """Indices of the sampled trials (neither the uniform recipe nor a baseline), trial order;
    repeats count: each spent a trial."""
    idx = np.flatnonzero(study.searched)
    return idx[np.argsort(study.numbers[idx], kind="stable")]


def trials_to_reach(study: StudyData, threshold: float, skip: int = 0) -> int:
    """Sampled trials (in trial order, the first `skip` left out) until one has a drop ≤
    threshold; the number counted + 1 if none does."""
    order = _sampled(study)[skip:]
    hit = np.flatnonzero(study.val_drop[order] <= threshold)
    return int(hit[0] + 1) if len(hit) else len(order) + 1


def best_so_far(study: StudyData) -> np.ndarray:
    """The best drop after each COMPLETE trial, in trial order."""
    return np.minimum.accumulate(study.val_drop[np.argsort(study.numbers, kind="stable")])


def shared_prefix(a: StudyData, b: StudyData) -> int:
    """How many first sampled trials (in trial order) two runs share: the same recipes, in
    order (the uniform recipe and baselines, fixed in both, are not draws)."""
    ra, rb = a.recipes[_sampled(a)], b.recipes[_sampled(b)]
    n = min(len(ra), len(rb))
    if n == 0 or ra.shape[1:] != rb.shape[1:]:
        return 0
    same = np.all(np.isclose(ra[:n], rb[:n], rtol=0, atol=1e-9), axis=1)
    return int(n if same.all() else np.argmin(same))


def _first_draws(pairs: list[tuple[StudyData, StudyData]], skips: list[int], alpha: float
                 ) -> dict[str, Any] | None:
    """The drops of the skipped first draws, NSGA-II's against random's, pooled over the pairs:
    Hodges–Lehmann shift and a two-sided Mann-Whitney p (do the two runs start alike?)."""
    evo = np.concatenate([e.val_drop[_sampled(e)[:k]] for (e, _r), k in zip(pairs, skips)])
    rnd = np.concatenate([r.val_drop[_sampled(r)[:k]] for (_e, r), k in zip(pairs, skips)])
    if min(len(evo), len(rnd)) < 3:
        return None
    sh = shift(evo, rnd, False, alpha)
    p = float(stats.mannwhitneyu(evo, rnd, alternative="two-sided").pvalue)
    return {"n_nsga2": len(evo), "n_random": len(rnd), "median_nsga2": float(np.median(evo)),
            "median_random": float(np.median(rnd)), "shift": sh._asdict(), "p": p}


def sampler_efficiency(evolved: Sequence[StudyData], random: Sequence[StudyData], *,
                       quantile: float = 0.1, alpha: float = 0.05, prefix: int | None = None,
                       min_pairs: int = 8) -> Observation:
    """(e) NSGA-II reaches the random runs' best `quantile` in fewer trials.

    Runs are paired in the order given (one seed a pair). The count starts after the first
    draws: `prefix` sampled trials of each run (NSGA-II's first generation, random's first
    draws), else the sampled trials both runs share (the same recipes, found); the evidence says
    whether the skipped draws were the same in both runs, and compares them when not. Wilcoxon
    signed-rank on random − NSGA-II trials to reach, each direction at α/2; with fewer than
    `min_pairs` pairs the race is exploratory (not shown, whatever it says).
    """
    claim = "NSGA-II reaches the random space's best 10% in fewer trials than random sampling"
    pairs = list(zip(evolved, random))
    if not pairs:
        return Observation("e", claim, UNTESTED, ["needs NSGA-II and random studies"], {})
    threshold = float(np.quantile(np.concatenate([_drops(s) for s in random]), quantile))
    shared = [shared_prefix(e, r) for e, r in pairs]
    skips = [prefix if prefix is not None else k for k in shared]
    same_start = all(k >= s for k, s in zip(shared, skips))
    t_evo = [trials_to_reach(e, threshold, k) for (e, _r), k in zip(pairs, skips)]
    t_rnd = [trials_to_reach(r, threshold, k) for (_e, r), k in zip(pairs, skips)]
    diff = np.array(t_rnd, float) - np.array(t_evo, float)
    n = len(pairs)
    if np.any(diff != 0):
        p_fewer = float(stats.wilcoxon(diff, alternative="greater").pvalue)
        p_more = float(stats.wilcoxon(diff, alternative="less").pvalue)
    else:
        p_fewer = p_more = 1.0
    sh = shift(np.array(t_rnd, float), np.array(t_evo, float), True, alpha)
    best_evo = [float(s.val_drop[_sampled(s)].min()) for s in evolved]
    best_rnd = [float(s.val_drop[_sampled(s)].min()) for s in random]
    exploratory = n < min_pairs
    verdict = NOT_SHOWN if exploratory else decide(p_fewer, p_more, alpha)
    first = None if same_start else _first_draws(pairs, skips, alpha)
    start = ("after the first draws both runs share (the same recipes)" if same_start else
             "after each run's own first draws (NSGA-II's first generation, random's first "
             "trials): not the same draws")
    evidence = [
        f"threshold: the random runs' {quantile:.0%} quantile, {threshold:.2f} pp; the count "
        f"starts {start}: {skips} sampled trials left out, of which {shared} are shared "
        "(the uniform recipe is not counted; a run that never reaches it counts its trials + 1)"]
    if first is not None:
        fs = Shift(**first["shift"])
        evidence.append(
            f"the left-out first draws differ: NSGA-II median {first['median_nsga2']:.2f} pp "
            f"(n {first['n_nsga2']}), random {first['median_random']:.2f} pp (n "
            f"{first['n_random']}), NSGA-II − random {_fmt(fs)} ({1 - alpha:.0%}, Mann-Whitney, "
            f"pooled over seeds) p {first['p']:.3g} (two-sided): the race after them does not "
            "start from one distribution")
    evidence += [
        f"trials to reach it after the left-out draws: NSGA-II {t_evo}, random {t_rnd}; random "
        f"− NSGA-II HL {sh.estimate:+.1f} [{sh.lo:+.1f}, {sh.hi:+.1f}] trials ({1 - alpha:.0%}); "
        f"Wilcoxon signed-rank over {n} paired seeds p fewer {p_fewer:.3g}, p more {p_more:.3g} "
        f"(each at α/2 = {alpha / 2:g})"
        + (f": exploratory, fewer than {min_pairs} paired seeds" if exploratory else ""),
        f"best drop at the full budget: NSGA-II {[round(b, 2) for b in best_evo]}, random "
        f"{[round(b, 2) for b in best_rnd]} (a second reading, not the claim's test)",
    ]
    return Observation("e", claim, verdict, evidence,
                       {"threshold": threshold, "nsga2": t_evo, "random": t_rnd,
                        "prefix": skips, "shared": shared, "same_start": same_start,
                        "start": start, "first_draws": first, "p": p_fewer, "p_more": p_more,
                        "shift": sh._asdict(), "exploratory": exploratory,
                        "best_nsga2": best_evo, "best_random": best_rnd})


# --- (f) the winner against the uniform recipe after retraining ---


def _regime_label(regime: Any) -> str:
    """"c_flops 0.1" for a float or a ("flops", 0.1) key; the key as it is otherwise."""
    if isinstance(regime, tuple) and len(regime) == 2:
        return f"c_{regime[0]} {float(regime[1]):g}"
    return f"c_flops {regime:g}" if isinstance(regime, float) else str(regime)

Pair = tuple  # (c_flops, retraining seed, winner's drop, uniform's drop[, search replicate])


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


def paired_gain(pairs: Sequence[Pair], *, alpha: float = 0.05, min_clusters: int = 5,
                n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Gain = uniform − winner test drop, the regime the unit: per regime the mean over its
    retraining seeds, then the mean over regimes with a t interval and one-sided p each way over
    the regime means, a two-stage bootstrap interval (regimes, then seeds inside), and the
    two-sided verdict (not shown below `min_clusters` regimes)."""

    by: dict[tuple[float, int], list[float]] = {}
    for p in pairs:  # (c_flops, seed, winner, uniform[, search replicate])
        key = (float(p[0]), int(p[4]) if len(p) > 4 else 0)
        by.setdefault(key, []).append(float(p[3]) - float(p[2]))
    regimes = sorted(by, key=lambda k: (-k[0], k[1]))
    h = hierarchical_bootstrap([by[c] for c in regimes], n_boot=n_boot, level=1 - alpha,
                               seed=seed)
    g = np.array([p[3] - p[2] for p in pairs], float)
    n = len(g)
    verdict = (decide(h["p_greater"], h["p_less"], alpha) if h["n_clusters"] >= min_clusters
               else NOT_SHOWN)
    return {"n": n, "regimes": h["n_clusters"], "mean_gain": h["estimate"], "lo": h["lo"],
            "hi": h["hi"], "boot_lo": h["boot_lo"], "boot_hi": h["boot_hi"],
            "p_gain": h["p_greater"], "p_loss": h["p_less"], "p": h["p"], "p_boot": h["p_boot"],
            "per_regime": [{"c_flops": c[0], "replicate": c[1], "gain": float(np.mean(by[c])),
                            "n_seeds": len(by[c]),
                            "sd_seeds": float(np.std(by[c], ddof=1)) if len(by[c]) > 1
                            else None} for c in regimes],
            "wins": int(sum(np.mean(by[c]) > 0 for c in regimes)),
            "losses": int(sum(np.mean(by[c]) < 0 for c in regimes)),
            "seed_wins": int(np.sum(g > 0)), "seed_losses": int(np.sum(g < 0)),
            "verdict": verdict, "exploratory": h["n_clusters"] < min_clusters,
            "unit": "regime (search replicate); retraining seeds inside",
            "pairs": [list(p) for p in pairs]}


def _gain_text(name: str, r: dict[str, Any], alpha: float, min_clusters: int) -> str:
    reps = len({x["replicate"] for x in r["per_regime"]}) > 1
    per = ", ".join(f"c_flops {x['c_flops']:g}" + (f" #{x['replicate']}" if reps else "")
                    + f" {x['gain']:+.2f}" for x in r["per_regime"])
    return (f"{name}: gain (uniform − winner test drop) {r['mean_gain']:+.2f} pp "
            f"[{r['lo']:+.2f}, {r['hi']:+.2f}] ({1 - alpha:.0%} t over {r['regimes']} "
            + ("regime × search-replicate means, that the unit" if reps else
               "regime means, the regime the unit")
            + f"; two-stage bootstrap, regimes then seeds, [{r['boot_lo']:+.2f}, "
            f"{r['boot_hi']:+.2f}], narrower: it under-covers with few regimes; {r['n']} "
            f"retrainings inside); per regime {per}; winner better in {r['wins']} of "
            f"{r['regimes']}; p gain "
            f"{r['p_gain']:.3g}, p loss {r['p_loss']:.3g} (each at α/2 = {alpha / 2:g}), "
            f"two-sided p {r['p']:.3g}: {r['verdict']}"
            + (f" (exploratory: fewer than {min_clusters} regimes)" if r["exploratory"] else ""))


def retrained_vs_uniform(pairs: Sequence[Pair], *, mcb_pairs: Sequence[Pair] = (),
                         alpha: float = 0.05, min_clusters: int = 5,
                         resolution: float | None = None,
                         fidelity: Any = (),
                         unselected: tuple[Sequence[float], Sequence[float]] | None = None,
                         n_boot: int = 1000, seed: int = 0) -> Observation:
    """(f) The searched winner beats the uniform recipe after equal retraining.

    `pairs`: (c_flops, retraining seed, winner's test drop, uniform's test drop), the winner
    chosen on validation across all STD spaces (the paper's Fig. 5); `mcb_pairs` the same with
    the winner from the mCB space, a second reading (it decides when `pairs` is empty). The
    regime is the unit (`paired_gain`): t over the regime means, each direction at α/2; at
    least `min_clusters` regimes for a verdict. `fidelity` ({regime: (proxy drops, retrained
    drops)}, or a list of such pairs) gives Kendall τ inside each regime, never pooled;
    `unselected` (proxy validation and retrained test drops of recipes retrained without
    selection) the proxy's fidelity on recipes nobody chose.
    """

    claim = "the searched winner beats the uniform recipe after equal retraining"
    readings = [(n, p) for n, p in (("winner across the STD spaces", pairs),
                                    ("winner of the mCB space", mcb_pairs)) if p]
    if not readings:
        return Observation("f", claim, UNTESTED,
                           ["needs retrained winners and uniform recipes"], {})
    evidence = []
    numbers: dict[str, Any] = {}
    for i, (name, ps) in enumerate(readings):
        r = paired_gain(ps, alpha=alpha, min_clusters=min_clusters, n_boot=n_boot, seed=seed)
        numbers["std" if name.startswith("winner across") else "mcb"] = r
        evidence.append(_gain_text(name, r, alpha, min_clusters)
                        + ("" if i == 0 else " (a second reading)"))
    main = numbers.get("std") or numbers["mcb"]
    numbers.update(pairs=main["pairs"], mean_gain=main["mean_gain"], p=main["p_gain"],
                   wins=main["wins"], per_regime=main["per_regime"], lo=main["lo"],
                   hi=main["hi"], unit=main["unit"])
    if resolution:
        evidence.append(f"one test image is {resolution:.2f} pp")
    if len(fidelity):
        groups = dict(fidelity) if isinstance(fidelity, dict) else dict(enumerate(fidelity))
        rows = tau_within_regimes(groups)
        tau, same = within_regime_fidelity(list(groups.values()))
        numbers.update(within_regime_kendall_tau=tau, proxy_best_is_retrained_best=same,
                       tau_per_regime=rows)
        per = "; ".join(
            f"{_regime_label(r['regime'])} τ {r['tau']:+.2f} (n {r['n']}, p {r['p']:.2g})"
            if r["tau"] is not None else f"{_regime_label(r['regime'])} n {r['n']}: too few"
            for r in rows)
        evidence.append(f"the proxy's ranking of the retrained networks inside each regime "
                        f"(Kendall τ-b of validation proxy drop against mean test drop; never "
                        f"pooled across regimes, where the budget alone orders the drops): "
                        f"{per}; the best by proxy is the best retrained in {same} of "
                        f"{len(rows)} regimes")
    if unselected is not None and len(unselected[0]) >= 3:
        f = unselected_fidelity(*unselected, n_boot=n_boot, level=1 - alpha, seed=seed)
        numbers["unselected_fidelity"] = {"n": f.n, "tau": f.tau._asdict(), "p": f.p}
        evidence.append(f"the proxy's fidelity on {f.n} recipes retrained without selection: "
                        f"Kendall τ-b {f.tau.estimate:.2f} [{f.tau.lo:.2f}, {f.tau.hi:.2f}] "
                        f"({1 - alpha:.0%} bootstrap), p {f.p:.3g}")
    return Observation("f", claim, main["verdict"], evidence, numbers)
