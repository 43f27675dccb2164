"""Figures of the analysis (the paper's Figs. 2, 3 and 5): the only module that imports matplotlib.

matplotlib is imported inside the functions (Agg backend), so importing this module stays light.
Each `figure_*` function draws one figure and returns the matplotlib Figure (the caller closes
it); its `plot_*` twin saves that figure as a PNG at `path`, closes it and returns the path. An
empty input gives a figure that says "no data" rather than an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evoprune.analysis import observations
from evoprune.analysis.load import regime_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from evoprune.analysis.edf import RegimeEDFs, Winner
    from evoprune.analysis.fit import Fidelity, LawFit, OptimalMCB
    from evoprune.analysis.load import StudyData

DPI = 120
MAX_COLS = 4
QUANTITY_LABELS = {"recipe_std": "recipe std", "flops_ratio": "FLOPs ratio",
                   "params_ratio": "params ratio", "mcb": "mCB"}
FORMULAS = {"power": "{a:.3g}·x^{b:.3g}", "exponential": "{a:.3g}·exp({b:.3g}·x)",
            "linear": "{a:.3g} + {b:.3g}·x", "inverse": "{a:.3g} + {b:.3g}/(1 − x)"}


def _pyplot() -> Any:
    """Select the Agg backend and return matplotlib.pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> str:
    """Save `fig` as a PNG at `path` (creating its folder), close it and return the path."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return str(path)


def _no_data(ax: Any, text: str = "no data") -> None:
    """Write `text` in the middle of an axes with no ticks."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12,
            color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _empty_figure(title: str) -> Figure:
    """A figure that says "no data" under `title`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    _no_data(ax)
    ax.set_title(title)
    return fig


def _grid(n: int, width: float, height: float, **kw: Any) -> tuple[Any, list[Any]]:
    """A figure with `n` panels, at most MAX_COLS a row; the unused panels are hidden."""
    plt = _pyplot()
    cols = min(n, MAX_COLS)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _colors(labels: Iterable[str]) -> dict[str, str]:
    """One colour per distinct label, in order of first appearance."""
    out: dict[str, str] = {}
    for label in labels:
        if label not in out:
            out[label] = f"C{len(out) % 10}"
    return out


def _legend(ax: Any, **kw: Any) -> None:
    """Draw the axes' legend when something in it carries a label."""
    if ax.get_legend_handles_labels()[1]:
        ax.legend(**kw)


def _finite(*values: float | None) -> bool:
    """Whether every value is a finite number."""
    return all(v is not None and math.isfinite(v) for v in values)


def _err(est: float, lo: float, hi: float) -> list[float]:
    """Non-negative (below, above) error-bar lengths of an interval around its estimate."""
    below = est - lo if _finite(lo) else 0.0
    above = hi - est if _finite(hi) else 0.0
    return [max(below, 0.0), max(above, 0.0)]


def _dense(values: Sequence[float], lo: float = -math.inf, hi: float = math.inf,
           n: int = 200) -> np.ndarray:
    """A dense grid over `values`, padded by 5% of their span, clipped to [lo, hi]."""
    v = np.asarray([x for x in values if _finite(x)], dtype=float)
    a, b = float(v.min()), float(v.max())
    pad = 0.05 * (b - a) if b > a else 0.05 * max(abs(a), 1.0)
    return np.linspace(max(a - pad, lo), min(b + pad, hi), n)


def _law_label(law: LawFit, prefix: str) -> str:
    """A legend entry for a fitted law: its formula and R²."""
    p = [q.estimate for q in law.params]
    fmt = FORMULAS.get(law.form)
    formula = fmt.format(a=p[0], b=p[1]) if fmt and len(p) == 2 else law.form
    return f"{prefix}: {formula} (R² {law.r2:.2f})"


def _draw_law(ax: Any, law: LawFit, xs: np.ndarray, scale: float, color: str, style: str,
              label: str) -> list[float]:
    """Draw `law` over xs (x axis scaled by `scale`) with its band; return its finite values."""
    with np.errstate(all="ignore"):
        ys = np.asarray(law(xs), dtype=float)
        lo, hi = law.band(xs)
    ys = np.where(np.isfinite(ys), ys, np.nan)
    lo = np.where(np.isfinite(lo), lo, np.nan)
    hi = np.where(np.isfinite(hi), hi, np.nan)
    ax.fill_between(xs * scale, lo, hi, color=color, alpha=0.15, linewidth=0)
    ax.plot(xs * scale, ys, style, color=color, label=label)
    return [float(y) for y in ys if math.isfinite(y)]


def _set_ylim(ax: Any, values: Sequence[float]) -> None:
    """Fit the y axis to `values` (so that a wild bootstrap band does not squash the points)."""
    v = [x for x in values if _finite(x)]
    if not v:
        return
    a, b = min(v), max(v)
    pad = 0.08 * (b - a) if b > a else 0.1 * max(abs(a), 1e-3)
    ax.set_ylim(a - pad, b + pad)


def figure_edfs(regimes: list[RegimeEDFs]) -> Figure:
    """Plot each space's accuracy-drop EDF with its bootstrap band, one panel per regime."""
    if not regimes:
        return _empty_figure("accuracy-drop EDFs")
    fig, axes = _grid(len(regimes), 4.6, 3.8)
    colors = _colors(s.label for r in regimes for s in r.spaces)
    for ax, r in zip(axes, regimes):
        ax.set_title(regime_name(r.regime))
        if not r.spaces:
            _no_data(ax)
            continue
        for s in r.spaces:
            c = colors[s.label]
            ax.fill_between(s.grid, s.lo, s.hi, step="post", color=c, alpha=0.2, linewidth=0)
            ax.step(s.grid, s.F, where="post", color=c, label=f"{s.label} (n={s.n})")
        if r.uniform_drop is not None and math.isfinite(r.uniform_drop):
            ax.axvline(r.uniform_drop, color="k", linestyle="--", linewidth=1,
                       label=f"uniform ({r.uniform_drop:.2f} pp)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("proxy accuracy drop (pp)")
        ax.set_ylabel("fraction of subnetworks with smaller drop")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _population(study: StudyData, quantity: str) -> np.ndarray:
    """A quantity over a study's distinct searched networks (all trials when none), finite only."""
    v = np.asarray(getattr(study, quantity), dtype=float)
    mask = np.asarray(study.distinct, dtype=bool)
    if mask.shape == v.shape and mask.any():
        v = v[mask]
    return v[np.isfinite(v)]


def figure_distributions(groups: dict[tuple[str, float], list[StudyData]]) -> Figure:
    """Plot each space's recipe std, FLOPs, params and mCB histograms, a column per regime."""
    if not groups:
        return _empty_figure("distributions of the spaces")
    plt = _pyplot()
    quantities = list(QUANTITY_LABELS)
    ncols = len(groups)
    fig, axes = plt.subplots(len(quantities), ncols, squeeze=False,
                             figsize=(max(5.0, 3.8 * ncols), 2.6 * len(quantities)))
    colors = _colors(s.label for g in groups.values() for s in g)
    for j, (regime, studies) in enumerate(groups.items()):
        axes[0, j].set_title(regime_name(regime))
        for i, q in enumerate(quantities):
            ax = axes[i, j]
            pops = [(s.label, _population(s, q)) for s in studies]
            pops = [(label, v) for label, v in pops if len(v)]
            if not pops:
                _no_data(ax)
                ax.set_xlabel(QUANTITY_LABELS[q])
                continue
            allv = np.concatenate([v for _, v in pops])
            a, b = float(allv.min()), float(allv.max())
            if b - a < 1e-9:
                pad = max(0.05 * abs(a), 1e-3)
                a, b = a - pad, b + pad
            nbins = int(np.clip(round(math.sqrt(len(allv))), 5, 30))
            bins = np.linspace(a, b, nbins + 1)
            for label, v in pops:
                ax.hist(v, bins=bins, density=True, histtype="step", linewidth=1.4,
                        color=colors[label], label=f"{label} (n={len(v)})")
            ax.set_xlabel(QUANTITY_LABELS[q])
            if j == 0:
                ax.set_ylabel("density")
            ax.grid(alpha=0.3)
            if i == 0:
                _legend(ax, fontsize=7)
    fig.tight_layout()
    return fig


def figure_winning_recipes(winners: dict[tuple[str, float], list[Winner]]) -> Figure:
    """Plot each space's winning recipe (pruning ratio per unit), one panel per regime."""
    if not winners:
        return _empty_figure("winning recipes")
    from matplotlib.ticker import MaxNLocator

    fig, axes = _grid(len(winners), 4.8, 3.6)
    colors = _colors(w.label for ws in winners.values() for w in ws)
    for ax, (regime, ws) in zip(axes, winners.items()):
        ax.set_title(regime_name(regime))
        ws = [w for w in ws if len(w.recipe)]
        if not ws:
            _no_data(ax)
            continue
        for w in ws:
            uniform = " (uniform)" if len(w.recipe) > 1 and np.ptp(w.recipe) < 1e-9 else ""
            ax.plot(np.arange(len(w.recipe)), w.recipe, marker="o", markersize=3, linewidth=1.2,
                    color=colors[w.label], label=f"{w.label}: drop {w.val_drop:.2f} pp{uniform}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("unit index")
        ax.set_ylabel("pruning ratio")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7)
    fig.tight_layout()
    return fig


def figure_best(best: dict[tuple[str, float], list[Winner]]) -> Figure:
    """Plot the best subnetworks' params (FLOPs) ratio and mCB per regime (Fig. 3)."""
    groups = {r: ws for r, ws in best.items() if ws}
    if not groups:
        return _empty_figure("best subnetworks")
    plt = _pyplot()
    kinds = list(dict.fromkeys(r[0] for r in groups))
    counts = [sum(r[0] == kind for r in groups) for kind in kinds]
    widths = [max(4.2, 1.1 * c + 2.0) for c in counts]
    fig, axes = plt.subplots(2, len(kinds), figsize=(sum(widths), 6.4), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    colors = _colors(w.label for ws in groups.values() for w in ws)
    rng = np.random.default_rng(0)
    for j, kind in enumerate(kinds):
        regimes = [r for r in groups if r[0] == kind]
        ratio = "params_ratio" if kind == "flops" else "flops_ratio"
        for i, (attr, ylabel) in enumerate(((ratio, QUANTITY_LABELS[ratio]), ("mcb", "mCB"))):
            ax = axes[i, j]
            shown: set[str] = set()
            for x, r in enumerate(regimes):
                ws = groups[r]
                v = np.array([getattr(w, attr) for w in ws], dtype=float)
                ok = np.isfinite(v)
                if ok.sum() >= 2:
                    ax.boxplot(v[ok], positions=[x], widths=0.5, showfliers=False,
                               medianprops={"color": "k"}, boxprops={"color": "0.5"},
                               whiskerprops={"color": "0.5"}, capprops={"color": "0.5"})
                jitter = rng.uniform(-0.15, 0.15, len(ws))
                for w, dx, val in zip(ws, jitter, v):
                    if not math.isfinite(val):
                        continue
                    label = w.label if w.label not in shown else None
                    shown.add(w.label)
                    ax.scatter(x + dx, val, s=14, color=colors[w.label], alpha=0.8,
                               edgecolors="none", label=label, zorder=3)
            ax.set_xticks(range(len(regimes)))
            ax.set_xticklabels([f"{r[1]:g}\n(n={len(groups[r])})" for r in regimes])
            ax.set_xlim(-0.6, len(regimes) - 0.4)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, axis="y")
            if i == 0:
                ax.set_title(f"best subnetworks per regime (c_{kind})")
                _legend(ax, fontsize=7, title="space", title_fontsize=7)
            else:
                ax.set_xlabel(f"c_{kind}")
    fig.tight_layout()
    return fig


def figure_mcb_curve(optimal: list[OptimalMCB], curve: LawFit | None) -> Figure:
    """Plot each FLOPs regime's optimal mCB against the FLOPs reduction, with the fitted curve."""
    pts = sorted((o for o in optimal if o.regime[0] == "flops" and _finite(o.center.estimate)),
                 key=lambda o: o.regime[1], reverse=True)
    title = "optimal mCB against FLOPs reduction"
    if not pts and curve is None:
        return _empty_figure(title)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ys: list[float] = []
    x = np.array([100.0 * (1.0 - o.regime[1]) for o in pts])
    if pts:
        est = [o.center.estimate for o in pts]
        lo = [o.winners_range[0] for o in pts]
        hi = [o.winners_range[1] for o in pts]
        ax.vlines(x, lo, hi, color="C0", linewidth=9, alpha=0.2, label="winners' mCB range")
        err = np.array([_err(o.center.estimate, o.center.lo, o.center.hi) for o in pts]).T
        ax.errorbar(x, est, yerr=err, fmt="o", color="C0", capsize=3, zorder=3,
                    label="optimal mCB (median of winners)")
        ys += est + [v for v in lo + hi if _finite(v)]
        ys += [o.center.lo for o in pts] + [o.center.hi for o in pts]
        uni = [(xi, o.uniform_mcb) for xi, o in zip(x, pts) if _finite(o.uniform_mcb)]
        if uni:
            ax.plot([u[0] for u in uni], [u[1] for u in uni], "--", marker="s", markersize=4,
                    color="tab:orange", label="uniform recipe")
            ys += [float(u[1]) for u in uni]
    if curve is not None and (curve.x or len(x)):
        # the curve is fitted on the reduction as a fraction (1 − c_flops); percent if it is > 1
        scale = 1.0 if max(curve.x, default=0.0) > 1.0 else 100.0
        xs = _dense(list(curve.x) + [v / scale for v in x], 0.0, 0.999 if scale == 100.0 else 99.9)
        ys += _draw_law(ax, curve, xs, scale, "red", "--", _law_label(curve, "fit"))
    _set_ylim(ax, ys)
    ax.set_xlabel("FLOPs reduction (%)")
    ax.set_ylabel("optimal mCB")
    ax.set_title(title if curve is None else f"{title}: {curve.form}, R² {curve.r2:.2f}")
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    return fig


def figure_law(optimal: list[OptimalMCB], law: LawFit | None,
               retrained: LawFit | None = None) -> Figure:
    """Plot each regime's best drop against its optimal mCB, with the fitted drop-limit law."""
    pts = [o for o in optimal if _finite(o.center.estimate, o.best_drop.estimate)]
    if not pts and law is None and retrained is None:
        return _empty_figure("best accuracy drop against optimal mCB")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    xs_all: list[float] = []
    ys: list[float] = []
    for kind in dict.fromkeys(o.regime[0] for o in pts):
        sel = [o for o in pts if o.regime[0] == kind]
        x = [o.center.estimate for o in sel]
        y = [o.best_drop.estimate for o in sel]
        xerr = np.array([_err(o.center.estimate, o.center.lo, o.center.hi) for o in sel]).T
        yerr = np.array([_err(o.best_drop.estimate, o.best_drop.lo, o.best_drop.hi)
                         for o in sel]).T
        flops = kind == "flops"
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o" if flops else "s", color="C0",
                    mfc="C0" if flops else "white", capsize=3, zorder=3,
                    label=f"best proxy drop ({kind} regimes)")
        for o, xi, yi in zip(sel, x, y):
            ax.annotate(regime_name(o.regime), (xi, yi), xytext=(5, 5),
                        textcoords="offset points", fontsize=7)
        xs_all += x
        ys += y + [v for o in sel for v in (o.best_drop.lo, o.best_drop.hi) if _finite(v)]
    if retrained is not None and retrained.x:
        ax.scatter(retrained.x, retrained.y, marker="D", s=22, color="C2", zorder=3,
                   label="best retrained drop")
        xs_all += list(retrained.x)
        ys += list(retrained.y)
    for fit, color, prefix in ((law, "C0", "law"), (retrained, "C2", "retrained law")):
        if fit is None:
            continue
        grid = _dense(xs_all + list(fit.x))
        ys += _draw_law(ax, fit, grid, 1.0, color, "-", _law_label(fit, prefix))
    _set_ylim(ax, ys)
    ax.set_xlabel("optimal mCB")
    ax.set_ylabel("best accuracy drop (pp)")
    title = "no law fitted" if law is None else f"{law.form} law, R² {law.r2:.2f}"
    if retrained is not None:
        title += f"; retrained: {retrained.form} law, R² {retrained.r2:.2f}"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    return fig


def figure_fidelity(proxy: list[float], retrained: list[float], labels: list[str],
                    fid: Fidelity | None) -> Figure:
    """Scatter proxy drops against retrained drops, with Kendall τ and Spearman ρ in the title."""
    labels = list(labels) + [""] * max(0, len(proxy) - len(labels))
    rows = [(float(p), float(r), lab) for p, r, lab in zip(proxy, retrained, labels)
            if _finite(p, r)]
    title = "proxy fidelity"
    if fid is not None:
        title += (f": Kendall τ {fid.kendall_tau:.2f} (p {fid.kendall_p:.2g}), "
                  f"Spearman ρ {fid.spearman_rho:.2f} (p {fid.spearman_p:.2g}), n={fid.n}")
    if not rows:
        return _empty_figure(title)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter([r[0] for r in rows], [r[1] for r in rows], s=24, color="C0", zorder=3)
    for p, r, lab in rows:
        if lab:
            ax.annotate(lab, (p, r), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_xlabel("proxy accuracy drop (pp)")
    ax.set_ylabel("retrained accuracy drop (pp)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def figure_sampler_race(studies: list[StudyData], quantile: float = 0.1) -> Figure:
    """Best drop so far against trials, one line per run, coloured by sampler; the random runs'
    `quantile` of drops as the threshold (observation e)."""
    if not studies:
        return _empty_figure("NSGA-II against random sampling")

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"nsga2": "C3", "random": "C0"}
    shown: set[str] = set()
    for s in studies:
        curve = observations.best_so_far(s)
        label = None if s.sampler in shown else s.sampler
        shown.add(s.sampler)
        ax.step(np.arange(1, len(curve) + 1), curve, where="post", alpha=0.8,
                color=colors.get(s.sampler, "C7"), label=label)
    rnd = [s.val_drop[~s.is_uniform] for s in studies if s.sampler == "random"]
    if rnd:
        t = float(np.quantile(np.concatenate(rnd), quantile))
        ax.axhline(t, color="k", linestyle="--", linewidth=1,
                   label=f"random runs' best {quantile:.0%} ({t:.2f} pp)")
    ax.set_xlabel("COMPLETE trials")
    ax.set_ylabel("best proxy accuracy drop so far (pp)")
    ax.set_title("NSGA-II against random sampling, same space and budget", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    return fig


def plot_edfs(regimes: list[RegimeEDFs], path: str | Path) -> str:
    """Save the figure of `figure_edfs` as a PNG at `path`, close it and return the path."""
    return _save(figure_edfs(regimes), path)


def plot_distributions(groups: dict[tuple[str, float], list[StudyData]], path: str | Path) -> str:
    """Save the figure of `figure_distributions` as a PNG at `path`, close it and return the path."""
    return _save(figure_distributions(groups), path)


def plot_winning_recipes(winners: dict[tuple[str, float], list[Winner]], path: str | Path) -> str:
    """Save the figure of `figure_winning_recipes` as a PNG at `path`, close it and return the path."""
    return _save(figure_winning_recipes(winners), path)


def plot_best(best: dict[tuple[str, float], list[Winner]], path: str | Path) -> str:
    """Save the figure of `figure_best` as a PNG at `path`, close it and return the path."""
    return _save(figure_best(best), path)


def plot_mcb_curve(optimal: list[OptimalMCB], curve: LawFit | None, path: str | Path) -> str:
    """Save the figure of `figure_mcb_curve` as a PNG at `path`, close it and return the path."""
    return _save(figure_mcb_curve(optimal, curve), path)


def plot_law(optimal: list[OptimalMCB], law: LawFit | None, path: str | Path,
             retrained: LawFit | None = None) -> str:
    """Save the figure of `figure_law` as a PNG at `path`, close it and return the path."""
    return _save(figure_law(optimal, law, retrained), path)


def plot_fidelity(proxy: list[float], retrained: list[float], labels: list[str],
                  fid: Fidelity | None, path: str | Path) -> str:
    """Save the figure of `figure_fidelity` as a PNG at `path`, close it and return the path."""
    return _save(figure_fidelity(proxy, retrained, labels, fid), path)


def plot_sampler_race(studies: list[StudyData], path: str | Path, quantile: float = 0.1) -> str:
    """Save the figure of `figure_sampler_race` as a PNG at `path`, close it and return the path."""
    return _save(figure_sampler_race(studies, quantile), path)
