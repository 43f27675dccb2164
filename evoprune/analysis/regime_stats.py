"""Statistics whose unit is the regime (× search replicate), never the retraining seed.

`hierarchical_bootstrap` estimates a paired gain over clusters (regime × independent search
replicate) with the retraining seeds inside; `dedupe_networks` counts identical networks once;
`law_vs_budget_null` sets the drop-limit law against the budget-only null by held-out
prediction error; `tau_within_regimes` ranks proxy against retrained drops inside each regime.
scripts/calibrate_verdicts.py measures each test's false-positive rate and power.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from evoprune.analysis.fit import LAW_FORMS, MCB_CURVE_FORMS, fit_law
from evoprune.errors import EvopruneError


def hierarchical_bootstrap(diffs: Sequence[Sequence[float] | np.ndarray], n_boot: int = 2000,
                           level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Mean of the clusters' mean differences: t over cluster means (p, interval) and a two-stage
    bootstrap (clusters, then seeds inside each) interval; the cluster is the unit."""
    groups = [np.asarray(d, float) for d in diffs if len(d)]
    c = len(groups)
    means = np.array([g.mean() for g in groups]) if c else np.empty(0)
    out: dict[str, Any] = {"n_clusters": c, "n_seeds": int(sum(len(g) for g in groups)),
                           "cluster_means": [float(m) for m in means], "level": level,
                           "test": "t over cluster means; two-stage cluster bootstrap"}
    if not c:
        return {**out, "estimate": math.nan, "lo": math.nan, "hi": math.nan,
                "boot_lo": math.nan, "boot_hi": math.nan, "p": 1.0, "p_greater": 1.0,
                "p_less": 1.0, "p_boot": 1.0}
    est = float(means.mean())
    a = (1 - level) / 2
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, c, size=(n_boot, c))
    inner = np.empty((n_boot, c))  # cluster k's seeds resampled once per (replicate, slot)
    for k, g in enumerate(groups):
        inner_k = g[rng.integers(0, len(g), size=(n_boot, c, len(g)))].mean(axis=2)
        inner = np.where(pick == k, inner_k, inner)
    boot = inner.mean(axis=1)
    b_lo, b_hi = (float(v) for v in np.quantile(boot, [a, 1 - a]))
    p_boot = float(min(1.0, 2 * min((1 + np.sum(boot <= 0)) / (1 + n_boot),
                                    (1 + np.sum(boot >= 0)) / (1 + n_boot))))
    if c >= 2 and np.ptp(means) > 1e-12:
        se = float(means.std(ddof=1) / math.sqrt(c))
        t = est / se
        q = float(stats.t.ppf(1 - a, c - 1))
        lo, hi = est - q * se, est + q * se
        p_greater, p_less = float(stats.t.sf(t, c - 1)), float(stats.t.cdf(t, c - 1))
    else:  # one cluster, or every cluster the same: decisive only over ≥ 2 equal nonzero means
        lo = hi = est
        p_greater = 0.0 if c >= 2 and est > 0 else 1.0
        p_less = 0.0 if c >= 2 and est < 0 else 1.0
    return {**out, "estimate": est, "lo": lo, "hi": hi, "boot_lo": b_lo, "boot_hi": b_hi,
            "p": float(min(1.0, 2 * min(p_greater, p_less))), "p_greater": p_greater,
            "p_less": p_less, "p_boot": p_boot}


def dedupe_networks(channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows kept (the first occurrence of each kept-channel vector, in row order) and how many
    rows each kept one stands for."""
    ch = np.asarray(channels)
    if ch.ndim != 2 or not len(ch):
        return np.arange(len(ch)), np.ones(len(ch), int)
    _, first, counts = np.unique(ch, axis=0, return_index=True,
                                          return_counts=True)
    order = np.argsort(first, kind="stable")
    return first[order].astype(int), counts[order].astype(int)


def _line(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """Least-squares straight line through (x, y), evaluated at `at`."""
    b, a = np.polyfit(x, y, 1)
    return float(a + b * at)


def _power_line(log_c: np.ndarray, y: np.ndarray, at: float) -> float:
    """The budget-only null: a straight line of log limit against log c_flops (limit = a·c^b),
    evaluated at log c_flops `at`; in the limit itself where a limit is not positive."""
    if np.all(y > 0):
        return float(np.exp(_line(log_c, np.log(y), at)))
    return _line(log_c, y, at)


def _interp(x: np.ndarray, y: np.ndarray, at: float) -> tuple[float, bool]:
    """Linear interpolation (extrapolation from the two nearest points outside the range)."""
    o = np.argsort(x)
    x, y = x[o], y[o]
    if x[0] <= at <= x[-1]:
        return float(np.interp(at, x, y)), False
    i = (0, 1) if at < x[0] else (-2, -1)
    return _line(x[list(i)], y[list(i)], at), True


def _law_at(c: float, c_fit: np.ndarray, mcb_fit: np.ndarray, limit_fit: np.ndarray,
            extra_mcb: np.ndarray, extra_limit: np.ndarray, forms: Sequence[str],
            curve_forms: Sequence[str]) -> float:
    """The law's prediction at c_flops c: the optimal-mCB curve (against 1 − c) then the law."""

    try:
        curve = fit_law(1 - c_fit, mcb_fit, forms=curve_forms, n_boot=0,
                        what="the optimal-mCB curve")
        law = fit_law(np.concatenate([mcb_fit, extra_mcb]),
                      np.concatenate([limit_fit, extra_limit]), forms=forms, n_boot=0,
                      what="the drop-limit law")
    except EvopruneError:
        return math.nan
    with np.errstate(all="ignore"):
        return float(law(float(curve(1 - c))))


def law_vs_budget_null(c_flops: Sequence[float], limits: Sequence[float], mcb: Sequence[float],
                       *, extra_mcb: Sequence[float] = (), extra_limits: Sequence[float] = (),
                       held_out: float | None = None, forms: Sequence[str] | None = None,
                       curve_forms: Sequence[str] | None = None) -> dict[str, Any]:
    """Leave-one-regime-out absolute errors of the law (curve then law, refitted without the
    regime) and of the budget-only null (a straight line of log limit against log c_flops, and
    interpolation of the limit in log c_flops) per FLOPs regime; `extra_*`: law-only points
    (params regimes)."""

    forms = forms or LAW_FORMS
    curve_forms = curve_forms or MCB_CURVE_FORMS
    c, y, m = (np.asarray(v, float) for v in (c_flops, limits, mcb))
    em, ey = np.asarray(extra_mcb, float), np.asarray(extra_limits, float)
    rows = []
    for i in range(len(c)):
        keep = np.arange(len(c)) != i
        lc = np.log(c[keep])
        law = _law_at(c[i], c[keep], m[keep], y[keep], em, ey, forms, curve_forms)
        line = _power_line(lc, y[keep], math.log(c[i])) if keep.sum() >= 2 else math.nan
        interp, extrapolated = (_interp(lc, y[keep], math.log(c[i])) if keep.sum() >= 2
                                else (math.nan, True))
        rows.append({"c_flops": float(c[i]), "observed": float(y[i]), "law": law, "line": line,
                     "interp": interp, "interp_extrapolated": extrapolated,
                     "err_law": abs(y[i] - law), "err_line": abs(y[i] - line),
                     "err_interp": abs(y[i] - interp)})
    mean_abs = {k: float(np.mean([r[f"err_{k}"] for r in rows])) if rows and all(
        math.isfinite(r[f"err_{k}"]) for r in rows) else math.nan
        for k in ("law", "line", "interp")}
    finite = {k: v for k, v in mean_abs.items() if math.isfinite(v)}
    held = next((r for r in rows if held_out is not None and math.isclose(r["c_flops"], held_out)),
                None)
    held_best = None
    if held is not None:
        errs = {k: held[f"err_{k}"] for k in ("law", "line", "interp")
                if math.isfinite(held[f"err_{k}"])}
        held_best = min(errs, key=errs.get) if errs else None
    return {"regimes": rows, "mean_abs_error": mean_abs,
            "better": min(finite, key=finite.get) if finite else None,
            "law_beats_line": sum(r["err_law"] < r["err_line"] for r in rows),
            "held_out": held, "held_out_better": held_best,
            "null": "the limit against c_flops alone: a least-squares line of log limit against "
                    "log c_flops, and interpolation in log c_flops"}


def null_line_draws(c_flops: Sequence[float], limit_draws: np.ndarray, at: float) -> np.ndarray:
    """The budget-only null's prediction at c_flops `at` for each replicate: a least-squares line
    of each row of `limit_draws` (replicates × regimes) in log–log (as `_power_line`; rows with a
    limit ≤ 0 in the limit itself)."""
    x = np.log(np.asarray(c_flops, float))
    y = np.asarray(limit_draws, float)
    xc = x - x.mean()
    positive = np.all(y > 0, axis=1)
    with np.errstate(all="ignore"):
        yy = np.where(positive[:, None], np.log(np.where(y > 0, y, 1.0)), y)
        slope = (yy - yy.mean(axis=1, keepdims=True)) @ xc / float(xc @ xc)
        pred = yy.mean(axis=1) + slope * (math.log(at) - x.mean())
        return np.where(positive, np.exp(pred), pred)


def error_difference(observed: np.ndarray, law: np.ndarray, null: np.ndarray,
                     level: float = 0.95) -> dict[str, float]:
    """|observed − law| − |observed − null| over paired bootstrap replicates: the median, its
    percentile interval and one-sided p each way (negative: the law predicts better)."""
    d = np.abs(observed - law) - np.abs(observed - null)
    d = d[np.isfinite(d)]
    if not len(d):
        return {"estimate": math.nan, "lo": math.nan, "hi": math.nan, "p_law_better": 1.0,
                "p_null_better": 1.0, "n": 0}
    a = (1 - level) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return {"estimate": float(np.median(d)), "lo": float(lo), "hi": float(hi),
            "p_law_better": float((1 + np.sum(d >= 0)) / (1 + len(d))),
            "p_null_better": float((1 + np.sum(d <= 0)) / (1 + len(d))), "n": len(d)}


def tau_within_regimes(groups: Mapping[Any, tuple[Sequence[float], Sequence[float]]]
                       ) -> list[dict[str, Any]]:
    """Kendall τ-b of proxy against retrained drops inside each regime (never pooled), with n
    and scipy's two-sided p; regimes with fewer than 3 networks give τ None."""
    out = []
    for regime, (proxy, retrained) in groups.items():
        x, y = np.asarray(proxy, float), np.asarray(retrained, float)
        tau = p = None
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            r = stats.kendalltau(x, y)
            tau, p = float(r.statistic), float(r.pvalue)
        out.append({"regime": regime, "n": len(x), "tau": tau, "p": p,
                    "best_by_proxy_is_best": bool(len(x) and y[np.argmin(x)] <= y.min())})
    return out
