"""Fitted laws: optimal mCB per regime (Conjecture 3), its curve against the FLOPs reduction
(Fig. 5 right) and the drop-limit law, best drop as a function of the optimal mCB (Conjecture 4,
Fig. 5 left); bootstrap intervals, AICc model choice, and the proxy's fidelity.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from evoprune.errors import EvopruneError


class Interval(NamedTuple):
    """An estimate with its (percentile bootstrap) interval."""

    estimate: float
    lo: float
    hi: float


class OptimalMCB(NamedTuple):
    """The optimal mCB of a regime: the winners' median with a bootstrap interval, their range."""

    regime: tuple[str, float]
    n: int  # subnetworks in the regime
    n_winners: int
    center: Interval  # median mCB of the winners, bootstrap interval
    winners_range: tuple[float, float]  # min and max mCB of the winners
    best_drop: Interval  # the regime's best drop; one-sided bootstrap: lo = estimate, hi = how
    # much worse the best of a replicate population of the same size could be
    uniform_mcb: float | None


def n_winners(n: int, best: int | None = None, fraction: float | None = None) -> int:
    """How many subnetworks count as winners: `best`, else ceil(fraction·n), at least 1."""
    if best is not None:
        return max(1, min(n, best))
    return max(1, min(n, math.ceil((fraction if fraction is not None else 0.1) * n)))


def optimal_mcb(mcb: np.ndarray, drops: np.ndarray, *, regime: tuple[str, float] = ("flops", 0.0),
                best: int | None = None, fraction: float | None = None, n_boot: int = 1000,
                level: float = 0.95, seed: int = 0, uniform_mcb: float | None = None) -> OptimalMCB:
    """Median mCB of the winners (the best `best` or `fraction`), bootstrap interval over pairs."""
    mcb, drops = np.asarray(mcb, float), np.asarray(drops, float)
    n = len(mcb)
    k = n_winners(n, best, fraction)
    order = np.argsort(drops, kind="stable")[:k]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boot_drops, boot_mcb = drops[idx], mcb[idx]
    top = np.argsort(boot_drops, axis=1, kind="stable")[:, :k]
    centers = np.median(np.take_along_axis(boot_mcb, top, axis=1), axis=1)
    bests = boot_drops.min(axis=1)
    a = (1 - level) / 2
    return OptimalMCB(regime, n, k,
                      Interval(float(np.median(mcb[order])), float(np.quantile(centers, a)),
                               float(np.quantile(centers, 1 - a))),
                      (float(mcb[order].min()), float(mcb[order].max())),
                      Interval(float(drops.min()), float(np.quantile(bests, a)),
                               float(np.quantile(bests, 1 - a))),
                      uniform_mcb)


Form = tuple[Callable[..., np.ndarray], tuple[str, ...], Callable[[np.ndarray, np.ndarray], list[float]]]


def _p0_power(x: np.ndarray, y: np.ndarray) -> list[float]:
    pos = (x > 0) & (y > 0)
    if pos.sum() >= 2:
        b, la = np.polyfit(np.log(x[pos]), np.log(y[pos]), 1)
        return [float(np.exp(la)), float(b)]
    return [float(np.mean(y)) or 1.0, 1.0]


def _p0_exp(x: np.ndarray, y: np.ndarray) -> list[float]:
    if (y > 0).sum() >= 2:
        b, la = np.polyfit(x[y > 0], np.log(y[y > 0]), 1)
        return [float(np.exp(la)), float(b)]
    return [float(np.mean(y)) or 1.0, 0.0]


def _p0_linear(x: np.ndarray, y: np.ndarray) -> list[float]:
    b, a = np.polyfit(x, y, 1)
    return [float(a), float(b)]


def _p0_inverse(x: np.ndarray, y: np.ndarray) -> list[float]:
    b, a = np.polyfit(1.0 / np.maximum(1.0 - x, 1e-6), y, 1)
    return [float(a), float(b)]


FORMS: dict[str, Form] = {
    "power": (lambda x, a, b: a * np.power(x, b), ("a", "b"), _p0_power),
    "exponential": (lambda x, a, b: a * np.exp(b * x), ("a", "b"), _p0_exp),
    "linear": (lambda x, a, b: a + b * x, ("a", "b"), _p0_linear),
    "inverse": (lambda x, a, b: a + b / np.maximum(1.0 - x, 1e-6), ("a", "b"), _p0_inverse),
}
LAW_FORMS = ("power", "exponential", "linear")  # drop = f(optimal mCB)
MCB_CURVE_FORMS = ("exponential", "linear", "inverse")  # optimal mCB = f(FLOPs reduction)


class Candidate(NamedTuple):
    """One functional form fitted to the points: its AICc and R²."""

    form: str
    params: list[float]
    aicc: float
    r2: float


class LawFit(NamedTuple):
    """The chosen form (lowest AICc), its parameters with bootstrap intervals, R², the points."""

    form: str
    names: tuple[str, ...]
    params: list[Interval]
    r2: float
    aicc: float
    x: list[float]
    y: list[float]
    candidates: list[Candidate]
    samples: np.ndarray  # (n_boot, k) bootstrap parameter draws (for predictions)

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        """Evaluate the fitted law at x."""
        return FORMS[self.form][0](np.asarray(x, float), *[p.estimate for p in self.params])

    def band(self, x: np.ndarray | float, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap interval of the law's value at x."""
        f = FORMS[self.form][0]
        x = np.atleast_1d(np.asarray(x, float))
        with np.errstate(all="ignore"):
            vals = np.stack([f(x, *s) for s in self.samples])
        a = (1 - level) / 2
        return np.nanquantile(vals, a, axis=0), np.nanquantile(vals, 1 - a, axis=0)


def _fit_form(form: str, x: np.ndarray, y: np.ndarray, p0: list[float] | None = None
              ) -> list[float] | None:
    """Least-squares parameters of one form, or None where it does not converge."""
    from scipy.optimize import curve_fit

    f, _, guess = FORMS[form]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            p, _ = curve_fit(f, x, y, p0=p0 or guess(x, y), maxfev=20000)
    except (RuntimeError, ValueError, TypeError):
        return None
    if not np.all(np.isfinite(p)) or not np.all(np.isfinite(f(x, *p))):
        return None
    return [float(v) for v in p]


def _aicc(rss: float, n: int, k: int) -> float:
    """Small-sample AIC of a least-squares fit with k parameters (and the noise variance)."""
    kk = k + 1
    aic = n * math.log(max(rss, 1e-300) / n) + 2 * kk
    if n - kk - 1 <= 0:  # too few points for the small-sample term: plain AIC
        return aic
    return aic + 2 * kk * (kk + 1) / (n - kk - 1)


def fit_law(x: Sequence[float], y: Sequence[float], *, forms: Sequence[str] = LAW_FORMS,
            n_boot: int = 1000, level: float = 0.95, seed: int = 0, what: str = "the law",
            draws: tuple[np.ndarray, np.ndarray] | None = None) -> LawFit:
    """Fit each form, keep the lowest AICc, bootstrap its parameters over the points (pairs).

    With `draws` (x and y replicates, (n_boot, points) each, e.g. the trials of every regime
    resampled), the chosen form is refitted to each replicate instead (a two-stage bootstrap);
    the samples then keep one row per replicate, NaN where a refit fails, so two laws fitted to
    the same replicates stay paired row by row.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    need = 4  # two parameters, the noise, and one point of freedom for AICc
    if len(x) < need:
        raise EvopruneError(f"{what} needs at least {need} regimes (points), got {len(x)}: "
                            "search more regimes")
    candidates = []
    for form in forms:
        p = _fit_form(form, x, y)
        if p is None:
            continue
        pred = FORMS[form][0](x, *p)
        rss = float(np.sum((y - pred) ** 2))
        tss = float(np.sum((y - y.mean()) ** 2))
        r2 = 1 - rss / tss if tss > 0 else (1.0 if rss < 1e-12 else 0.0)
        candidates.append(Candidate(form, p, _aicc(rss, len(x), len(p)), r2))
    if not candidates:
        raise EvopruneError(f"no functional form fits {what} to these {len(x)} points")
    best = min(candidates, key=lambda c: c.aicc)
    a = (1 - level) / 2
    if draws is not None:
        samples = refit_many(best.form, draws[0], draws[1], best.params)
        params = [Interval(best.params[j], float(np.nanquantile(samples[:, j], a)),
                           float(np.nanquantile(samples[:, j], 1 - a)))
                  for j in range(len(best.params))]
        return LawFit(best.form, FORMS[best.form][1], params, best.r2, best.aicc,
                      [float(v) for v in x], [float(v) for v in y], candidates, samples)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if len(np.unique(x[i])) < 2:
            continue
        p = _fit_form(best.form, x[i], y[i], best.params)
        if p is not None:
            boot.append(p)
    samples = np.array(boot) if boot else np.array([best.params])
    params = [Interval(best.params[j], float(np.quantile(samples[:, j], a)),
                       float(np.quantile(samples[:, j], 1 - a))) for j in range(len(best.params))]
    return LawFit(best.form, FORMS[best.form][1], params, best.r2, best.aicc,
                  [float(v) for v in x], [float(v) for v in y], candidates, samples)


class Prediction(NamedTuple):
    """A predicted best drop for a regime not yet searched, through the optimal-mCB curve."""

    c_flops: float
    mcb: Interval
    drop: Interval


def predict(curve: LawFit, law: LawFit, c_flops: float, level: float = 0.95) -> Prediction:
    """Best reachable drop at `c_flops`: law(curve(1 − c_flops)), intervals from both bootstraps."""
    if not 0 < c_flops <= 1:
        raise EvopruneError(f"c_flops must be in (0, 1], got {c_flops}")
    x = 1.0 - c_flops
    m = float(curve(x))
    fc, fl = FORMS[curve.form][0], FORMS[law.form][0]
    n = min(len(curve.samples), len(law.samples))
    with np.errstate(all="ignore"):
        ms = np.array([fc(np.array([x]), *curve.samples[i])[0] for i in range(len(curve.samples))])
        ds = np.array([fl(np.array([ms[i]]), *law.samples[i])[0] for i in range(n)])
    a = (1 - level) / 2
    return Prediction(c_flops, Interval(m, float(np.nanquantile(ms, a)), float(np.nanquantile(ms, 1 - a))),
                      Interval(float(law(m)), float(np.nanquantile(ds, a)),
                               float(np.nanquantile(ds, 1 - a))))


class Fidelity(NamedTuple):
    """Rank agreement of the proxy with full retraining: Kendall τ and Spearman ρ."""

    n: int
    kendall_tau: float
    kendall_p: float
    spearman_rho: float
    spearman_p: float


def fidelity(proxy: Sequence[float], retrained: Sequence[float]) -> Fidelity:
    """Kendall τ and Spearman ρ between proxy and retrained drops (needs 3 pairs or more)."""
    from scipy.stats import kendalltau, spearmanr

    if len(proxy) < 3:
        raise EvopruneError(f"proxy fidelity needs at least 3 retrained trials, got {len(proxy)}")
    t = kendalltau(proxy, retrained)
    r = spearmanr(proxy, retrained)
    return Fidelity(len(proxy), float(t.statistic), float(t.pvalue), float(r.statistic),
                    float(r.pvalue))


def winners_median_draws(mcb: np.ndarray, drops: np.ndarray, k: int, idx: np.ndarray
                         ) -> np.ndarray:
    """Median mCB of the best k of each resample (rows of `idx` index the trials)."""
    top = np.argsort(drops[idx], axis=1, kind="stable")[:, :k]
    return np.median(np.take_along_axis(mcb[idx], top, axis=1), axis=1)


class RegimeLimit(NamedTuple):
    """A regime's optimal mCB (winners' median) and limit (a low drop quantile), with the draws
    of a bootstrap over its trials (the first stage of a two-stage bootstrap)."""

    regime: tuple[str, float]
    n: int
    n_winners: int
    quantile: float
    center: Interval
    limit: Interval
    center_draws: np.ndarray  # (n_boot,)
    limit_draws: np.ndarray  # (n_boot,)


def regime_limit(mcb: np.ndarray, drops: np.ndarray, *, regime: tuple[str, float] = ("flops", 0.0),
                 fraction: float = 0.1, quantile: float = 0.05, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> RegimeLimit:
    """Optimal mCB and the `quantile` of the drops (the regime's limit), with the draws of a
    bootstrap over the trials."""
    mcb, drops = np.asarray(mcb, float), np.asarray(drops, float)
    n = len(mcb)
    k = n_winners(n, fraction=fraction)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    centers = winners_median_draws(mcb, drops, k, idx)
    limits = np.quantile(drops[idx], quantile, axis=1)
    a = (1 - level) / 2
    center = float(np.median(mcb[np.argsort(drops, kind="stable")[:k]]))
    limit = float(np.quantile(drops, quantile))
    return RegimeLimit(regime, n, k, quantile,
                       Interval(center, *map(float, np.quantile(centers, [a, 1 - a]))),
                       Interval(limit, *map(float, np.quantile(limits, [a, 1 - a]))),
                       centers, limits)


def refit_many(form: str, x: np.ndarray, y: np.ndarray, p0: Sequence[float], *,
               iterations: int = 60) -> np.ndarray:
    """Least-squares parameters of one form for each row of (x, y), all rows at once
    (Levenberg–Marquardt from p0, numeric Jacobian); NaN rows where a fit does not converge."""
    f = FORMS[form][0]
    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    rows, k = x.shape[0], len(p0)
    p = np.tile(np.asarray(p0, float), (rows, 1))
    lam = np.full(rows, 1e-3)

    def model(q: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return f(x, *[q[:, j:j + 1] for j in range(k)])

    def rss_of(q: np.ndarray) -> np.ndarray:
        r = np.sum((y - model(q)) ** 2, axis=1)
        return np.where(np.isfinite(r), r, np.inf)

    rss = rss_of(p)
    eye = np.eye(k)
    for _ in range(iterations):
        r = y - model(p)
        jac = np.empty((rows, x.shape[1], k))
        for j in range(k):
            h = 1e-6 * np.maximum(np.abs(p[:, j]), 1e-3)
            up, down = p.copy(), p.copy()
            up[:, j] += h
            down[:, j] -= h
            jac[:, :, j] = (model(up) - model(down)) / (2 * h[:, None])
        jtj = np.einsum("rni,rnj->rij", jac, jac)
        jtr = np.einsum("rni,rn->ri", jac, r)
        diag = np.einsum("rii->ri", jtj)[:, :, None] * eye
        damp = jtj + lam[:, None, None] * (diag + 1e-12 * eye)
        ok = np.all(np.isfinite(damp), axis=(1, 2)) & np.all(np.isfinite(jtr), axis=1)
        step = np.zeros_like(p)
        try:
            step[ok] = np.linalg.solve(damp[ok], jtr[ok][:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step[ok] = np.stack([np.linalg.lstsq(d, v, rcond=None)[0]
                                 for d, v in zip(damp[ok], jtr[ok])])
        trial = p + step
        new = rss_of(trial)
        better = new < rss
        p[better], rss[better] = trial[better], new[better]
        lam = np.where(better, lam / 3, lam * 4)
        if np.all(np.abs(step) <= 1e-10 * (np.abs(p) + 1e-10)):
            break
    p[~np.isfinite(rss)] = np.nan
    return p


def _kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of each row pair of x and y, (rows, n) each."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    n = x.shape[1]
    pairs = n * (n - 1)
    concord = np.sum(sx * sy, axis=(1, 2))
    tx = pairs - np.sum(sx == 0, axis=(1, 2)) + n  # ordered pairs untied in x
    ty = pairs - np.sum(sy == 0, axis=(1, 2)) + n
    with np.errstate(all="ignore"):
        return concord / np.sqrt(tx * ty)


class TauInterval(NamedTuple):
    """Kendall τ-b with a bootstrap interval (pairs resampled) and scipy's p against τ = 0."""

    n: int
    tau: Interval
    p: float


def unselected_fidelity(proxy: Sequence[float], retrained: Sequence[float], *,
                        n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> TauInterval:
    """The proxy's fidelity on recipes retrained without selection: Kendall τ-b of the proxy's
    (validation) drops against the retrained (test) drops, percentile bootstrap over recipes."""
    from scipy.stats import kendalltau

    x, y = np.asarray(proxy, float), np.asarray(retrained, float)
    if len(x) < 3 or len(x) != len(y):
        raise EvopruneError(f"fidelity needs at least 3 pairs of drops, got {len(x)} and {len(y)}")
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    taus = _kendall_tau_b(x[idx], y[idx])
    t = kendalltau(x, y)
    a = (1 - level) / 2
    lo, hi = np.nanquantile(taus, [a, 1 - a]) if np.any(np.isfinite(taus)) else (np.nan, np.nan)
    return TauInterval(len(x), Interval(float(t.statistic), float(lo), float(hi)), float(t.pvalue))


def selected_values(x: Sequence[float], y: Sequence[float], x_draws: np.ndarray,
                    y_draws: np.ndarray, at: np.ndarray | float,
                    forms: Sequence[str] = LAW_FORMS) -> np.ndarray:
    """Refit every form to each replicate (rows of x_draws, y_draws), keep each replicate's
    lowest-AICc form and evaluate it at `at` (one value, or one per replicate): a bootstrap
    that carries the choice of form too. NaN where no form fits a replicate."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rows, n = np.shape(y_draws)
    at = np.broadcast_to(np.asarray(at, float), (rows,))
    best_aicc = np.full(rows, np.inf)
    out = np.full(rows, np.nan)
    for form in forms:
        p0 = _fit_form(form, x, y)
        if p0 is None:
            continue
        p = refit_many(form, x_draws, y_draws, p0)
        f = FORMS[form][0]
        with np.errstate(all="ignore"):
            rss = np.sum((y_draws - f(x_draws, *[p[:, j:j + 1] for j in range(p.shape[1])])) ** 2,
                         axis=1)
            kk = p.shape[1] + 1
            aicc = n * np.log(np.maximum(rss, 1e-300) / n) + 2 * kk + (
                2 * kk * (kk + 1) / (n - kk - 1) if n - kk - 1 > 0 else 0.0)
            aicc = np.where(np.isfinite(aicc), aicc, np.inf)
            value = f(at, *[p[:, j] for j in range(p.shape[1])])
        better = (aicc < best_aicc) & np.isfinite(value)
        best_aicc[better], out[better] = aicc[better], value[better]
    return out
