"""Reproduce the paper's observations at small scale: a TOML study set → searches → retraining →
analysis → a report that says, with tests, whether each observation holds.

`load_config` reads a study set (studies/*.toml); `plan` lists its searches; `run_reproduce`
runs them (resuming whatever the storage already holds), retrains the winners and the uniform
recipes, analyses the STD spaces with `analysis.report`, tests observations (a)–(f) with
`analysis.observations` and writes report.md, summary.json and the figures to `out`.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from evoprune.analysis import observations as obs
from evoprune.analysis import plots
from evoprune.analysis.edf import regime_edfs
from evoprune.analysis.load import by_regime, load_studies, regime_name
from evoprune.analysis.report import AnalyzeConfig, compute, write
from evoprune.core.config import read_toml
from evoprune.core.machine import DEFAULT_PRECISION, machine, resolve_precision
from evoprune.errors import EvopruneError
from evoprune.experiments.crossset import compare_summaries, markdown_lines
from evoprune.experiments.payoff import format_report
from evoprune.experiments.pilot import fidelity_line
from evoprune.searching import BaseConfig, SamplerConfig, SearchConfig, run_search, validate
from evoprune.searching.objective import ProxyConfig
from evoprune.searching.study import is_complete
from evoprune.spaces import PruningSpace
from evoprune.store.storage import journal_path, open_storage, sqlite_path, storage_kind
from evoprune.training.data import load_dataset
from evoprune.training.engine import resolve_device
from evoprune.training.retraining import RetrainConfig, RetrainSettings, run_retrain
from evoprune.training.splits import DEFAULT_VAL_SIZE

Progress = Callable[[str], None]
TABLES = {"proxy": "proxy_", "compare": "compare_", "retrain": "retrain_", "spaces": "",
          "analysis": ""}


@dataclass(frozen=True)
class ReproduceConfig:
    """One study set: the network, the spaces and regimes, the sampler race, the retraining."""

    name: str = "digits"
    model: str = "resnet20"
    dataset: str = "digits"
    data_root: str | None = None  # CIFAR / ImageFolder data (digits needs none)
    residual: bool = True
    seed: int = 0
    base_epochs: int = 30
    storage: str = "sqlite:///studies/digits.db"
    out: str = "studies/digits"
    device: str = "auto"
    val_size: float = DEFAULT_VAL_SIZE  # the validation split every selection reads
    train_size: int | float | None = None  # a stratified training subset (a CPU budget); None: all
    precision: str = DEFAULT_PRECISION  # auto, fp32 or bf16 autocast (auto: where native)
    proxy_epochs: int = 2
    proxy_lr: float = 0.01
    proxy_batch_size: int = 32
    regimes: tuple[float, ...] = (0.25, 0.1, 0.05, 0.02)  # c_flops, mildest first
    moderate: tuple[float, ...] = (0.25,)  # the regimes observation (a) calls moderate
    held_out: float | None = 0.035  # searched, left out of the fits, predicted
    params_regimes: tuple[float, ...] = ()  # c_params regimes (STD spaces) for the law
    stds: tuple[float, ...] = (0.1, 0.05, 0.01)
    mcb: float = 1.0
    mcb_regimes: tuple[float, ...] | None = None  # where the mCB space is searched; None: all
    n_trials: int = 48  # recipes per space and regime (the uniform trials come on top)
    params_n_trials: int = 16  # recipes per space of a params regime
    uniform_seeds: int = 3  # the uniform recipe's trials per study (the proxy's seed noise)
    compare_regime: float = 0.05
    compare_seeds: tuple[int, ...] = (1, 2, 3, 4)
    compare_trials: int = 48
    compare_population: int = 8
    retrain_epochs: int = 10
    retrain_mode: str = "finetune"
    retrain_batch_size: int = 32  # digits: about 1,150 training images, 36 steps an epoch at 32
    retrain_seeds: int = 3  # seeds per retrained network (paired with the uniform recipe's)
    retrain_top: int = 1  # per regime, the best on validation across the STD spaces retrained
    retrain_random_k: int = 2  # unselected recipes per regime retrained: the proxy's fidelity
    n_boot: int = 1000
    winner_fraction: float = 0.1
    level: float = 0.95
    alpha: float = 0.05
    compare_with: str | None = None  # another set's summary.json: the report sets both side by side
    payoff: str | None = None  # a payoff run's summary.json (evoprune payoff): quoted in the report

    def __post_init__(self) -> None:
        """Refuse a study set that cannot test the observations."""
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise EvopruneError(msg)

        check(len(self.regimes) >= 4, f"regimes: the law needs at least 4, got {list(self.regimes)}")
        check(all(0 < c < 1 for c in self.regimes), f"regimes must be in (0, 1), got "
              f"{list(self.regimes)}")
        check(len(set(self.regimes)) == len(self.regimes), "regimes must differ")
        check(set(self.moderate) <= set(self.regimes), "moderate must be some of the regimes")
        check(self.held_out is None or (0 < self.held_out < 1 and self.held_out not in self.regimes),
              "held_out must be in (0, 1) and not one of the regimes")
        check(self.compare_regime in self.regimes, "compare.regime must be one of the regimes")
        check(len(self.stds) >= 2 and all(0 < s < 0.5 for s in self.stds),
              "stds: at least two STD constraints in (0, 0.5)")
        check(self.n_trials >= 4 and self.compare_trials >= 4 and self.params_n_trials >= 4,
              "n_trials: at least 4 per study")
        check(all(0 < c < 1 for c in self.params_regimes), "params_regimes must be in (0, 1)")
        check(self.uniform_seeds >= 1 and self.retrain_seeds >= 1,
              "uniform_seeds and retrain.seeds must be at least 1")
        check(len(self.compare_seeds) >= 2, "compare.seeds: at least two seeds per sampler")
        check(self.compare_population >= 2, "compare.population must be at least 2")
        check(self.retrain_epochs >= 1 and self.retrain_random_k >= 0,
              "retrain.epochs must be at least 1 and retrain.random_k at least 0")
        check(self.proxy_epochs >= 1 and self.base_epochs >= 1, "epochs must be at least 1")
        check(self.retrain_top >= 1, "retrain.top must be at least 1")
        check(self.mcb_regimes is None or set(self.mcb_regimes) <= set(self.regimes) | {
            self.held_out}, "mcb_regimes must be some of the regimes (or the held-out one)")
        if self.train_size == 0:  # TOML has no None: 0 is every training image
            object.__setattr__(self, "train_size", None)


PLANS = ("quick", "full")  # tables a study set may hold: --quick (a few minutes), --full (GPU)


def load_config(path: str | Path, *, quick: bool = False, full: bool = False,
                **overrides: Any) -> ReproduceConfig:
    """Read a study set from TOML; `quick` applies its [quick] table, `full` its [full] table
    (the whole training set, for a GPU machine); overrides win (None: kept)."""
    path = Path(path)
    raw = read_toml(path, "study set")
    tables = {name: raw.pop(name, {}) for name in PLANS}
    flat = _flatten(raw, path)
    if quick and full:
        raise EvopruneError("`quick` and `full` are two plans: choose one")
    for name, chosen in (("quick", quick), ("full", full)):
        if chosen:
            if not tables[name]:
                raise EvopruneError(f"{path} has no [{name}] table for `{name}`")
            flat.update(_flatten(tables[name], path))
    flat.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(ReproduceConfig)}
    unknown = sorted(set(flat) - set(known))
    if unknown:
        raise EvopruneError(f"{path}: unknown keys {', '.join(unknown)}")
    for key, value in list(flat.items()):
        if isinstance(value, list):
            flat[key] = tuple(value)
    try:
        return ReproduceConfig(**flat)
    except TypeError as exc:
        raise EvopruneError(f"{path}: {exc}") from None


def _flatten(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """[proxy] epochs → proxy_epochs, [spaces] regimes → regimes, top-level keys as they are."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in TABLES:
                raise EvopruneError(f"{path}: unknown table [{key}] (tables: "
                                    f"{', '.join(TABLES)}, {', '.join(PLANS)})")
            flat.update({TABLES[key] + k: v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


@dataclass(frozen=True)
class Planned:
    """One search of the study set and its role."""

    role: str  # "space", "held_out", "params" or "compare"
    search: Any  # SearchConfig


def _search(config: ReproduceConfig, n_trials: int, **space: Any) -> Any:
    """A random-sampler search of one space; every space shares the seed (paired trials)."""

    return SearchConfig(
        space=PruningSpace(**space),
        base=BaseConfig(model=config.model, dataset=config.dataset, data_root=config.data_root,
                        residual=config.residual, epochs=config.base_epochs,
                        val_size=config.val_size, train_size=config.train_size),
        proxy=ProxyConfig(epochs=config.proxy_epochs, lr=config.proxy_lr,
                          batch_size=config.proxy_batch_size),
        sampler=SamplerConfig(name="random"), objectives=("val_drop",),
        n_trials=n_trials + config.uniform_seeds, uniform_seeds=config.uniform_seeds,
        seed=config.seed, storage=config.storage, device=config.device,
        precision=config.precision, baselines=())  # i.i.d. EDF studies: no labelled trials


def plan(config: ReproduceConfig) -> list[Planned]:
    """Every search: each space at each regime (held-out and params ones too), the sampler race.

    All searches of the set share one seed: trial j of every space fine-tunes with the same
    seed (common random numbers), so spaces differ by their recipes, not by a seed draw.
    """

    out = []
    regimes = [(c, "space") for c in config.regimes]
    if config.held_out is not None:
        regimes.append((config.held_out, "held_out"))
    for c, role in regimes:
        for std in config.stds:
            out.append(Planned(role, _search(config, config.n_trials, c_flops=c, c_std=std)))
        if config.mcb_regimes is None or c in config.mcb_regimes:
            out.append(Planned(role, _search(config, config.n_trials, c_flops=c,
                                             c_mcb=config.mcb)))
    for c in config.params_regimes:
        for std in config.stds:
            out.append(Planned("params", _search(config, config.params_n_trials, c_params=c,
                                                 c_std=std)))
    for seed in config.compare_seeds:
        for sampler in ("nsga2", "random"):
            base = _search(config, config.compare_trials, c_flops=config.compare_regime,
                           c_mcb=config.mcb)
            out.append(Planned("compare", replace(
                base, sampler=SamplerConfig(name=sampler, population=config.compare_population),
                seed=seed, study_name=f"{base.name()}-{sampler}-seed{seed}")))
    seen = set()
    for p in out:
        if p.search.name() in seen:
            raise EvopruneError(f"two searches of the study set share the name {p.search.name()}")
        seen.add(p.search.name())
    return out


def _validate(planned: list[Planned], storage: str) -> None:
    """Check every search before anything runs; make the storage's folder, not left on failure."""

    kind = storage_kind(storage)
    folder = None
    if kind in ("sqlite", "journal"):
        path = sqlite_path(storage) if kind == "sqlite" else journal_path(storage)
        if not path.resolve().parent.exists():
            folder = path.resolve().parent
            folder.mkdir(parents=True)
    try:
        for p in planned:
            validate(p.search)
    except BaseException:
        if folder is not None and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _regime_studies(planned: list[Planned], c: float) -> tuple[list[str], str | None]:
    """The STD studies and the mCB study (None where it is not searched) of FLOPs regime c."""
    mine = [p.search for p in planned if p.role in ("space", "held_out")
            and p.search.space.c_flops == c]
    return ([s.name() for s in mine if s.space.c_std is not None],
            next((s.name() for s in mine if s.space.c_mcb is not None), None))


def _top_studies(storage: str, names: list[str], k: int) -> list[tuple[str, int]]:
    """The studies holding the k lowest validation drops among `names` (the winners across
    spaces), each with how many of them it holds, in the order of `names`; equal drops go to
    the study listed first (as the set's first runs chose, so that a rerun retrains nothing)."""
    from collections import Counter


    studies, _ = load_studies(storage, names)
    order = {name: i for i, name in enumerate(names)}
    drops = sorted((float(d), order[s.name], s.name) for s in studies
                   for d in s.val_drop[s.searched])
    counts = Counter(name for _, _, name in drops[:k])
    return [(name, counts[name]) for name in names if name in counts]


def run_searches(config: ReproduceConfig, planned: list[Planned], say: Progress,
                 events: Any = None) -> list[dict]:
    """Run (or resume) every search; one line per study with an estimate of the time left
    (`events` takes each search's own events: the CLI's live bar on a terminal)."""

    rows, tic = [], time.perf_counter()
    total = sum(p.search.n_trials for p in planned)
    done = 0
    for i, p in enumerate(planned, 1):
        t0 = time.perf_counter()
        if _complete(p.search):  # nothing to resume: skip the set-up of a search
            done += p.search.n_trials
            rows.append({"study": p.search.name(), "role": p.role, "seconds": 0.0,
                         "states": {"COMPLETE": p.search.n_trials}})
            say(f"[{i:2d}/{len(planned)}] {p.search.name()}: complete")
            continue
        result = run_search(p.search, progress=events)
        done += p.search.n_trials
        spent = time.perf_counter() - tic
        best = result["best"][0]["val_drop"] if result["best"] else math.nan
        rows.append({"study": p.search.name(), "role": p.role, "seconds": time.perf_counter() - t0,
                     "states": result["states"]})
        left = spent / done * (total - done)
        say(f"[{i:2d}/{len(planned)}] {p.search.name()}: {result['states'].get('COMPLETE', 0)} "
            f"COMPLETE, best {best:.2f} pp, {time.perf_counter() - t0:.0f} s "
            f"({spent / 60:.1f} min in all, about {left / 60:.1f} min left)")
    return rows


def _complete(search: Any) -> bool:
    """Whether the study exists with this configuration, n COMPLETE trials and none RUNNING."""

    return is_complete(search.storage, search.name(), search.identity(), search.n_trials)


def run_retraining(config: ReproduceConfig, planned: list[Planned], say: Progress,
                   events: Any = None) -> list[dict[str, Any]]:
    """Per FLOPs regime, retrain with the same budget and seeds: the `retrain_top` best on
    validation across the STD spaces, the uniform recipe, and where the mCB space is searched
    its winner and `retrain_random_k` of its recipes drawn without selection (the proxy's
    fidelity)."""

    regimes = list(config.regimes) + ([config.held_out] if config.held_out is not None else [])
    settings = RetrainSettings(top_k=1, mode=config.retrain_mode, epochs=config.retrain_epochs,
                               batch_size=config.retrain_batch_size, seeds=config.retrain_seeds)
    out = []
    for c in regimes:
        stds, mcb = _regime_studies(planned, c)
        jobs = [("std", name, replace(settings, top_k=k, baseline=i == 0))
                for i, (name, k) in enumerate(_top_studies(config.storage, stds,
                                                           config.retrain_top))]
        if mcb is not None:
            jobs.append(("mcb", mcb, replace(settings, baseline=False,
                                             random_k=config.retrain_random_k)))
        for source, name, s in jobs:
            t0 = time.perf_counter()
            records = run_retrain(RetrainConfig(
                study_name=name, storage=config.storage, settings=s, device=config.device,
                seed=config.seed, data_root=config.data_root, precision=config.precision,
                model=config.model), progress=events)  # the set's own model, named in its TOML
            out.append({"c_flops": c, "study": name, "source": source, "records": records})
            text = ", ".join(f"#{r['number']} {r['chosen_as']} seed {r['seed']} "
                             f"{r['test_drop']:.2f} pp" for r in records)
            say(f"retrained c_flops {c:g} {source} ({config.retrain_epochs} epochs "
                f"{config.retrain_mode}, {time.perf_counter() - t0:.0f} s): {text}")
    return out


def winner_pairs(retrained: list[dict[str, Any]], source: str
                 ) -> list[tuple[float, int, float, float]]:
    """(c_flops, seed, winner's test drop, uniform's test drop) per regime and retraining seed.

    The winner is the `source`'s ("std": across the STD spaces; "mcb": the mCB space's)
    retrained network with the lowest mean validation drop over its seeds: selected on
    validation, reported on test. The uniform recipe's retraining is the regime's.
    """
    uniform = {(r["c_flops"], x["seed"]): x["test_drop"] for r in retrained
               for x in r["records"] if x["chosen_as"] == "uniform"}
    top: dict[float, dict[tuple[str, int], list[dict[str, Any]]]] = {}
    for r in retrained:
        if r["source"] == source:
            for x in r["records"]:
                if x["chosen_as"] == "top-k":
                    top.setdefault(r["c_flops"], {}).setdefault((r["study"], x["number"]),
                                                                []).append(x)
    out = []
    for c, nets in top.items():
        best = min(nets.values(), key=lambda xs: sum(float(x.get("val_drop", math.nan))
                                                     for x in xs) / len(xs))
        out += [(c, x["seed"], float(x["test_drop"]), float(uniform[c, x["seed"]]))
                for x in best if (c, x["seed"]) in uniform]
    return out


def fidelity_pairs(retrained: list[dict[str, Any]], proxy: dict[str, dict[int, float]]
                   ) -> tuple[list[float], list[float]]:
    """(validation proxy drops, mean retrained test drops) of the recipes drawn without selection."""
    by_trial: dict[tuple[str, int], list[float]] = {}
    for r in retrained:
        for x in r["records"]:
            if x["chosen_as"] == "random":
                by_trial.setdefault((r["study"], x["number"]), []).append(float(x["test_drop"]))
    keys = sorted(by_trial)
    return ([proxy[s][n] for s, n in keys],
            [sum(by_trial[k]) / len(by_trial[k]) for k in keys])


def regime_fidelity_pairs(retrained: list[dict[str, Any]], proxy: dict[str, dict[int, float]]
                          ) -> dict[float, tuple[list[float], list[float]]]:
    """Per c_flops, (validation proxy drops, mean retrained test drops) of every network retrained
    in that regime but heuristic baselines: Kendall τ is read inside a regime only."""
    by: dict[float, dict[tuple[str, int], list[float]]] = {}
    for r in retrained:
        for x in r["records"]:
            if str(x.get("chosen_as", "")).startswith("baseline"):
                continue
            by.setdefault(r["c_flops"], {}).setdefault((r["study"], x["number"]),
                                                       []).append(float(x["test_drop"]))
    return {c: ([proxy[s][n] for s, n in sorted(nets)],
                [sum(nets[k]) / len(nets[k]) for k in sorted(nets)]) for c, nets in by.items()}


def run_reproduce(config: ReproduceConfig, *, command: str = "",
                  progress: Progress | None = None, events: Any = None) -> dict[str, Any]:
    """Run the study set end to end; write report.md, summary.json and figures to config.out
    (`progress` takes its lines, `events` each search's and retraining's typed events)."""
    # Long but linear: search, retrain, analyse, test (a)-(f), write; each step one call.

    say = progress or (lambda _s: None)
    tic = time.perf_counter()
    planned = plan(config)
    other = _other_summary(config.compare_with)  # a user's error: before any folder is made
    _validate(planned, config.storage)
    out = Path(config.out)
    say(f"study set {config.name}: {len(planned)} searches, "
        f"{sum(p.search.n_trials for p in planned)} trials, storage {config.storage}")
    searches = run_searches(config, planned, say, events)
    retrained = run_retraining(config, planned, say, events)
    search_seconds = time.perf_counter() - tic

    say("analysing")
    names = [p.search.name() for p in planned]
    studies, warnings = load_studies(config.storage, names)
    role = {p.search.name(): p for p in planned}
    std_fit = [s for s in studies if role[s.name].role == "space" and s.space.get("c_std")]
    std_held = [s for s in studies if role[s.name].role == "held_out" and s.space.get("c_std")]
    analyze = AnalyzeConfig(storage=config.storage, study_names=tuple(s.name for s in std_fit),
                            out=str(out / "analysis"), n_boot=config.n_boot,
                            winner_fraction=config.winner_fraction, level=config.level,
                            seed=config.seed,
                            predict=(config.held_out,) if config.held_out is not None else ())
    t0 = time.perf_counter()
    analysis = compute(std_fit, analyze, warnings)
    analysis_summary = write(analysis, analyze, time.perf_counter() - t0)
    std_params = [s for s in studies if role[s.name].role == "params"]
    space_groups = by_regime([s for s in studies if role[s.name].role == "space"])
    compare = [s for s in studies if role[s.name].role == "compare"]
    proxy = {s.name: dict(zip(map(int, s.numbers), map(float, s.val_drop))) for s in studies}
    g = by_regime(std_fit)
    found = [
        obs.std_spaces(g, config.moderate, alpha=config.alpha),
        obs.winners_concentrate(g, fraction=config.winner_fraction, alpha=config.alpha,
                                seed=config.seed),
        obs.optimal_mcb_trend(g, fraction=config.winner_fraction, n_boot=config.n_boot,
                              alpha=config.alpha, seed=config.seed),
        obs.law_prediction(by_regime(std_fit + std_params), std_held,
                           fraction=config.winner_fraction, n_boot=config.n_boot,
                           alpha=config.alpha, seed=config.seed),
        obs.sampler_efficiency(_by_seed(compare, "nsga2"), _by_seed(compare, "random"),
                               alpha=config.alpha, prefix=config.compare_population),
        obs.retrained_vs_uniform(winner_pairs(retrained, "std"),
                                 mcb_pairs=winner_pairs(retrained, "mcb"), alpha=config.alpha,
                                 resolution=100.0 / _test_size(config),
                                 unselected=fidelity_pairs(retrained, proxy),
                                 fidelity=regime_fidelity_pairs(retrained, proxy),
                                 n_boot=config.n_boot, seed=config.seed),
    ]
    figures = _figures(space_groups, compare, out, config)
    wall = time.perf_counter() - tic
    meta = {"command": command, "config": asdict(config), "machine": machine(),
            "wall_seconds": wall, "this_run_seconds": search_seconds,
            **_timeline(config.storage, names, retrained),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.version.split()[0],
            "platform": platform.platform(), "base_val_acc": studies[0].base_acc,
            "base_test_acc": studies[0].base_test_acc, "seed_sd": seed_noise(studies),
            "sizes": _sizes(config, studies), "precision": _precision(config),
            "trials": sum(len(s.numbers) for s in studies), "studies": len(studies),
            "pilot": _pilot(out, config.proxy_epochs)}
    summary = {**meta, "observations": [o._asdict() for o in found], "searches": searches,
               "retrained": retrained, "figures": figures, "compared_with": config.compare_with,
               "analysis": {"report": "analysis/report.md", "summary": "analysis/summary.json"},
               "warnings": warnings}
    out.mkdir(parents=True, exist_ok=True)
    payoff = _payoff(config.payoff)
    if payoff is not None:
        summary["payoff"] = {k: payoff.get(k) for k in ("rows", "verdicts", "limits", "done",
                                                        "planned", "machine", "written", "config")}
    (out / "summary.json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
    beside = None
    if other is not None:

        beside = compare_summaries(_clean(summary), other)
    (out / "report.md").write_text(markdown(config, found, meta, retrained, proxy, figures,
                                            analysis_summary, beside,
                                            (out / DISCUSSION).is_file())
                                   + payoff_section(config.payoff, payoff))
    say(f"wrote {out / 'report.md'} and {out / 'summary.json'} ({wall / 60:.1f} min in all)")
    for o in found:
        say(f"({o.key}) {o.verdict:13s} {o.claim}")
    return summary


DISCUSSION = "discussion.md"  # hand-written: why verdicts moved; the report links it when present
PILOT = "pilot/pilot.json"  # scripts/proxy_pilot.py's table in the set's folder, quoted when present
PILOT_MD = "pilot/pilot.md"  # its rendering, which the report links


def _pilot(out: Path, epochs: int) -> str | None:
    """The pilot's fidelity line for this proxy, when a pilot table lies in `out`."""

    path = out / PILOT
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    return fidelity_line(table, epochs) if table.get("ceiling") else None


def _payoff(path: str | None) -> dict[str, Any] | None:
    """The payoff run's summary.json, when the set names one and it has been written."""
    if not path or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvopruneError(f"payoff: {path} is not a readable summary.json ({exc})") from None


def payoff_section(path: str | None, payoff: dict[str, Any] | None) -> str:
    """The report's section quoting the payoff run: its table, verdicts and compute."""
    if not path:
        return ""
    head = "\n## Does the search pay? Uniform, heuristics, the mCB- and wide-space winners\n\n"
    if payoff is None:
        return head + f"Pending: the payoff run has not written {path} yet.\n"

    body = format_report(payoff).split("\n", 2)[2]  # less its title
    body = body.replace("\n## ", "\n### ")
    return head + f"From [{Path(path).parent.name}/report.md](../{Path(path).parent.name}/report.md) " \
        f"(`evoprune payoff`; its storage is committed beside it).\n\n" + body


def _other_summary(path: str | None) -> dict[str, Any] | None:
    """The summary.json of the set to compare with, read before any work; None when unset."""
    if path is None:
        return None
    try:
        other = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EvopruneError(f"compare_with: {path} does not exist (run that study set first, or "
                            "remove the key)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise EvopruneError(f"compare_with: {path} is not a readable summary.json ({exc})") from None
    if not isinstance(other, dict) or not isinstance(other.get("observations"), list):
        raise EvopruneError(f"compare_with: {path} has no observations (a reproduction's "
                            "summary.json is needed)")
    return other


def _by_seed(compare: list[Any], sampler: str) -> list[Any]:
    """The sampler race's studies of one sampler, in seed order (paired with the other's)."""
    runs = [s for s in compare if s.sampler == sampler]
    return sorted(runs, key=lambda s: int(s.name.rsplit("seed", 1)[1]))


def seed_noise(studies: list[Any]) -> dict[str, dict[str, float]]:
    """Per regime, the proxy's seed noise: SD of the uniform recipe's drops over its seeds."""
    import numpy as np


    out: dict[str, dict[str, float]] = {}
    for s in studies:
        drops = s.uniform_drops
        name = regime_name(s.regime)
        if len(drops) >= 2 and name not in out:  # every study of a regime shares the seeds
            out[name] = {"n": len(drops), "mean": float(np.mean(drops)),
                         "sd": float(np.std(drops, ddof=1))}
    return out


def _timeline(storage: str, names: list[str], retrained: list[dict[str, Any]]
              ) -> dict[str, Any]:
    """When the searches ran and how long they took, from the trials' own timestamps (so a
    rerun that only re-analyses reports the run that did the work), plus retraining seconds."""
    import optuna


    store = open_storage(storage, wal=False)
    starts, ends, busy = [], [], 0.0
    for name in names:
        trials = optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)
        s = [t.datetime_start for t in trials if t.datetime_start is not None]
        e = [t.datetime_complete for t in trials if t.datetime_complete is not None]
        if s and e:
            starts.append(min(s))
            ends.append(max(e))
            busy += (max(e) - min(s)).total_seconds()
    retrain = sum(float(x.get("seconds", 0.0)) for r in retrained for x in r["records"])
    return {"first_trial": min(starts).isoformat(" ", "seconds") if starts else None,
            "last_trial": max(ends).isoformat(" ", "seconds") if ends else None,
            "search_seconds": busy, "retrain_seconds": retrain}


def _sizes(config: ReproduceConfig, studies: list[Any]) -> dict[str, int]:
    """The split sizes the studies recorded (else read from the data)."""

    stored = getattr(studies[0], "split_sizes", None) if studies else None
    if stored:
        return dict(stored)
    return load_dataset(config.dataset, config.data_root, val_size=config.val_size,
                        train_size=config.train_size).sizes


def _precision(config: ReproduceConfig) -> str:
    """What `precision` resolves to on the set's device here (the trials record their own)."""

    return resolve_precision(config.precision, resolve_device(config.device).type)


def _test_size(config: ReproduceConfig) -> int:

    return len(load_dataset(config.dataset, config.data_root).test_y)


def _figures(groups: dict, compare: list, out: Path, config: ReproduceConfig) -> dict[str, str]:
    """EDFs of every space (STD and mCB) per regime, and the sampler race."""

    out.mkdir(parents=True, exist_ok=True)
    edfs = [regime_edfs(g, n_boot=config.n_boot, level=config.level, seed=config.seed)
            for g in groups.values()]
    return {"edfs_all_spaces": Path(plots.plot_edfs(edfs, out / "edfs_all_spaces.png")).name,
            "sampler_race": Path(plots.plot_sampler_race(compare, out / "sampler_race.png")).name}


def _clean(v: Any) -> Any:
    """JSON-safe: numpy scalars and arrays to Python, NaN/inf to None, tuples to lists."""
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def markdown(config: ReproduceConfig, found: list, meta: dict[str, Any],
             retrained: list[dict[str, Any]], proxy: dict[str, dict[int, float]],
             figures: dict[str, str], analysis_summary: dict[str, Any],
             beside: Any = None, discussion: bool = False) -> str:
    """The reproduction report: how it was made, each observation's verdict and evidence."""
    # Long but linear: the report's sections in reading order, one block of lines each.
    c = config
    lines = [
        f"# Network Pruning Spaces on {c.dataset}: the paper's observations, reproduced",
        "",
        f"{c.model} on {c.dataset} (base accuracy {100 * meta['base_val_acc']:.2f}% on "
        f"validation, {100 * (meta['base_test_acc'] or math.nan):.2f}% on test), "
        f"{'block-internal and residual' if c.residual else 'block-internal'} units. "
        f"Spaces STD-{', STD-'.join(f'{s:g}' for s in c.stds)} (perturbations N(0, x²) around "
        f"the uniform ratio, one common offset into the band) and mCB-{c.mcb:g} (± 0.1; ratios "
        f"uniform on [0, 0.95] restricted to the bands"
        + (f"; at c_flops {', '.join(f'{x:g}' for x in c.mcb_regimes)} only"
           if c.mcb_regimes is not None else "")
        + f"), {c.n_trials} random recipes each, at "
        f"c_flops {', '.join(f'{x:g}' for x in c.regimes)}"
        + (f" and the held-out {c.held_out:g}" if c.held_out is not None else "")
        + (f"; STD spaces at c_params {', '.join(f'{x:g}' for x in c.params_regimes)} "
           f"({c.params_n_trials} recipes each)" if c.params_regimes else "")
        + f". Proxy: {c.proxy_epochs}-epoch fine-tune, lr {c.proxy_lr:g} cosine, batch "
        f"{c.proxy_batch_size}; every space of a regime fine-tunes trial j with the same seed, "
        f"and the uniform recipe with {c.uniform_seeds} seeds per study. Every selection reads "
        f"the validation split ({c.val_size:g} images carved from the training set, "
        f"stratified); test accuracy is read for the base and the retrained networks only. "
        f"Training reads {meta['sizes']['train']:,} images"
        + (" (a stratified, fixed subset of the rest)" if c.train_size is not None else "")
        + f"; the test split holds {meta['sizes']['test']:,}. Forward passes in "
        f"{meta['precision']}. "
        f"Proxy drops are percentage points of validation accuracy; retrained drops of test "
        f"accuracy (one test image = {100 / _test_size(c):.2f} pp).",
        "",
        "- the proxy's seed noise (SD of the uniform recipe's drop over its seeds): "
        + "; ".join(f"{k} {v['sd']:.2f} pp (n {v['n']})" for k, v in meta["seed_sd"].items()),
        *([f"- the proxy's fidelity, measured by the pilot ([{PILOT_MD}]({PILOT_MD})): "
           f"{meta['pilot']}"] if meta.get("pilot") else []),
        f"- command: `{meta['command']}`",
        f"- seed: {c.seed}; machine: {meta['machine']}",
        f"- time: searches {meta['search_seconds'] / 60:.1f} min (the studies' first to last "
        f"trial, {meta['first_trial']} to {meta['last_trial']}), retraining "
        f"{meta['retrain_seconds'] / 60:.1f} min; this invocation {meta['wall_seconds'] / 60:.1f} "
        f"min (analysis included; a rerun resumes and only re-analyses); {meta['studies']} "
        f"studies, {meta['trials']} COMPLETE trials; written {meta['date']}",
        "- the STD spaces' full analysis (EDFs, distributions, winners, optimal mCB, laws): "
        "[analysis/report.md](analysis/report.md)",
        "",
        "## Verdicts",
        "",
        "| | observation (paper) | here |",
        "| --- | --- | --- |",
    ]
    lines += [f"| ({o.key}) | {o.claim} | **{o.verdict}** |" for o in found]
    lines += ["", "*holds*: the claimed direction is significant at "
              f"α = {c.alpha:g} (two-sided; equivalence claims by TOST within a stated margin); "
              "*does not hold*: the opposite direction is significant; *not shown*: neither "
              "(the data cannot tell). Each verdict's test, effect size, interval and α are in "
              "its section. Every test was itself checked on simulated populations "
              "(`python scripts/calibrate_verdicts.py`).", ""]
    for o in found:
        lines += [f"## ({o.key}) {o.claim}: {o.verdict}", ""]
        lines += [f"- {e}" for e in o.evidence]
        lines.append("")
        if o.key == "a":
            lines += [f"![EDFs of every space]({figures['edfs_all_spaces']})", "",
                      "STD spaces' EDFs with bands and KS tests: "
                      "[analysis/report.md](analysis/report.md).", ""]
        if o.key in ("b", "c", "d"):
            fig = {"b": "distributions", "c": "mcb_curve", "d": "law"}[o.key]
            path = analysis_summary.get("figures", {}).get(fig)
            if path:
                lines += [f"![{fig}](analysis/{Path(path).name})", ""]
        if o.key == "e":
            lines += [f"NSGA-II (population {c.compare_population}) and random sampling in the "
                      f"mCB-{c.mcb:g} space at c_flops {c.compare_regime:g}, {c.compare_trials} "
                      f"trials a run, paired seeds {list(c.compare_seeds)}; each run's first "
                      f"{c.compare_population} sampled trials (NSGA-II's first generation, "
                      "random's first draws) are left out of the count, and the evidence says "
                      "whether they were the same draws. Not a claim of the paper.", "",
                      f"![sampler race]({figures['sampler_race']})", ""]
        if o.key == "f":
            lines += [f"Per regime, the winner on validation across the STD spaces (and, "
                      f"separately, the mCB-{c.mcb:g} space's), the uniform recipe and "
                      f"{c.retrain_random_k} unselected mCB recipes, each retrained "
                      f"{c.retrain_epochs} epochs ({c.retrain_mode}, batch "
                      f"{c.retrain_batch_size}) with seeds {c.seed}..{c.seed + c.retrain_seeds - 1}"
                      ", reported on test.", "",
                      "| c_flops | source | trial | chosen as | val drop, proxy (pp) | "
                      "test drop per seed (pp) |", "| --- | --- | --- | --- | --- | --- |"]
            for r in retrained:
                by_trial: dict[int, list[dict[str, Any]]] = {}
                for x in r["records"]:
                    by_trial.setdefault(x["number"], []).append(x)
                for n, xs in by_trial.items():
                    p = proxy[r["study"]].get(n, math.nan)
                    drops = ", ".join(f"{x['test_drop']:.2f}" for x in xs)
                    lines.append(f"| {r['c_flops']:g} | {r['source']} | #{n} | "
                                 f"{xs[0]['chosen_as']} | {p:.2f} | {drops} |")
            lines.append("")
    if beside is not None:

        lines += [f"## Beside {beside.there_name}", "", *markdown_lines(beside), ""]
        if discussion:
            lines += [f"Why they moved, read from both reports: [{DISCUSSION}]({DISCUSSION}).", ""]
    lines += ["## How to rerun", "",
              "```bash", f"python scripts/reproduce.py --config studies/{c.name}.toml", "```", "",
              "The storage keeps every trial; a rerun resumes the searches and retrainings it "
              "holds and redoes only the analysis.", ""]
    return "\n".join(lines)
