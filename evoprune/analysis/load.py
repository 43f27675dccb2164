"""Read studies and their COMPLETE trials from a storage; group them by regime and space."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evoprune.analysis.regime_stats import dedupe_networks
from evoprune.errors import EvopruneError
from evoprune.spaces import PruningSpace
from evoprune.store.schema import retrain_results, study_record, trial_record
from evoprune.store.storage import check_storage, open_storage


def regime_name(regime: tuple[str, float]) -> str:
    """A regime as the report and the figures name it: "c_flops = 0.25", "c_params = 0.1"."""
    kind, target = regime
    return f"c_{kind} = {float(target):g}"


@dataclass(frozen=True)
class StudyData:
    """One study's space configuration and its COMPLETE trials as arrays (one row per trial)."""

    name: str
    model: str
    dataset: str
    space: dict[str, Any]
    proxy: dict[str, Any]
    sampler: str
    base_acc: float  # on the selection split (`split`)
    units: list[str]
    numbers: np.ndarray
    val_drop: np.ndarray  # percentage points, proxy, on the selection split
    flops_ratio: np.ndarray
    params_ratio: np.ndarray
    mcb: np.ndarray
    recipe_std: np.ndarray
    recipes: np.ndarray  # (M, N)
    is_uniform: np.ndarray
    retrained: dict[int, dict[int, float]] = field(default_factory=dict)  # trial -> seed -> test drop
    seeds: np.ndarray | None = None  # the proxy fine-tune's seed per trial (None: not stored)
    split: str = "val"  # the selection split the drops were read on (test before schema 3)
    base_test_acc: float | None = None
    is_baseline: np.ndarray | None = None  # heuristic allocations (role "baseline"): no population
    is_duplicate: np.ndarray | None = None  # a network an earlier trial already holds
    channels: np.ndarray | None = None  # (M, N) kept channels per unit (None: not stored)

    @property
    def label(self) -> str:
        """The space as the paper writes it: STD-0.1, mCB-1, initial, params."""
        from dataclasses import fields


        known = {f.name for f in fields(PruningSpace)}  # older schemas stored more (std_tol)
        return PruningSpace(**{k: v for k, v in self.space.items() if k in known}).label

    @property
    def regime(self) -> tuple[str, float]:
        """("flops", c_flops) or ("params", c_params): the budget the space holds fixed."""
        s = self.space
        if s.get("c_flops") is not None:
            return ("flops", float(s["c_flops"]))
        return ("params", float(s["c_params"]))

    @property
    def uniform_drop(self) -> float | None:
        """Proxy drop of the uniform baseline (the mean over its seeds), if the study holds it."""
        idx = np.flatnonzero(self.is_uniform)
        return float(self.val_drop[idx].mean()) if len(idx) else None

    @property
    def uniform_drops(self) -> np.ndarray:
        """Proxy drops of the uniform recipe, one per seed: their spread is the proxy's noise."""
        return self.val_drop[self.is_uniform]

    @property
    def uniform_mcb(self) -> float | None:
        """mCB of the uniform baseline, if the study holds it."""
        idx = np.flatnonzero(self.is_uniform)
        return float(self.mcb[idx[0]]) if len(idx) else None

    @property
    def searched(self) -> np.ndarray:
        """Mask of the sampled trials: neither the uniform recipe nor a heuristic baseline."""
        base = self.is_baseline if self.is_baseline is not None else np.zeros_like(self.is_uniform)
        return ~self.is_uniform & ~base

    @property
    def distinct(self) -> np.ndarray:
        """Mask of the space's population: sampled trials whose network no earlier trial holds
        (the first occurrence kept, with its own drop and seed)."""
        dup = self.is_duplicate if self.is_duplicate is not None else np.zeros_like(self.is_uniform)
        return self.searched & ~dup

    def duplicates(self) -> dict[str, int]:
        """Networks and trials: how many distinct, how often the most repeated one (the uniform
        network's copies counted with it), and the trials the population leaves out."""
        if self.channels is None:
            return {"trials": len(self.numbers), "distinct": len(self.numbers), "most": 1,
                    "uniform_copies": int(self.is_uniform.sum()), "dropped": 0}

        keep, counts = dedupe_networks(self.channels)
        u = np.flatnonzero(self.is_uniform)
        copies = (int(np.all(self.channels == self.channels[u[0]], axis=1).sum()) if len(u)
                  else 0)
        return {"trials": len(self.numbers), "distinct": len(keep), "most": int(counts.max()),
                "uniform_copies": copies, "dropped": int((self.searched & ~self.distinct).sum())}

    def proxy_key(self) -> tuple:
        """What makes two proxy budgets comparable: epochs, lr, batch size."""
        p = self.proxy
        return (p.get("epochs"), p.get("lr"), p.get("batch_size"))


def load_studies(storage: str, names: list[str] | None = None) -> tuple[list[StudyData], list[str]]:
    """Load studies by name (all when None) with their COMPLETE trials; return (studies, warnings).

    Studies with no COMPLETE trial or not written by evoprune are left out with a warning; an
    empty storage, an unknown name or nothing left to analyse raise EvopruneError.
    """
    import optuna


    check_storage(storage, must_exist=True)
    store = open_storage(storage, wal=False)
    available = [s.study_name for s in optuna.get_all_study_summaries(store)]
    if not available:
        raise EvopruneError(f"storage {storage} holds no studies: run evoprune search first")
    if names:
        missing = [n for n in names if n not in available]
        if missing:
            raise EvopruneError(f"no study named {', '.join(map(repr, missing))} in {storage} "
                                f"(it holds {', '.join(available)})")
    warnings: list[str] = []
    out = []
    for name in names or available:
        study = optuna.load_study(study_name=name, storage=store)
        try:
            record = study_record(study)
        except EvopruneError as exc:
            if "upgrade evoprune" in str(exc):  # a newer schema: refuse, do not skip silently
                raise
            warnings.append(f"study {name!r} was not made by evoprune search: left out")
            continue
        trials = [t for t in study.get_trials(deepcopy=False)
                  if t.state.name == "COMPLETE" and trial_record(t).finite]
        if not trials:
            warnings.append(f"study {name!r} has no COMPLETE trial: left out")
            continue
        retrained = {n: {int(r.seed): float(r.test_drop) for r in rs}
                     for n, rs in retrain_results(study).items()}
        trials.sort(key=lambda t: t.number)  # first occurrence = earliest trial
        records = [trial_record(t) for t in trials]
        channels = (np.array([r.channels for r in records]) if all(
            r.channels for r in records) and len({len(r.channels) for r in records}) == 1
            else None)
        is_uniform = np.array([r.is_uniform for r in records])

        def col(key: str, records: list = records) -> np.ndarray:
            return np.array([float(getattr(r, key)) for r in records])

        out.append(StudyData(
            name=name, model=record.model, dataset=record.dataset, space=record.space,
            proxy=record.proxy, sampler=record.sampler, base_acc=record.base_val_acc,
            units=record.unit_names, numbers=np.array([t.number for t in trials]),
            val_drop=col("val_drop"), flops_ratio=col("flops_ratio"),
            params_ratio=col("params_ratio"), mcb=col("mcb"), recipe_std=col("recipe_std"),
            recipes=np.array([r.recipe for r in records], dtype=float),
            is_uniform=is_uniform, is_baseline=np.array([r.is_baseline for r in records]),
            is_duplicate=duplicate_mask(channels, is_uniform), channels=channels,
            retrained=retrained, split=record.selection_split,
            base_test_acc=record.base_test_acc,
            seeds=(np.array([r.seed for r in records]) if all(r.seed is not None for r in records)
                   else None)))
    if not out:
        raise EvopruneError("no study with COMPLETE trials to analyse" +
                            (f" ({'; '.join(warnings)})" if warnings else ""))
    return out, warnings


def duplicate_mask(channels: np.ndarray | None, is_uniform: np.ndarray) -> np.ndarray:
    """Rows (in trial order) whose kept channels an earlier row already holds; the uniform rows
    (the proxy's seed noise) are never marked, but later copies of their network are."""
    dup = np.zeros(len(is_uniform), bool)
    if channels is None:
        return dup

    keep, _ = dedupe_networks(channels)
    dup[:] = True
    dup[keep] = False
    dup[is_uniform] = False
    return dup


def by_regime(studies: list[StudyData]) -> dict[tuple[str, float], list[StudyData]]:
    """Group studies by regime ("flops", c) / ("params", c), in regime order (mildest first)."""
    groups: dict[tuple[str, float], list[StudyData]] = {}
    for s in studies:
        groups.setdefault(s.regime, []).append(s)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])))


def proxy_warnings(groups: dict[tuple[str, float], list[StudyData]]) -> list[str]:
    """Warn where one regime compares studies fine-tuned with different proxy budgets."""
    out = []
    for (kind, target), studies in groups.items():
        keys = {s.proxy_key() for s in studies}
        if len(keys) > 1:
            detail = ", ".join(f"{s.name}: epochs {s.proxy.get('epochs')}, lr {s.proxy.get('lr')}, "
                               f"batch {s.proxy.get('batch_size')}" for s in studies)
            out.append(f"regime {kind} {target:g} compares studies with different proxy budgets "
                       f"({detail}): an unfair comparison (Blalock et al. 2020); search them with "
                       "the same `proxy_epochs`, `proxy_lr` and `proxy_batch_size`")
    return out
