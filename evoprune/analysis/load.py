"""Read studies and their COMPLETE trials from a storage; group them by regime and space."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evoprune.errors import EvopruneError


@dataclass(frozen=True)
class StudyData:
    """One study's space configuration and its COMPLETE trials as arrays (one row per trial)."""

    name: str
    model: str
    dataset: str
    space: dict[str, Any]
    proxy: dict[str, Any]
    sampler: str
    base_acc: float
    units: list[str]
    numbers: np.ndarray
    acc_drop: np.ndarray  # percentage points, proxy
    flops_ratio: np.ndarray
    params_ratio: np.ndarray
    mcb: np.ndarray
    recipe_std: np.ndarray
    recipes: np.ndarray  # (M, N)
    is_uniform: np.ndarray
    retrained: dict[int, float] = field(default_factory=dict)  # trial number -> retrained drop

    @property
    def label(self) -> str:
        """The space as the paper writes it: STD-0.1, mCB-1, initial, params."""
        s = self.space
        if s.get("c_std") is not None:
            return f"STD-{s['c_std']:g}"
        if s.get("c_mcb") is not None:
            return f"mCB-{s['c_mcb']:g}"
        return str(s.get("kind", "initial"))

    @property
    def regime(self) -> tuple[str, float]:
        """("flops", c_flops) or ("params", c_params): the budget the space holds fixed."""
        s = self.space
        if s.get("c_flops") is not None:
            return ("flops", float(s["c_flops"]))
        return ("params", float(s["c_params"]))

    @property
    def uniform_drop(self) -> float | None:
        """Proxy drop of the uniform baseline, if the study holds it."""
        idx = np.flatnonzero(self.is_uniform)
        return float(self.acc_drop[idx[0]]) if len(idx) else None

    @property
    def uniform_mcb(self) -> float | None:
        """mCB of the uniform baseline, if the study holds it."""
        idx = np.flatnonzero(self.is_uniform)
        return float(self.mcb[idx[0]]) if len(idx) else None

    @property
    def searched(self) -> np.ndarray:
        """Mask of the trials that are not the uniform baseline (the space's population)."""
        return ~self.is_uniform

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

    from evoprune.retrain import retrain_results
    from evoprune.storage import check_storage, open_storage

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
        attrs = study.user_attrs
        if "space" not in attrs or "base_acc" not in attrs:
            warnings.append(f"study {name!r} was not made by evoprune search: left out")
            continue
        trials = [t for t in study.get_trials(deepcopy=False)
                  if t.state.name == "COMPLETE" and math.isfinite(t.user_attrs.get("acc_drop", math.nan))]
        if not trials:
            warnings.append(f"study {name!r} has no COMPLETE trial: left out")
            continue
        retrained = {n: float(r["acc_drop"]) for n, r in retrain_results(study).items()
                     if isinstance(r, dict) and "acc_drop" in r}

        def col(key: str, trials: list = trials) -> np.ndarray:
            return np.array([float(t.user_attrs[key]) for t in trials])

        out.append(StudyData(
            name=name, model=attrs.get("model", "?"), dataset=attrs.get("dataset", "?"),
            space=dict(attrs["space"]), proxy=dict(attrs.get("proxy", {})),
            sampler=str(attrs.get("sampler", {}).get("name", "?")),
            base_acc=float(attrs["base_acc"]), units=[u["name"] for u in attrs.get("units", [])],
            numbers=np.array([t.number for t in trials]), acc_drop=col("acc_drop"),
            flops_ratio=col("flops_ratio"), params_ratio=col("params_ratio"), mcb=col("mcb"),
            recipe_std=col("recipe_std"),
            recipes=np.array([t.user_attrs["recipe"] for t in trials], dtype=float),
            is_uniform=np.array([bool(t.user_attrs.get("is_uniform")) for t in trials]),
            retrained=retrained))
    if not out:
        raise EvopruneError("no study with COMPLETE trials to analyse" +
                            (f" ({'; '.join(warnings)})" if warnings else ""))
    return out, warnings


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
                       "the same --proxy-epochs, --proxy-lr and --proxy-batch-size")
    return out
