"""Does the search pay? Uniform, each heuristic, the paper-space and the wide-space winners,
retrained alike on the same seeds, per regime and independent search replicate.

For each FLOPs regime c and search seed s (an independent replicate) two NSGA-II searches run
on one base network: the *wide* space (the FLOPs band alone, warm-started with the uniform
recipe and Torch-Pruning's global allocations, `searching.baselines`) and the paper's mCB
space (`paper_mcb`, no heuristic inside). Every study retrains its top-k searched trials with
the same protocol and seeds; the uniform recipe and the heuristics are retrained once per
regime (their allocations do not depend on the search seed). Winners are chosen on
validation (the mean over the retraining seeds) and reported on test:

- best heuristic of a regime: the heuristic with the lowest mean retrained validation drop;
- wide winner of a replicate: the lowest mean retrained validation drop among its top-k, the
  heuristics and the uniform recipe (the search starts from them: it can return one);
- paper winner of a replicate: the lowest among its mCB study's top-k.

The unit of replication is the regime × replicate (a cluster); the retraining seeds are nested
inside it (`analysis.regime_stats.hierarchical_bootstrap`). Each method's compute is its CPU
seconds: proxy trials (the study's trial durations) and retrainings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from evoprune.analysis.regime_stats import hierarchical_bootstrap
from evoprune.core.config import read_toml
from evoprune.core.events import Progress
from evoprune.core.machine import DEFAULT_PRECISION, machine
from evoprune.errors import EvopruneError
from evoprune.searching import BaseConfig, SamplerConfig, SearchConfig, run_search
from evoprune.searching.objective import ProxyConfig
from evoprune.spaces import PruningSpace
from evoprune.store.schema import retrain_results, trial_record
from evoprune.store.storage import find_study
from evoprune.training.retraining import RetrainConfig, RetrainSettings, run_retrain

Say = Callable[[str], None]
HEURISTICS = ("l2", "taylor", "lamp", "bn_scale")


@dataclass(frozen=True)
class PayoffConfig:
    """The payoff experiment: one base, its regimes, search replicates and retraining."""

    name: str = "digits-payoff"
    model: str = "resnet20"
    dataset: str = "digits"
    data_root: str | None = None
    residual: bool = True
    checkpoint: str | None = None  # the base's weights; None: trained once and cached
    base_epochs: int = 30
    val_size: float = 0.2
    train_size: float | None = None
    storage: str = "sqlite:///studies/digits-payoff/payoff.db"
    out: str = "studies/digits-payoff"
    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    regimes: tuple[float, ...] = (0.25, 0.1, 0.05, 0.02)  # c_flops, in the order they run
    replicates: tuple[int, ...] = (1, 2)  # search seeds: independent replicates
    n_trials: int = 24  # COMPLETE trials per study (uniform and heuristics included)
    population: int = 8  # NSGA-II's
    proxy_epochs: int = 1
    proxy_lr: float = 0.01
    proxy_batch_size: int = 128
    paper_mcb: float = 1.0  # the paper's space: mCB-1.0 (± 0.1) at the regime's FLOPs
    retrain: RetrainSettings = field(default_factory=lambda: RetrainSettings(top_k=2))
    n_boot: int = 2000
    level: float = 0.95
    alpha: float = 0.05

    def __post_init__(self) -> None:
        """Refuse plans that cannot answer the question."""
        if not self.regimes or not all(0 < c < 1 for c in self.regimes):
            raise EvopruneError(f"regimes must be FLOPs ratios in (0, 1), got {self.regimes}")
        if len(set(self.replicates)) != len(self.replicates) or not self.replicates:
            raise EvopruneError("replicates: one or more distinct search seeds")
        if self.n_trials < len(HEURISTICS) + 3:
            raise EvopruneError(f"n_trials must be at least {len(HEURISTICS) + 3}: the uniform "
                                "trial and the heuristics come first")
        if self.retrain.top_k < 1:
            raise EvopruneError("retrain.top_k must be at least 1")


def load_payoff(path: str | Path, *, quick: bool = False) -> PayoffConfig:
    """Read a payoff plan from TOML ([retrain] settings; [quick] overrides with `quick`)."""
    path = Path(path)
    raw = read_toml(path, "payoff plan")
    quick_table = raw.pop("quick", {})
    raw.pop("gap", None)  # the gap experiment's table (experiments.gap.load_gap)
    if quick:
        if not quick_table:
            raise EvopruneError(f"{path} has no [quick] table")
        retrain = {**raw.get("retrain", {}), **quick_table.pop("retrain", {})}
        raw.update(quick_table)
        raw["retrain"] = retrain
    known = {f.name for f in fields(PayoffConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise EvopruneError(f"{path}: unknown keys {', '.join(unknown)}")
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        raw["retrain"] = RetrainSettings(**raw.get("retrain", {"top_k": 2}))
        return PayoffConfig(**raw)
    except TypeError as exc:
        raise EvopruneError(f"{path}: {exc}") from None


def study_name(kind: str, c_flops: float, seed: int) -> str:
    """The study of one search: wide-f0.1-s1, mcb-f0.1-s1."""
    return f"{kind}-f{c_flops:g}-s{seed}"


def searches(config: PayoffConfig) -> list[tuple[float, int, str, Any]]:
    """Every search in run order: per regime, per replicate, the wide one then the paper's."""

    base = BaseConfig(model=config.model, dataset=config.dataset, data_root=config.data_root,
                      residual=config.residual, checkpoint=config.checkpoint,
                      epochs=config.base_epochs, val_size=config.val_size,
                      train_size=config.train_size)
    proxy = ProxyConfig(epochs=config.proxy_epochs, lr=config.proxy_lr,
                        batch_size=config.proxy_batch_size)
    out = []
    for c in config.regimes:
        for seed in config.replicates:
            for kind, space, heuristics in (
                    ("wide", PruningSpace(c_flops=c), HEURISTICS),
                    ("mcb", PruningSpace(c_flops=c, c_mcb=config.paper_mcb), ())):
                out.append((c, seed, kind, SearchConfig(
                    space=space, base=base, proxy=proxy,
                    sampler=SamplerConfig(name="nsga2", population=config.population),
                    n_trials=config.n_trials, uniform_seeds=1, baselines=heuristics, seed=seed,
                    storage=config.storage, study_name=study_name(kind, c, seed),
                    device=config.device, precision=config.precision)))
    return out


def run_payoff(config: PayoffConfig, say: Say | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) every search and retraining, then write report.md and summary.json.

    `say` gets a line per study; `progress` every search and retraining event.
    """

    say = say or (lambda _s: None)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    first = config.replicates[0]
    for _c, seed, kind, search in searches(config):
        tic = time.perf_counter()
        say(f"{search.name()}: {search.space.label} {search.space.bands()}")
        run_search(search, progress)
        settings = replace(config.retrain, baseline=kind == "wide" and seed == first)
        run_retrain(RetrainConfig(study_name=search.name(), storage=config.storage,
                                  settings=settings, device=config.device,
                                  precision=config.precision), progress)
        say(f"{search.name()}: searched and retrained ({time.perf_counter() - tic:.0f} s)")
        summary = write_report(config)
        say(f"  report: {summary['done']} of {summary['planned']} studies done")
    return write_report(config)


# ------------------------------------------------------------------------------ analysis
def retrained_of(study: Any) -> dict[int, dict[str, Any]]:
    """Per trial number: its record, retrained val/test drops by seed and seconds."""

    out = {}
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, results in retrain_results(study).items():
        t = trials[number]
        r = trial_record(t)
        out[number] = {
            "number": number, "role": "uniform" if r.is_uniform else r.role or "searched",
            "criterion": r.criterion, "channels": tuple(r.channels or ()),
            "proxy_drop": r.val_drop, "flops_ratio": r.flops_ratio, "mcb": r.mcb,
            "test": {int(x.seed): float(x.test_drop) for x in results},
            "val": {int(x.seed): float(x.val_drop) for x in results},
            "seconds_each": [float(x.seconds) for x in results]}
    return out


def trial_pace(study: Any) -> tuple[float, int]:
    """A study's median trial seconds (start to completion) and its finished trials.

    Compute is counted at the median pace: a trial slowed by another job on this shared
    machine, or paused, counts as a typical one.
    """
    times = [(t.datetime_complete - t.datetime_start).total_seconds()
             for t in study.get_trials(deepcopy=False)
             if t.datetime_start is not None and t.datetime_complete is not None]
    return (float(np.median(times)) if times else math.nan), len(times)


def _mean(d: dict[int, float]) -> float:
    return float(np.mean(list(d.values()))) if d else math.nan


def entry_of(x: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """A retrained network's figures over the common seeds."""
    return {"number": x["number"], "role": x["role"], "criterion": x["criterion"],
            "test": [x["test"][s] for s in seeds], "val": [x["val"][s] for s in seeds],
            "test_mean": float(np.mean([x["test"][s] for s in seeds])),
            "val_mean": float(np.mean([x["val"][s] for s in seeds])),
            "proxy_drop": x["proxy_drop"], "flops_ratio": x["flops_ratio"], "mcb": x["mcb"],
            "channels": list(x["channels"])}


def retrain_pace(config: PayoffConfig) -> float:
    """The median seconds of one retraining (one network, one seed) over the whole run."""

    each = []
    for c in config.regimes:
        for seed in config.replicates:
            for kind in ("wide", "mcb"):
                study = find_study(config.storage, study_name(kind, c, seed))
                for x in (retrained_of(study) if study is not None else {}).values():
                    each += x["seconds_each"]
    return float(np.median(each)) if each else math.nan


def regime_table(config: PayoffConfig) -> tuple[list[dict[str, Any]], int]:
    """Per regime: uniform, heuristics (and the best on validation), each replicate's winners.

    Compute (`cpu_seconds`) is counted at the median paces (`trial_pace`, `retrain_pace`): a
    heuristic is one proxy trial and its retrainings; a search all its trials and the
    retrainings its choice reads (the wide one's include the uniform recipe and heuristics).
    """

    seeds = list(range(config.retrain.seeds))
    rows, done = [], 0
    first = config.replicates[0]
    per_net = len(seeds) * retrain_pace(config)
    for c in config.regimes:
        wide0 = find_study(config.storage, study_name("wide", c, first))
        fixed = retrained_of(wide0) if wide0 is not None else {}
        fixed = {n: x for n, x in fixed.items() if x["role"] in ("uniform", "baseline")
                 and set(seeds) <= set(x["test"])}
        uniform = next((x for x in fixed.values() if x["role"] == "uniform"), None)
        heur = {x["criterion"]: entry_of(x, seeds) for x in fixed.values() if x["role"] == "baseline"}
        row: dict[str, Any] = {"c_flops": c, "uniform": entry_of(uniform, seeds) if uniform else None,
                               "heuristics": heur, "replicates": []}
        if heur:
            row["best_heuristic"] = min(heur.values(), key=lambda e: e["val_mean"])["criterion"]
        for seed in config.replicates:
            rep: dict[str, Any] = {"seed": seed}
            for kind in ("wide", "mcb"):
                study = find_study(config.storage, study_name(kind, c, seed))
                if study is None:
                    continue
                got = {n: x for n, x in retrained_of(study).items()
                       if x["role"] == "searched" and set(seeds) <= set(x["test"])}
                if len(got) < min(config.retrain.top_k, 1) or not got:
                    continue
                pool = [entry_of(x, seeds) for x in got.values()]
                if kind == "wide":  # the search starts from the fixed ones: it can return one
                    pool += list(heur.values()) + ([row["uniform"]] if row["uniform"] else [])
                win = min(pool, key=lambda e: e["val_mean"])
                pace, n = trial_pace(study)
                nets = len(got) + (len(fixed) if kind == "wide" else 0)
                rep[kind] = {**win, "study": study.study_name, "cpu_seconds": n * pace
                             + nets * per_net, "n_trials": n, "trial_pace": pace}
                done += 1
            row["replicates"].append(rep)
        if wide0 is not None:
            pace, _ = trial_pace(wide0)
            row["heuristic_cpu_seconds"] = {k: pace + per_net for k in heur}
            row["uniform_cpu_seconds"] = pace + per_net if uniform else math.nan
        rows.append(row)
    return rows, done


MIN_REGIMES = 2  # a verdict needs clusters from at least this many regimes


def _clusters(rows: list[dict[str, Any]], a: str, b: str) -> tuple[list[np.ndarray], int]:
    """Per regime × replicate, the per-seed test-drop differences a − b (paired by seed), and
    the regimes they span. A pair of networks met twice in one regime (two searches returning
    the same network; a comparison no search enters) is one cluster: identical networks are
    counted once."""
    out, seen = [], set()
    for row in rows:
        for rep in row["replicates"]:
            x, y = _pick(row, rep, a), _pick(row, rep, b)
            if x is None or y is None:
                continue
            key = (row["c_flops"], tuple(x["channels"]), tuple(y["channels"]))
            if key in seen:
                continue
            seen.add(key)
            out.append(np.array(x["test"]) - np.array(y["test"]))
    return out, len({k[0] for k in seen})


def _pick(row: dict[str, Any], rep: dict[str, Any], what: str) -> dict[str, Any] | None:
    """The network a comparison names: wide, mcb, uniform or best (heuristic)."""
    if what in ("wide", "mcb"):
        return rep.get(what)
    if what == "uniform":
        return row["uniform"]
    return row["heuristics"].get(row.get("best_heuristic", ""))


COMPARISONS = (("wide", "best"), ("wide", "uniform"), ("mcb", "best"), ("mcb", "uniform"),
               ("best", "uniform"), ("wide", "mcb"))
NAMES = {"wide": "wide-space winner", "mcb": "mCB-space winner", "uniform": "uniform",
         "best": "best heuristic"}


def verdicts(rows: list[dict[str, Any]], config: PayoffConfig) -> list[dict[str, Any]]:
    """Each comparison's regime-level estimate, interval and p (clusters: regime × replicate)."""

    out = []
    for a, b in COMPARISONS:
        clusters, regimes = _clusters(rows, a, b)
        entry: dict[str, Any] = {"a": a, "b": b, "n_clusters": len(clusters), "regimes": regimes}
        if len(clusters) >= 2 and regimes >= MIN_REGIMES:
            h = hierarchical_bootstrap(clusters, n_boot=config.n_boot, level=config.level,
                                       seed=0)
            entry.update(h)
            lo, hi = interval_of(h)
            entry["verdict"] = ("better" if hi < 0 else "worse" if lo > 0 else "not shown")
        else:
            entry["verdict"] = "pending"
        out.append(entry)
    return out


def label_of(x: dict[str, Any], kind: str, seed: int) -> str:
    """A retrained network's name in a regime: uniform, its criterion, or its study and trial."""
    if x["role"] == "uniform":
        return "uniform"
    return x["criterion"] or f"{kind} s{seed} #{x['number']}"


def _tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall τ-b of two paired lists; None under 4 pairs or a constant list."""
    if len(x) < 4 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(stats.kendalltau(x, y).statistic)


def limits(config: PayoffConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per regime, what limits the wide search, read from every network it retrained.

    - `tau_proxy_test`, `tau_val_test`: Kendall τ-b, inside the regime, of the proxy drop and of
      the retrained validation drop against the retrained test drop (distinct networks: the
      uniform recipe, the heuristics, every study's top-k); the networks are the selected ones,
      so these read the proxy among its own favourites, not at random.
    - `best_on_test`: the network with the lowest mean test drop; `headroom`: the wide winners'
      mean test drop minus it (what a perfect selector among these networks would gain; the
      minimum of noisy means, so an upper bound).
    - `proxy_gain`: per wide replicate, its best searched proxy drop minus the best proxy drop of
      the recipes it started from (negative: the search beat its start by its own measure).
    - `from_start`: per wide replicate, whether its winner is the uniform recipe or a heuristic.
    """

    seeds = list(range(config.retrain.seeds))
    out = []
    for row in rows:
        c = row["c_flops"]
        nets: dict[tuple[int, ...], dict[str, Any]] = {}
        entry: dict[str, Any] = {"c_flops": c, "proxy_gain": [], "from_start": []}
        for seed in config.replicates:
            for kind in ("wide", "mcb"):
                study = find_study(config.storage, study_name(kind, c, seed))
                if study is None:
                    continue
                for x in retrained_of(study).values():
                    if set(seeds) <= set(x["test"]):
                        nets.setdefault(tuple(x["channels"]),
                                        {**entry_of(x, seeds), "label": label_of(x, kind, seed)})
                if kind == "wide":
                    start, searched = [], []
                    for t in study.get_trials(deepcopy=False):
                        r = trial_record(t)
                        if t.state.name == "COMPLETE" and r.val_drop is not None:
                            (start if r.is_uniform or r.role == "baseline"
                             else searched).append(r.val_drop)
                    if start and searched:
                        entry["proxy_gain"].append(float(min(searched) - min(start)))
        for rep in row["replicates"]:
            if rep.get("wide"):
                entry["from_start"].append(rep["wide"]["role"] != "searched")
        pool = list(nets.values())
        entry["networks"] = len(pool)
        entry["tau_proxy_test"] = _tau([e["proxy_drop"] for e in pool if e["proxy_drop"] is not None],
                                       [e["test_mean"] for e in pool if e["proxy_drop"] is not None])
        entry["tau_val_test"] = _tau([e["val_mean"] for e in pool], [e["test_mean"] for e in pool])
        wins = [r["wide"]["test_mean"] for r in row["replicates"] if r.get("wide")]
        if pool:
            best = min(pool, key=lambda e: e["test_mean"])
            entry["best_on_test"] = {"label": best["label"], "test_mean": best["test_mean"]}
            if wins:
                entry["headroom"] = float(np.mean(wins) - best["test_mean"])
        out.append(entry)
    return out


def interval_of(h: dict[str, Any]) -> tuple[float, float]:
    """The interval of a hierarchical bootstrap result (whatever its keys are named)."""
    for lo, hi in (("lo", "hi"), ("ci_lo", "ci_hi"), ("boot_lo", "boot_hi")):
        if lo in h and hi in h:
            return float(h[lo]), float(h[hi])
    raise KeyError("interval")


def write_report(config: PayoffConfig) -> dict[str, Any]:
    """Write report.md and summary.json from the storage; return the summary."""

    rows, done = regime_table(config)
    planned = 2 * len(config.regimes) * len(config.replicates)
    summary = {"config": _plain(asdict(config)), "rows": rows, "done": done, "planned": planned,
               "verdicts": verdicts(rows, config) if done else [],
               "limits": limits(config, rows) if done else [], "machine": machine(),
               "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_plain) + "\n")
    (out / "report.md").write_text(format_report(summary))
    (out / "readme.md").write_text(readme_block(summary))
    return summary


README_BEGIN = "<!-- payoff:begin (evoprune payoff --report-only writes it; do not edit) -->"
README_END = "<!-- payoff:end -->"


def _mean_of(entries: Sequence[dict[str, Any] | None]) -> str:
    """The mean test drop over replicates' winners, `…` while none is retrained."""
    got = [e["test_mean"] for e in entries if e]
    return f"{np.mean(got):.2f}" if got else "…"


def _images(train_size: float | int | None) -> str:
    """The training set a plan uses, in words."""
    if train_size is None:
        return "all training images"
    return f"{train_size:,} training images" if train_size >= 1 else \
        f"{100 * train_size:g}% of the training images"


def readme_block(s: dict[str, Any]) -> str:
    """The README's first-screen table: per regime the test drop (pp, mean over retraining seeds
    and search replicates) of uniform, the best heuristic, the two searches; the verdicts."""
    c = s["config"]
    lines = [README_BEGIN,
             f"{c['model']} on {c['dataset']} ({_images(c['train_size'])}), "
             f"{s['done']} of {s['planned']} studies done; test drop in pp, lower is better "
             f"({c['retrain']['epochs']}-epoch fine-tune, {c['retrain']['seeds']} seeds, "
             f"winners chosen on validation; {s['machine']}):", "",
             f"| c_flops | uniform | best heuristic | mCB-{c['paper_mcb']:g} search | wide search |",
             "|---:|---:|---:|---:|---:|"]
    cpu = {"heuristic": [], "wide": []}
    for row in sorted(s["rows"], key=lambda r: -r["c_flops"]):
        reps = row.get("replicates", [])
        best = row.get("best_heuristic")
        b = row["heuristics"].get(best) if best else None
        lines.append(f"| {row['c_flops']:g} | {_mean_of([row.get('uniform')])} | "
                     + (f"{_mean_of([b])} ({best})" if b else "…") + " | "
                     f"{_mean_of([r.get('mcb') for r in reps])} | "
                     f"{_mean_of([r.get('wide') for r in reps])} |")
        cpu["heuristic"] += list(row.get("heuristic_cpu_seconds", {}).values())
        cpu["wide"] += [r["wide"]["cpu_seconds"] for r in reps if r.get("wide")]
    lines.append("")
    for v in s["verdicts"][:2]:
        name = f"{NAMES[v['a']]} − {NAMES[v['b']]}"
        if v["verdict"] == "pending":
            lines.append(f"- {name}: pending ({v.get('regimes', 0)} regime(s) so far)")
        else:
            lo, hi = interval_of(v)
            lines.append(f"- {name}: {v['estimate']:+.2f} pp [{lo:+.2f}, {hi:+.2f}], n "
                         f"{v['n_clusters']} regime × replicate clusters: **{v['verdict']}**")
    d = limits_digest(s.get("limits", []))
    if d["regimes"]:
        lines.append(f"- inside a regime (median of {d['regimes']}): the "
                     f"{c['proxy_epochs']}-epoch proxy ranks the retrained networks' test drops "
                     f"with Kendall τ {_f(d['tau_proxy_test'])}, their retrained validation with "
                     f"τ {_f(d['tau_val_test'])}; the wide search returned its start (uniform or "
                     f"a heuristic) in {d['from_start']} of {d['replicates']} replicates")
    if cpu["heuristic"] and cpu["wide"]:
        lines.append(f"- compute: a heuristic {np.median(cpu['heuristic']) / 60:.0f} CPU min "
                     f"(its retraining included), a wide search {np.median(cpu['wide']) / 60:.0f} "
                     "(median)")
    lines.append(README_END)
    return "\n".join(lines) + "\n"


def has_markers(path: str | Path) -> bool:
    """Whether `path` is a file holding both payoff markers."""
    file = Path(path)
    return file.is_file() and README_BEGIN in (text := file.read_text()) and README_END in text


def update_readme(path: str | Path, block: str) -> bool:
    """Replace the block between the payoff markers in `path`; False where it has none."""
    if not has_markers(path):
        return False
    text = Path(path).read_text()
    file = Path(path)
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    file.write_text(head + block.rstrip("\n") + tail)
    return True


def _plain(x: Any) -> Any:
    if isinstance(x, tuple):
        return list(x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _cell(e: dict[str, Any] | None) -> str:
    if e is None:
        return "…"
    sd = float(np.std(e["test"], ddof=1)) if len(e["test"]) > 1 else math.nan
    return f"{e['test_mean']:.2f} ± {sd:.2f}"


def limits_digest(lim: list[dict[str, Any]]) -> dict[str, Any]:
    """The limits over regimes: median τs (inside each regime), replicates whose winner was a
    start recipe, replicates whose search beat its start on the proxy, the mean headroom."""
    def med(key: str) -> float | None:
        got = [e[key] for e in lim if e.get(key) is not None]
        return float(np.median(got)) if got else None
    starts = [f for e in lim for f in e["from_start"]]
    gains = [g for e in lim for g in e["proxy_gain"]]
    heads = [e["headroom"] for e in lim if "headroom" in e]
    return {"tau_proxy_test": med("tau_proxy_test"), "tau_val_test": med("tau_val_test"),
            "regimes": sum(e.get("tau_val_test") is not None for e in lim),
            "from_start": sum(starts), "replicates": len(starts),
            "proxy_beaten": sum(g < 0 for g in gains), "searches": len(gains),
            "headroom": float(np.mean(heads)) if heads else None}


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "…" if x is None else format(x, fmt)


def limits_lines(lim: list[dict[str, Any]], proxy_epochs: int) -> list[str]:
    """The report's section on what limits the search."""
    lines = ["", "## What limits the search (measured inside each regime)", "",
             "Every distinct network retrained in a regime: the uniform recipe, the heuristics "
             "and each study's top-k (so the proxy is read among its own favourites, not at "
             "random). τ: Kendall τ-b against the mean retrained test drop. Headroom: the wide "
             "winners' mean test drop minus the best network's on test (what a perfect selector "
             "among these networks would gain; the minimum of noisy means, so an upper bound). "
             "Proxy gain: per wide replicate, its best searched proxy drop minus the best of "
             "the recipes it started from (negative: the search beat its start by its own "
             "measure).", "",
             f"| c_flops | networks | τ proxy ({proxy_epochs} epoch) → test | τ retrained val → "
             "test | best on test | headroom (pp) | proxy gain (pp) | wide winner is a start "
             "recipe |", "|---:|---:|---:|---:|---|---:|---|---|"]
    for e in lim:
        best = e.get("best_on_test")
        lines.append(
            f"| {e['c_flops']:g} | {e.get('networks', 0)} | {_f(e.get('tau_proxy_test'))} | "
            f"{_f(e.get('tau_val_test'))} | "
            + (f"{best['label']} ({best['test_mean']:.2f})" if best else "…")
            + f" | {_f(e.get('headroom'))} | "
            + ("; ".join(f"{g:+.2f}" for g in e["proxy_gain"]) or "…") + " | "
            + ("; ".join("yes" if f else "no" for f in e["from_start"]) or "…") + " |")
    d = limits_digest(lim)
    if d["regimes"]:
        lines += ["", f"- over {d['regimes']} regime(s): median τ proxy → test "
                  f"{_f(d['tau_proxy_test'])}, retrained val → test {_f(d['tau_val_test'])}; "
                  f"the wide winner is a start recipe in {d['from_start']} of "
                  f"{d['replicates']} replicates; the search beat its start on the proxy in "
                  f"{d['proxy_beaten']} of {d['searches']}; mean headroom "
                  f"{_f(d['headroom'])} pp"]
    return lines


def format_report(s: dict[str, Any]) -> str:
    """The report: the table per regime, the regime-level verdicts, compute."""
    c = s["config"]
    rt = c["retrain"]
    lines = [f"# Does the search pay? {c['model']} on {c['dataset']}", "",
             f"{s['done']} of {s['planned']} studies searched and retrained "
             f"({len(c['replicates'])} search replicates per regime, seeds "
             f"{', '.join(map(str, c['replicates']))}). Every network below is retrained alike: "
             f"{rt['mode']}, {rt['epochs']} epochs, batch {rt['batch_size']}, retraining seeds "
             f"0–{rt['seeds'] - 1} (paired across networks). Selection reads validation; the "
             "table gives TEST accuracy drops in pp (mean ± SD over the retraining seeds). "
             f"Searches: NSGA-II, {c['n_trials']} trials per study (population "
             f"{c['population']}), proxy {c['proxy_epochs']} epoch(s) at lr {c['proxy_lr']:g}.",
             "", f"machine: {s['machine']}; written {s['written']}", "",
             "| c_flops | uniform | " + " | ".join(HEURISTICS)
             + " | best heuristic (val) | mCB winner per replicate | wide winner per replicate |",
             "|---:|---:|" + "---:|" * len(HEURISTICS) + "---|---|---|"]
    for row in s["rows"]:
        heur = [_cell(row["heuristics"].get(h)) for h in HEURISTICS]
        reps = row["replicates"]
        mcb = "; ".join(_cell(r.get("mcb")) for r in reps)
        wide = "; ".join(_cell(r.get("wide")) + (
            f" ({r['wide']['role']}{' ' + r['wide']['criterion'] if r['wide']['criterion'] else ''})"
            if r.get("wide") and r["wide"]["role"] != "searched" else "") for r in reps)
        lines.append(f"| {row['c_flops']:g} | {_cell(row['uniform'])} | " + " | ".join(heur)
                     + f" | {row.get('best_heuristic', '…')} | {mcb} | {wide} |")
    lines += ["", "## Regime-level comparisons", "",
              "Unit: the regime × search replicate (a cluster); the retraining seeds are nested "
              "inside it (hierarchical bootstrap: clusters resampled, then seeds within); a "
              "pair of networks met twice in one regime counts once. "
              f"Negative = the first has the smaller test drop. α = {c['alpha']}, "
              f"{100 * c['level']:.0f}% intervals.", ""]
    for v in s["verdicts"]:
        name = f"{NAMES[v['a']]} − {NAMES[v['b']]}"
        if v["verdict"] == "pending":
            lines.append(f"- {name}: pending ({v['n_clusters']} distinct cluster(s) from "
                         f"{v.get('regimes', 0)} regime(s); a verdict needs {MIN_REGIMES} "
                         "regimes or more)")
            continue
        lo, hi = interval_of(v)
        lines.append(f"- {name}: {v['estimate']:+.2f} pp [{lo:+.2f}, {hi:+.2f}], p "
                     f"{v.get('p', math.nan):.3g}, n {v['n_clusters']} clusters: "
                     f"**{v['verdict']}**")
    lines += limits_lines(s.get("limits", []), c["proxy_epochs"])
    lines += ["", "## Compute (CPU seconds on this machine)", ""]
    for row in s["rows"]:
        parts = []
        if "uniform_cpu_seconds" in row:
            parts.append(f"uniform {row['uniform_cpu_seconds'] / 60:.1f} min")
            parts += [f"{k} {v / 60:.1f} min" for k, v in row["heuristic_cpu_seconds"].items()]
        for r in row["replicates"]:
            for kind in ("mcb", "wide"):
                if r.get(kind):
                    parts.append(f"{kind} s{r['seed']} {r[kind]['cpu_seconds'] / 60:.1f} min")
        lines.append(f"- c_flops {row['c_flops']:g}: " + (", ".join(parts) or "pending"))
    lines += ["", "At the median paces of this run (a trial slowed by another job on this shared "
              "machine, or paused, counts as a typical one). A heuristic: its allocation (about "
              "a second), one proxy trial and its retrainings; a search: all its proxy trials and "
              "the retrainings its choice reads (the wide search's include the uniform recipe "
              "and the heuristics it starts from)."]
    return "\n".join(lines) + "\n"
