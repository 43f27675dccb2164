"""What closes the gap between the wide search and the best heuristic: one knob at a time,
measured on copies of the payoff's own wide studies.

Each arm copies a wide study of the payoff storage (its trials and retrainings) into a study
of its own in a storage beside it, turns one knob, and chooses its winner as the payoff does
(the lowest mean retrained validation drop among the study's retrained trials, the uniform
recipe and the heuristics), reported on test and paired by retraining seed:

- `retrain_more`: the top-k by proxy widened to `top_k` (the proxy chooses which networks are
  retrained, and inside a regime it ranks their test drops far worse than their retrained
  validation does: `payoff.limits`);
- `search_longer`: the search continued to `n_trials` (more NSGA-II generations from the same
  start), then its top-k retrained as before.

Each arm's cost is the CPU it adds to the payoff's search, at the payoff's median paces.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from evoprune.analysis.regime_stats import hierarchical_bootstrap
from evoprune.core.config import read_toml
from evoprune.core.events import Progress
from evoprune.core.machine import machine
from evoprune.errors import EvopruneError
from evoprune.experiments.payoff import (
    PayoffConfig,
    entry_of,
    interval_of,
    label_of,
    load_payoff,
    regime_table,
    retrain_pace,
    retrained_of,
    searches,
    study_name,
    trial_pace,
)
from evoprune.searching import run_search
from evoprune.searching.study import n_complete
from evoprune.store.storage import copy_study, find_study, sqlite_path, storage_kind
from evoprune.training.retraining import RetrainConfig, run_retrain, select_top_k

Say = Callable[[str], None]
ARMS = ("retrain_more", "search_longer")


@dataclass(frozen=True)
class GapConfig:
    """The arms, the regimes they run at and each arm's knob (the payoff plan's [gap] table)."""

    regimes: tuple[float, ...] = (0.1,)
    arms: tuple[str, ...] = ARMS
    top_k: int = 6  # retrain_more: the searched trials retrained, best by proxy first
    n_trials: int = 72  # search_longer: COMPLETE trials the continued search reaches
    storage: str | None = None  # None: gap.db beside the payoff's SQLite storage
    out: str | None = None  # None: the payoff's folder (gap.md, gap.json)

    def __post_init__(self) -> None:
        """Refuse arms that do not exist and knobs that turn nothing."""
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown or not self.arms:
            raise EvopruneError(f"gap: arms are one or more of {', '.join(ARMS)}"
                                + (f", not {', '.join(unknown)}" if unknown else ""))
        if self.top_k < 1 or self.n_trials < 1:
            raise EvopruneError("gap: `top_k` and `n_trials` must be at least 1")


def load_gap(path: str | Path) -> tuple[PayoffConfig, GapConfig]:
    """The payoff plan at `path` and its [gap] table."""
    payoff = load_payoff(path)
    raw = dict(read_toml(Path(path), "payoff plan").get("gap", {}))
    known = set(GapConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise EvopruneError(f"{path}: [gap] has unknown keys {', '.join(unknown)}")
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return payoff, resolved(payoff, GapConfig(**raw))


def resolved(payoff: PayoffConfig, gap: GapConfig) -> GapConfig:
    """`gap` with its storage and out filled in beside the payoff's, checked against the plan."""
    missing = [c for c in gap.regimes if c not in payoff.regimes]
    if missing:
        raise EvopruneError(f"gap: regimes {missing} are not in the payoff plan's "
                            f"{list(payoff.regimes)}")
    if gap.top_k <= payoff.retrain.top_k and "retrain_more" in gap.arms:
        raise EvopruneError(f"gap: `top_k` must exceed the payoff's ({payoff.retrain.top_k})")
    if gap.n_trials <= payoff.n_trials and "search_longer" in gap.arms:
        raise EvopruneError(f"gap: `n_trials` must exceed the payoff's ({payoff.n_trials})")
    storage = gap.storage
    if storage is None:
        if storage_kind(payoff.storage) != "sqlite":
            raise EvopruneError("gap: give `storage` (the payoff's is not a SQLite file)")
        storage = f"sqlite:///{sqlite_path(payoff.storage).parent / 'gap.db'}"
    return replace(gap, storage=storage, out=gap.out or payoff.out)


def arm_study(c_flops: float, seed: int, arm: str) -> str:
    """The study of one arm: wide-f0.1-s1-retrain_more."""
    return f"{study_name('wide', c_flops, seed)}-{arm}"


def run_gap(payoff: PayoffConfig, gap: GapConfig, say: Say | None = None,
            progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) every arm on copies of the payoff's wide studies; write gap.md/gap.json."""

    say = say or (lambda _s: None)
    gap = resolved(payoff, gap)
    plan = {(c, s): cfg for c, s, kind, cfg in searches(payoff) if kind == "wide"}
    for c in gap.regimes:
        for seed in payoff.replicates:
            source = study_name("wide", c, seed)
            found = find_study(payoff.storage, source)
            if found is None or not retrained_of(found):
                raise EvopruneError(f"gap: the payoff has not retrained {source} yet: run the "
                                    "payoff plan first")
            for arm in gap.arms:
                name = arm_study(c, seed, arm)
                if find_study(gap.storage, name) is None:
                    copy_study(payoff.storage, source, gap.storage, name)
                    say(f"{name}: copied from {source}")
                search = replace(plan[(c, seed)], storage=gap.storage, study_name=name)
                settings = replace(payoff.retrain, baseline=False)
                if arm == "search_longer":
                    run_search(replace(search, n_trials=gap.n_trials), progress)
                else:
                    settings = replace(settings, top_k=gap.top_k)
                run_retrain(RetrainConfig(study_name=name, storage=gap.storage,
                                          settings=settings, device=payoff.device,
                                          precision=payoff.precision), progress)
                say(f"{name}: done")
    return write_gap(payoff, gap)


def gap_table(payoff: PayoffConfig, gap: GapConfig) -> list[dict[str, Any]]:
    """Per regime, replicate and arm: the arm's winner beside the payoff's and the best
    heuristic, each difference paired by seed, and the CPU the arm adds."""

    gap = resolved(payoff, gap)
    seeds = list(range(payoff.retrain.seeds))
    rows, _ = regime_table(payoff)
    by_c = {r["c_flops"]: r for r in rows}
    per_net = len(seeds) * retrain_pace(payoff)
    out = []
    for c in gap.regimes:
        row = by_c[c]
        best = row["heuristics"].get(row.get("best_heuristic", ""))
        fixed = list(row["heuristics"].values()) + ([row["uniform"]] if row["uniform"] else [])
        for rep in row["replicates"]:
            seed, won = rep["seed"], rep.get("wide")
            source = find_study(payoff.storage, study_name("wide", c, seed))
            for arm in gap.arms:
                study = find_study(gap.storage, arm_study(c, seed, arm))
                entry: dict[str, Any] = {"c_flops": c, "seed": seed, "arm": arm, "done": False}
                out.append(entry)
                if study is None or source is None or won is None or best is None:
                    continue
                got = {n: x for n, x in retrained_of(study).items()
                       if x["role"] == "searched" and set(seeds) <= set(x["test"])}
                before = {n for n, x in retrained_of(source).items() if x["role"] == "searched"}
                wanted = gap.top_k if arm == "retrain_more" else payoff.retrain.top_k
                pace, _ = trial_pace(study)
                n, n0 = n_complete(study), n_complete(source)  # a failed, rerun trial counts once
                top = {t.number for t in select_top_k(study.get_trials(deepcopy=False), wanted)}
                if not top <= set(got) or (arm == "search_longer" and n < gap.n_trials):
                    continue  # still searching, or its top-k not yet retrained
                pool = [{**entry_of(x, seeds), "label": label_of(x, "wide", seed)}
                        for x in got.values()]
                pool += [{**e, "label": e["criterion"] or "uniform"} for e in fixed]
                win = min(pool, key=lambda e: e["val_mean"])
                added = (n - n0) * pace + len(set(got) - before) * per_net
                entry.update(done=True, winner=win, retrained=len(got), trials=n,
                             vs_best=_paired(win, best), vs_payoff=_paired(win, won),
                             payoff_winner=won["test_mean"], best_heuristic=best["test_mean"],
                             added_cpu_seconds=added)
    return out


def _paired(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
    """Per retraining seed, a's test drop minus b's."""
    return [float(x - y) for x, y in zip(a["test"], b["test"])]


def gap_verdicts(table: list[dict[str, Any]], payoff: PayoffConfig) -> list[dict[str, Any]]:
    """Per arm, its winner − the best heuristic over the regime × replicate clusters."""
    out = []
    for arm in dict.fromkeys(e["arm"] for e in table):
        done = [e for e in table if e["arm"] == arm and e["done"]]
        entry: dict[str, Any] = {"arm": arm, "n_clusters": len(done),
                                 "regimes": len({e["c_flops"] for e in done})}
        if len(done) >= 2:
            h = hierarchical_bootstrap([np.array(e["vs_best"]) for e in done],
                                       n_boot=payoff.n_boot, level=payoff.level, seed=0)
            lo, hi = interval_of(h)
            entry.update(h, verdict="better" if hi < 0 else "worse" if lo > 0 else "not shown")
        else:
            entry["verdict"] = "pending"
        out.append(entry)
    return out


def write_gap(payoff: PayoffConfig, gap: GapConfig) -> dict[str, Any]:
    """Write gap.md and gap.json from the storages; return the summary."""
    gap = resolved(payoff, gap)
    table = gap_table(payoff, gap)
    summary = {"gap": asdict(gap), "table": table, "verdicts": gap_verdicts(table, payoff),
               "machine": machine(), "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = Path(gap.out or payoff.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gap.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "gap.md").write_text(format_gap(summary, payoff))
    return summary


ARM_NAMES = {"retrain_more": "retrain more of the search's candidates",
             "search_longer": "search longer"}


def format_gap(s: dict[str, Any], payoff: PayoffConfig) -> str:
    """The gap report: per arm and replicate the winner against the best heuristic."""
    g = s["gap"]
    lines = ["# What closes the gap? The wide search against the best heuristic, one knob at a "
             "time", "",
             f"Each arm continues a copy of the payoff's wide study (`{payoff.out}`, storage "
             f"`{g['storage']}`): **retrain_more** retrains the top {g['top_k']} searched trials "
             f"by proxy instead of {payoff.retrain.top_k}; **search_longer** continues the "
             f"search from {payoff.n_trials} to {g['n_trials']} trials, then retrains its top "
             f"{payoff.retrain.top_k}. Winners are chosen on validation as the payoff's "
             f"(the study's retrained trials, the uniform recipe and the heuristics); test drops "
             f"in pp, differences paired by retraining seed (0–{payoff.retrain.seeds - 1}).", "",
             f"machine: {s['machine']}; written {s['written']}", "",
             "| c_flops | replicate | arm | winner | its test drop | payoff's winner | best "
             "heuristic | winner − best heuristic | networks retrained | trials | CPU added "
             "(min) |", "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in s["table"]:
        if not e["done"]:
            lines.append(f"| {e['c_flops']:g} | s{e['seed']} | {e['arm']} | pending | | | | | "
                         "| | |")
            continue
        w = e["winner"]
        lines.append(f"| {e['c_flops']:g} | s{e['seed']} | {e['arm']} | {w['label']} | "
                     f"{w['test_mean']:.2f} | {e['payoff_winner']:.2f} | "
                     f"{e['best_heuristic']:.2f} | {np.mean(e['vs_best']):+.2f} | "
                     f"{e['retrained']} | {e['trials']} | {e['added_cpu_seconds'] / 60:.1f} |")
    lines += ["", "Over the regime × replicate clusters (hierarchical bootstrap, seeds nested; "
              f"{100 * payoff.level:.0f}% intervals; negative = the arm's winner has the "
              "smaller test drop):", ""]
    for v in s["verdicts"]:
        name = f"{v['arm']} ({ARM_NAMES[v['arm']]}): winner − best heuristic"
        if v["verdict"] == "pending":
            lines.append(f"- {name}: pending ({v['n_clusters']} cluster(s))")
            continue
        lo, hi = interval_of(v)
        few = " (one regime: exploratory)" if v["regimes"] < 2 else ""
        lines.append(f"- {name}: {v['estimate']:+.2f} pp [{lo:+.2f}, {hi:+.2f}], p "
                     f"{v.get('p', math.nan):.3g}, n {v['n_clusters']} clusters{few}: "
                     f"**{v['verdict']}**")
    return "\n".join(lines) + "\n"
