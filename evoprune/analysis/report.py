"""The analysis of a set of studies: compute everything (`compute`), then write figures,
report.md and summary.json (`write`). `run_analysis` is what `evoprune analyze` calls.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evoprune import __version__
from evoprune.analysis import plots
from evoprune.analysis.edf import (
    Distribution,
    RegimeEDFs,
    Winner,
    best_subnetworks,
    distributions,
    population,
    regime_edfs,
    winning_recipe,
)
from evoprune.analysis.fit import (
    MCB_CURVE_FORMS,
    Fidelity,
    LawFit,
    OptimalMCB,
    Prediction,
    fidelity,
    fit_law,
    optimal_mcb,
    predict,
)
from evoprune.analysis.load import (
    StudyData,
    by_regime,
    load_studies,
    proxy_warnings,
    regime_name,
)
from evoprune.analysis.regime_stats import tau_within_regimes
from evoprune.errors import EvopruneError
from evoprune.store.storage import open_storage

ARTIFACT_DIR = "studies/artifacts"


@dataclass(frozen=True)
class AnalyzeConfig:
    """What `evoprune analyze` does."""

    storage: str
    study_names: tuple[str, ...] = ()  # empty: every study of the storage
    out: str = "analysis"
    best: int = 40  # best subnetworks per regime (Fig. 3)
    winners: int | None = None  # winners that define the optimal mCB: the best n …
    winner_fraction: float = 0.1  # … or this fraction of each regime
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0
    predict: tuple[float, ...] = ()  # c_flops of regimes not searched, for the law's prediction
    attach: bool = False
    artifact_dir: str = ARTIFACT_DIR

    def __post_init__(self) -> None:
        """Refuse settings no analysis can use."""
        if self.best < 1 or self.n_boot < 10 or not 0 < self.level < 1:
            raise EvopruneError("`best` must be at least 1, `n_boot` at least 10, `level` in (0, 1)")
        if self.winners is not None and self.winners < 1:
            raise EvopruneError(f"`winners` must be at least 1, got {self.winners}")
        if not 0 < self.winner_fraction <= 1:
            raise EvopruneError(f"`winner_fraction` must be in (0, 1], got {self.winner_fraction}")
        bad = [c for c in self.predict if not 0 < c <= 1]
        if bad:
            raise EvopruneError(f"`predict` takes c_flops values in (0, 1], got {bad}")


@dataclass
class Analysis:
    """Everything computed from the studies; plain data, no figures."""

    studies: list[StudyData]
    warnings: list[str]
    regimes: dict[tuple[str, float], list[StudyData]]
    edfs: list[RegimeEDFs]
    distributions: list[Distribution]
    winners: dict[tuple[str, float], list[Winner]]
    best: dict[tuple[str, float], list[Winner]]
    optimal: list[OptimalMCB]
    mcb_curve: LawFit | None
    law: LawFit | None
    retrained_law: LawFit | None
    predictions: list[Prediction]
    fidelity: Fidelity | None
    fidelity_pairs: list[tuple[float, float, str]]
    notes: dict[str, str] = field(default_factory=dict)  # why a fit is missing
    fidelity_regimes: list[dict[str, Any]] = field(default_factory=list)  # τ inside each regime


def compute(studies: list[StudyData], config: AnalyzeConfig, warnings: list[str] | None = None
            ) -> Analysis:
    """Compute EDFs, KS tests, distributions, winners, optimal mCB, the laws and fidelity."""
    warnings = list(warnings or [])
    groups = by_regime(studies)
    warnings += proxy_warnings(groups)
    notes: dict[str, str] = {}
    edfs = [regime_edfs(g, n_boot=config.n_boot, level=config.level, seed=config.seed)
            for g in groups.values()]
    dists = [d for s in studies for d in distributions(s)]
    winners = {r: [winning_recipe(s) for s in g] for r, g in groups.items()}
    best = {r: best_subnetworks(g, config.best) for r, g in groups.items()}
    optimal = []
    for r, g in groups.items():
        mcb = np.concatenate([s.mcb[population(s)] for s in g])  # the spaces' populations
        drops = np.concatenate([s.val_drop[population(s)] for s in g])
        uniform = [s.uniform_mcb for s in g if s.uniform_mcb is not None]
        optimal.append(optimal_mcb(mcb, drops, regime=r, best=config.winners,
                                   fraction=config.winner_fraction, n_boot=config.n_boot,
                                   level=config.level, seed=config.seed,
                                   uniform_mcb=float(np.median(uniform)) if uniform else None))
    flops = [o for o in optimal if o.regime[0] == "flops"]
    mcb_curve = law = retrained_law = None
    try:
        mcb_curve = fit_law([1 - o.regime[1] for o in flops], [o.center.estimate for o in flops],
                            forms=MCB_CURVE_FORMS, n_boot=config.n_boot, level=config.level,
                            seed=config.seed, what="the optimal-mCB curve")
    except EvopruneError as exc:
        notes["mcb_curve"] = str(exc)
    try:
        law = fit_law([o.center.estimate for o in flops], [o.best_drop.estimate for o in flops],
                      n_boot=config.n_boot, level=config.level, seed=config.seed,
                      what="the drop-limit law")
    except EvopruneError as exc:
        notes["law"] = str(exc)
    retrained_points = []
    for o in flops:
        drops = [float(np.mean(list(d.values()))) for s in groups[o.regime]
                 for d in s.retrained.values() if d]
        if drops:
            retrained_points.append((o.center.estimate, min(drops)))
    try:
        retrained_law = fit_law([p[0] for p in retrained_points], [p[1] for p in retrained_points],
                                n_boot=config.n_boot, level=config.level, seed=config.seed,
                                what="the drop-limit law on retrained drops")
    except EvopruneError as exc:
        notes["retrained_law"] = str(exc)
    predictions = []
    for c in config.predict:
        if mcb_curve is None or law is None:
            notes["predictions"] = "no prediction: " + (notes.get("mcb_curve") or notes["law"])
            break
        predictions.append(predict(mcb_curve, law, c, config.level))
    pairs = [(float(s.val_drop[list(s.numbers).index(n)]), float(np.mean(list(d.values()))),
              f"{s.label} #{n}")
             for s in studies for n, d in s.retrained.items() if d and n in set(s.numbers)]
    fid = None
    try:
        fid = fidelity([p[0] for p in pairs], [p[1] for p in pairs])
    except EvopruneError as exc:
        notes["fidelity"] = str(exc)
    return Analysis(studies, warnings, groups, edfs, dists, winners, best, optimal, mcb_curve, law,
                    retrained_law, predictions, fid, pairs, notes, regime_fidelity(groups))


def regime_fidelity(groups: dict[tuple[str, float], list[StudyData]]) -> list[dict[str, Any]]:
    """Kendall τ of proxy against mean retrained drops inside each regime (never pooled: across
    regimes the budget alone orders the drops); heuristic baselines left out."""

    per: dict[tuple[str, float], tuple[list[float], list[float]]] = {}
    for r, g in groups.items():
        for s in g:
            base = s.is_baseline if s.is_baseline is not None else np.zeros(len(s.numbers), bool)
            for n, d in s.retrained.items():
                i = np.flatnonzero(s.numbers == n)
                if d and len(i) and not base[i[0]]:
                    per.setdefault(r, ([], []))
                    per[r][0].append(float(s.val_drop[i[0]]))
                    per[r][1].append(float(np.mean(list(d.values()))))
    return tau_within_regimes(per)


def _interval(i: Any) -> dict[str, float]:
    return {"estimate": i.estimate, "lo": i.lo, "hi": i.hi}


def _law(fit: LawFit | None, note: str | None) -> dict[str, Any]:
    if fit is None:
        return {"error": note}
    return {"form": fit.form, "params": {n: _interval(p) for n, p in zip(fit.names, fit.params)},
            "r2": fit.r2, "aicc": fit.aicc, "x": fit.x, "y": fit.y,
            "candidates": [{"form": c.form, "params": c.params, "aicc": c.aicc, "r2": c.r2}
                           for c in fit.candidates]}


def _winner(w: Winner) -> dict[str, Any]:
    return w._asdict()


def summary(a: Analysis, config: AnalyzeConfig, figures: dict[str, str]) -> dict[str, Any]:
    """Every figure's data as plain JSON-ready objects (the README documents each key)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, np.ndarray):
            return clean(v.tolist())
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    regimes = []
    for e, o in zip(a.edfs, a.optimal):
        r = e.regime
        regimes.append({
            "regime": r[0], "target": r[1], "uniform_drop": e.uniform_drop,
            "spaces": [{"study": s.study, "label": s.label, "n": s.n,
                        "beats_uniform": s.beats_uniform,
                        "edf": {"x": s.grid, "F": s.F, "lo": s.lo, "hi": s.hi}}
                       for s in e.spaces],
            "ks": [k._asdict() for k in e.ks],
            "distributions": [d._asdict() for d in a.distributions
                              if d.study in {s.name for s in a.regimes[r]}],
            "winners": [_winner(w) for w in a.winners[r]],
            "best": [_winner(w) for w in a.best[r]],
            "optimal_mcb": {"n": o.n, "n_winners": o.n_winners, "center": _interval(o.center),
                            "winners_range": list(o.winners_range),
                            "best_drop": _interval(o.best_drop), "uniform_mcb": o.uniform_mcb},
        })
    return clean({
        "evoprune_version": __version__, "storage": config.storage,
        "settings": {"best": config.best, "winners": config.winners,
                     "winner_fraction": config.winner_fraction, "n_boot": config.n_boot,
                     "level": config.level, "seed": config.seed},
        "studies": [{"name": s.name, "label": s.label, "regime": s.regime[0],
                     "target": s.regime[1], "model": s.model, "dataset": s.dataset,
                     "sampler": s.sampler, "n": len(s.val_drop), "proxy": s.proxy,
                     "base_acc": s.base_acc, "uniform_drop": s.uniform_drop,
                     "best_drop": float(s.val_drop.min()), "retrained": len(s.retrained)}
                    for s in a.studies],
        "warnings": a.warnings,
        "regimes": regimes,
        "mcb_curve": _law(a.mcb_curve, a.notes.get("mcb_curve")),
        "law": _law(a.law, a.notes.get("law")),
        "retrained_law": _law(a.retrained_law, a.notes.get("retrained_law")),
        "predictions": [{"c_flops": p.c_flops, "mcb": _interval(p.mcb), "drop": _interval(p.drop)}
                        for p in a.predictions],
        "fidelity": {"within_regime": [{**r, "regime": list(r["regime"])}
                                       for r in a.fidelity_regimes],
                     "note": "Kendall τ-b inside each regime only; pooled across regimes the "
                             "budget alone orders the drops"} if a.fidelity_regimes else
        {"error": a.notes.get("fidelity", "no retrained trials")},
        "figures": figures,
    })


def _figures(a: Analysis, out: Path) -> dict[str, str]:
    """Draw every figure into `out`; return {name: file name}."""

    files = {"edfs": "edfs.png", "distributions": "distributions.png",
             "winning_recipes": "winning_recipes.png", "best": "best.png",
             "mcb_curve": "mcb_curve.png", "law": "law.png"}
    plots.plot_edfs(a.edfs, out / files["edfs"])
    plots.plot_distributions(a.regimes, out / files["distributions"])
    plots.plot_winning_recipes(a.winners, out / files["winning_recipes"])
    plots.plot_best(a.best, out / files["best"])
    plots.plot_mcb_curve(a.optimal, a.mcb_curve, out / files["mcb_curve"])
    plots.plot_law(a.optimal, a.law, out / files["law"], retrained=a.retrained_law)
    if a.fidelity_pairs:
        files["fidelity"] = "fidelity.png"
        plots.plot_fidelity([p[0] for p in a.fidelity_pairs], [p[1] for p in a.fidelity_pairs],
                            [p[2] for p in a.fidelity_pairs], None, out / files["fidelity"])
    return files


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _law_text(fit: LawFit | None, note: str | None, x: str, y: str) -> list[str]:
    if fit is None:
        return [f"Not fitted: {note}", ""]
    forms = {"power": f"{y} = a · {x}^b", "exponential": f"{y} = a · exp(b · {x})",
             "linear": f"{y} = a + b · {x}", "inverse": f"{y} = a + b / (1 − {x})"}
    params = ", ".join(f"{n} = {p.estimate:.4g} [{p.lo:.4g}, {p.hi:.4g}]"
                       for n, p in zip(fit.names, fit.params))
    cands = "; ".join(f"{c.form} AICc {c.aicc:.2f} (R² {c.r2:.3f})" for c in fit.candidates)
    return [f"Form chosen by AICc: **{fit.form}**, {forms[fit.form]}; {params} (bootstrap "
            f"intervals); R² {fit.r2:.3f} on {len(fit.x)} regimes. Candidates: {cands}.", ""]


def markdown(a: Analysis, config: AnalyzeConfig, figures: dict[str, str], seconds: float) -> str:
    """The report: every number with its interval or test, and the figures."""
    # Long but linear: the report's sections in reading order, one block of lines each.
    level = f"{100 * config.level:g}%"
    lines = ["# evoprune analysis", "",
             f"Storage `{config.storage}`, {len(a.studies)} studies, "
             f"{sum(len(s.val_drop) for s in a.studies)} COMPLETE trials; {config.n_boot} "
             f"bootstrap draws, {level} intervals, seed {config.seed}; {seconds:.1f} s.", ""]
    if a.warnings:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in a.warnings] + [""]
    lines += ["## Studies", "", "| study | space | regime | model | dataset | sampler | n | proxy "
              "(epochs, lr, batch) | uniform drop | best drop |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in a.studies:
        p = s.proxy
        lines.append(f"| {s.name} | {s.label} | {regime_name(s.regime)} | {s.model} | {s.dataset} "
                     f"| {s.sampler} | {len(s.val_drop)} | {p.get('epochs')}, {p.get('lr')}, "
                     f"{p.get('batch_size')} | {_fmt(s.uniform_drop)} | {s.val_drop.min():.2f} |")
    lines += ["", "Drops are proxy accuracy drops in percentage points (base top-1 minus the "
              "top-1 after the proxy fine-tune).", "",
              "## Accuracy-drop EDFs (Eq. 1)", "", f"![EDFs]({figures['edfs']})", "",
              "F(e) = fraction of a space's subnetworks with a drop below e; shaded: "
              f"{level} pointwise bootstrap bands; dashed: the uniform recipe.", ""]
    for e in a.edfs:
        lines += [f"### {regime_name(e.regime)}", "",
                  "| space | n | median drop | beats uniform |", "|---|---|---|---|"]
        for sp, s in zip(e.spaces, a.regimes[e.regime]):
            pop = s.val_drop[population(s)]
            lines.append(f"| {sp.label} ({sp.study}) | {sp.n} | {np.median(pop):.2f} | "
                         f"{_fmt(None if sp.beats_uniform is None else 100 * sp.beats_uniform, '.0f')}"
                         f"{'' if sp.beats_uniform is None else '%'} |")
        if e.ks:
            lines += ["", "| KS test | D | p-value |", "|---|---|---|"]
            lines += [f"| {k.a} vs {k.b} | {k.statistic:.3f} | {k.pvalue:.3g} |" for k in e.ks]
        lines.append("")
    lines += ["## Distributions and winning recipes", "",
              f"![distributions]({figures['distributions']})", "",
              f"![winning recipes]({figures['winning_recipes']})", "",
              "| space | regime | winner | drop | FLOPs | params | mCB | std |",
              "|---|---|---|---|---|---|---|---|"]
    for r, ws in a.winners.items():
        lines += [f"| {w.label} | {regime_name(r)} | #{w.number} | {w.val_drop:.2f} | "
                  f"{w.flops_ratio:.4f} | {w.params_ratio:.4f} | {w.mcb:.3f} | {w.recipe_std:.3f} |"
                  for w in ws]
    lines += ["", f"## The best {config.best} subnetworks per regime (Fig. 3)", "",
              f"![best]({figures['best']})", "",
              "## Optimal mCB per regime (Conjecture 3)", "", f"![mCB curve]({figures['mcb_curve']})",
              "", f"Winners: the best {config.winners} of each regime" if config.winners else
              f"Winners: the best {100 * config.winner_fraction:g}% of each regime (at least one)",
              "", "| regime | n | winners | optimal mCB (median) | interval | winners' range | "
              "uniform mCB | best drop | interval |", "|---|---|---|---|---|---|---|---|---|"]
    for o in a.optimal:
        lines.append(f"| {regime_name(o.regime)} | {o.n} | {o.n_winners} | {o.center.estimate:.3f}"
                     f" | [{o.center.lo:.3f}, {o.center.hi:.3f}] | {o.winners_range[0]:.3f}–"
                     f"{o.winners_range[1]:.3f} | {_fmt(o.uniform_mcb, '.3f')} | "
                     f"{o.best_drop.estimate:.2f} | [{o.best_drop.lo:.2f}, {o.best_drop.hi:.2f}] |")
    lines += ["", "Optimal mCB against the FLOPs reduction x = 1 − c_flops:", ""]
    lines += _law_text(a.mcb_curve, a.notes.get("mcb_curve"), "x", "mCB*")
    lines += ["## The drop-limit law (Conjecture 4)", "", f"![law]({figures['law']})", "",
              "Best drop of each regime against its optimal mCB m:", ""]
    lines += _law_text(a.law, a.notes.get("law"), "m", "drop")
    lines += ["On retrained drops:", ""]
    lines += _law_text(a.retrained_law, a.notes.get("retrained_law"), "m", "drop")
    if a.predictions or "predictions" in a.notes:
        lines += ["### Predictions", ""]
        if a.predictions:
            lines += ["| c_flops | optimal mCB | interval | best drop | interval |",
                      "|---|---|---|---|---|"]
            lines += [f"| {p.c_flops:g} | {p.mcb.estimate:.3f} | [{p.mcb.lo:.3f}, {p.mcb.hi:.3f}]"
                      f" | {p.drop.estimate:.2f} | [{p.drop.lo:.2f}, {p.drop.hi:.2f}] |"
                      for p in a.predictions]
        else:
            lines.append(a.notes["predictions"])
        lines.append("")
    lines += ["## Proxy fidelity", ""]
    if a.fidelity_regimes:
        lines += [f"![fidelity]({figures['fidelity']})", "",
                  "Kendall τ-b of the proxy drop against the mean retrained drop, inside each "
                  "regime only (pooled across regimes the FLOPs budget alone orders the drops, "
                  "which says nothing of the proxy's ranking):", "",
                  "| regime | retrained networks | Kendall τ | p (two-sided) | best by proxy "
                  "is best retrained |", "|---|---|---|---|---|"]
        lines += [f"| {regime_name(r['regime'])} | {r['n']} | {_fmt(r['tau'], '+.3f')} | "
                  f"{_fmt(r['p'], '.3g')} | {'yes' if r['best_by_proxy_is_best'] else 'no'} |"
                  for r in a.fidelity_regimes]
        lines.append("")
    else:
        lines += [a.notes.get("fidelity", "no retrained trials"), ""]
    return "\n".join(lines)


def write(a: Analysis, config: AnalyzeConfig, seconds: float = 0.0) -> dict[str, Any]:
    """Write figures, report.md and summary.json under `config.out`; return the summary."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(a, out)
    data = summary(a, config, figures)
    (out / "summary.json").write_text(json.dumps(data, indent=1))
    (out / "report.md").write_text(markdown(a, config, figures, seconds))
    return data


def attach(a: Analysis, config: AnalyzeConfig, figures: dict[str, str]) -> int:
    """Store the figures in every analysed study as Optuna artifacts; return how many uploads."""
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact


    Path(config.artifact_dir).mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(config.artifact_dir)
    storage = open_storage(config.storage)
    count = 0
    for s in a.studies:
        study = optuna.load_study(study_name=s.name, storage=storage)
        for file in [*figures.values(), "report.md", "summary.json"]:
            upload_artifact(artifact_store=store, file_path=str(Path(config.out) / file),
                            study_or_trial=study, storage=storage)
            count += 1
    return count


def run_analysis(config: AnalyzeConfig) -> dict[str, Any]:
    """Load, compute, write (and attach): what `evoprune analyze` does; returns the summary."""
    tic = time.perf_counter()
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise EvopruneError(f"`out` {out} is a file: choose a folder")
    if not out.resolve().parent.is_dir():
        raise EvopruneError(f"folder {out.resolve().parent} does not exist: create it first")
    studies, warnings = load_studies(config.storage, list(config.study_names) or None)
    a = compute(studies, config, warnings)
    data = write(a, config, time.perf_counter() - tic)
    if config.attach:
        data["attached"] = attach(a, config, data["figures"])
    data["seconds"] = time.perf_counter() - tic
    data["out"] = str(out)
    return data
