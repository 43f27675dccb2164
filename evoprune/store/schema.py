"""What a study storage holds: the names and types of every study and trial attribute.

The storage is the interface between the stages (search, retrain, `prune --recipe study:…`,
analysis, reproduce; docs/architecture.md, "The storage schema"). Every writer and reader goes
through the typed records here: `StudyRecord` (a study's user_attrs), `TrialRecord` (a trial's),
`RetrainRecord` (a retraining result). `SCHEMA_VERSION` is stored with each study; studies
written before it existed (version 1: a flat configuration) still load, a newer version is refused.

Version 3 separates selection from report: every trial is scored on a validation split carved
from the training set (`val_acc`, `val_drop`, with the proxy fine-tune's `seed`); the test split
is read only for the base network (`base_test_acc`) and for retrained networks (`test_drop`).
In older studies the trials were scored on the test split: they load with that split named.

`gene_names` says how a study names its genes (Optuna params): "unit" (`g002 layer2.1.conv1`,
`searching.genes`), or "index" (`g002`) in studies stored before it was kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoprune.errors import EvopruneError
from evoprune.store.storage import storage_folder

SCHEMA_VERSION = 3
IDENTITY = ("base", "space", "proxy", "sampler", "objectives")  # what a resume must share
BASE_IDENTITY = ("model", "dataset", "residual", "val_size", "train_size")  # data_root may
# move; the splits may not: trials scored on another split (or another base accuracy) would mix
INDEX_NAMES, UNIT_NAMES = "index", "unit"  # genes g002, or g002 layer2.1.conv1
GENE_NAMINGS = (INDEX_NAMES, UNIT_NAMES)
LEGACY_OBJECTIVES = {"acc_drop": "val_drop"}  # the proxy's validation drop, named before val_drop


def drop_pp(base_acc: float, acc: float) -> float:
    """Accuracy drop in percentage points: 100 · (base − acc), accuracies in [0, 1]."""
    return 100.0 * (float(base_acc) - float(acc))


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class Checkpoint:
    """The base weights a study was searched from: a file (or None: weights given in Python).

    A file storage (SQLite, journal) records the path relative to its own folder
    (`relative_to` "storage"), so a study resumes the same from any folder; an RDB storage
    records it absolute. Older studies hold it as given (absolute, or relative to the folder
    the search ran in) and load as before.
    """

    path: str | None
    sha256: str
    relative_to: str | None = None  # "storage": `path` is relative to the storage's folder

    @classmethod
    def recorded(cls, path: str | Path, sha256: str, storage: str) -> Checkpoint:
        """The record of checkpoint file `path` in `storage`: relative to its folder if it has one."""
        import os


        folder = storage_folder(storage)
        full = Path(path).resolve()
        if folder is None:
            return cls(str(full), sha256)
        return cls(os.path.relpath(full, folder), sha256, "storage")

    def resolve(self, storage: str) -> str | None:
        """The checkpoint's path from the current folder (None: weights given in Python)."""
        if self.path is None or self.relative_to != "storage":
            return self.path

        folder = storage_folder(storage)
        return self.path if folder is None else str(folder / self.path)


@dataclass(frozen=True)
class StudyRecord:
    """A study's user_attrs: its configuration tree, base network and figures."""

    config: dict[str, Any]  # the search's configuration tree (evoprune.searching.config)
    checkpoint: Checkpoint
    base_val_acc: float  # top-1 of the base network on the selection split, in [0, 1]
    base_flops: int
    base_params: int
    units: list[dict[str, Any]]  # the prunable units (evoprune.network.units.Units.describe)
    base_test_acc: float | None = None  # top-1 of the base network on the test split
    split_sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # train, val, test
    evoprune_version: str = ""
    gene_names: str = UNIT_NAMES  # the genes' param names (absent in older studies: index)
    created: bool = False  # written last: the creation finished
    schema: int = SCHEMA_VERSION

    # --- reading the tree
    @property
    def selection_split(self) -> str:
        """The split trials were scored on: val (schema 3), test in older studies."""
        return "val" if self.schema >= 3 else "test"

    @property
    def model(self) -> str:
        """The base model's name."""
        return str(self.config["base"]["model"])

    @property
    def dataset(self) -> str:
        """The dataset's name."""
        return str(self.config["base"]["dataset"])

    @property
    def residual(self) -> bool:
        """Whether residual-coupled groups are units."""
        return bool(self.config["base"].get("residual", False))

    @property
    def data_root(self) -> str | None:
        """The dataset's folder at search time."""
        return self.config["base"].get("data_root")

    @property
    def space(self) -> dict[str, Any]:
        """The pruning space as plain data (kind included)."""
        return dict(self.config["space"])

    @property
    def proxy(self) -> dict[str, Any]:
        """The proxy fine-tune's settings."""
        return dict(self.config.get("proxy", {}))

    @property
    def importance(self) -> str:
        """The filter ranking used to prune."""
        return str(self.proxy.get("importance", "l2"))

    @property
    def round_to(self) -> int:
        """Channels kept per unit are a multiple of this."""
        return int(self.space.get("round_to", 1))

    @property
    def sampler(self) -> str:
        """The sampler's name."""
        return str(self.config.get("sampler", {}).get("name", "?"))

    @property
    def unit_names(self) -> list[str]:
        """The units' names, in genotype order."""
        return [u["name"] for u in self.units]

    def identity(self) -> dict[str, Any]:
        """The part of the tree a resumed search must share (else its trials mix)."""
        return identity_of(self.config)

    # --- storage
    def to_attrs(self) -> dict[str, Any]:
        """The study's user_attrs (`created` last: callers write it after the others)."""
        out = dataclasses.asdict(self)
        out["checkpoint"] = _drop_none(out["checkpoint"])
        out["created"] = out.pop("created")
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], name: str = "") -> StudyRecord:
        """Read a study's user_attrs (versions 1-3); refuse other evoprune versions' schemas."""
        version = int(attrs.get("schema", 1))
        if version > SCHEMA_VERSION:
            raise EvopruneError(f"study {name!r} has storage schema {version}; this evoprune reads "
                                f"up to {SCHEMA_VERSION}: upgrade evoprune to read it")
        base_acc = attrs.get("base_val_acc", attrs.get("base_acc"))  # base_acc: version 1-2
        if base_acc is None or ("config" not in attrs and "space" not in attrs):
            raise EvopruneError(f"study {name!r} was not made by evoprune search (no "
                                "configuration or base_acc in its user_attrs)")
        config = dict(attrs["config"]) if version >= 2 else _tree_of_v1(attrs)
        ck = attrs.get("checkpoint", {})
        return cls(config=config, checkpoint=Checkpoint(ck.get("path"), str(ck.get("sha256", "")),
                                                        ck.get("relative_to")),
                   base_val_acc=float(base_acc), base_flops=int(attrs.get("base_flops", 0)),
                   base_params=int(attrs.get("base_params", 0)),
                   units=list(attrs.get("units", [])),
                   base_test_acc=_float_or_none(attrs.get(
                       "base_test_acc", attrs.get("base_acc") if version < 3 else None)),
                   split_sizes={k: int(v) for k, v in (attrs.get("split_sizes") or {}).items()},
                   evoprune_version=str(attrs.get("evoprune_version", "")),
                   gene_names=str(attrs.get("gene_names", INDEX_NAMES)),
                   created=bool(attrs.get("created", False)), schema=version)


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


def objectives_now(names: Sequence[str]) -> tuple[str, ...]:
    """Objective names as evoprune names them now: a stored `acc_drop` is `val_drop`."""
    return tuple(LEGACY_OBJECTIVES.get(n, n) for n in names)


def identity_of(tree: Mapping[str, Any]) -> dict[str, Any]:
    """The identity part of a configuration tree (legacy objective names read as today's)."""
    out = {k: tree.get(k) for k in IDENTITY}
    if out.get("objectives") is not None:
        out["objectives"] = list(objectives_now(out["objectives"]))
    out["base"] = {k: (tree.get("base") or {}).get(k) for k in BASE_IDENTITY}
    proxy = out.get("proxy")
    if isinstance(proxy, Mapping):  # a tree stored before rungs has none; without rungs their
        rungs = list(proxy.get("rungs") or [])  # keep fraction means nothing
        out["proxy"] = {**proxy, "rungs": rungs,
                        "rung_keep": proxy.get("rung_keep") if rungs else None}
    return out


def _tree_of_v1(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 study's flat attrs as a configuration tree."""
    return {"base": {"model": attrs.get("model", "?"), "dataset": attrs.get("dataset", "?"),
                     "residual": bool(attrs.get("residual", False)),
                     "data_root": attrs.get("data_root")},
            "space": dict(attrs.get("space", {})), "proxy": dict(attrs.get("proxy", {})),
            "sampler": dict(attrs.get("sampler", {})),
            "objectives": list(attrs.get("objectives", ["acc_drop"])),
            "seed": attrs.get("seed", 0)}


def study_record(study: Any) -> StudyRecord:
    """The record of an Optuna study."""
    return StudyRecord.from_attrs(study.user_attrs, study.study_name)


def created(study: Any) -> bool:
    """Whether a study's creation finished (attrs, metric names, uniform trials).

    Studies before version 3 count as created once their one uniform trial is queued; from
    version 3 on, only the `created` attr does (a creation killed between the uniform trials
    is finished on resume).
    """
    attrs = study.user_attrs
    if attrs.get("created") or int(attrs.get("schema", 1)) >= 3:
        return bool(attrs.get("created"))
    return ("space" in attrs or "config" in attrs) and any(
        t.user_attrs.get("is_uniform") for t in study.get_trials(deepcopy=False))


@dataclass(frozen=True)
class RetrainRecord:
    """A full retraining of one trial's network with one seed: its val and test results."""

    test_drop: float  # percentage points against the base's test accuracy
    test_acc: float = math.nan  # test top-1 in [0, 1]
    val_drop: float = math.nan  # percentage points against the base's validation accuracy
    val_acc: float = math.nan
    mode: str = ""  # finetune, rewind, scratch or scratch-b
    epochs: int = 0
    lr: float = math.nan
    batch_size: int = 0
    seed: int = 0
    seconds: float = 0.0
    model_path: str = ""
    sha256: str = ""
    precision: str = ""  # fp32 or bf16 (autocast); "" in results written before it was kept

    def to_attrs(self) -> dict[str, Any]:
        """Plain data (an item of a trial's `retrain` attr; the study's `retrain:NUMBER:SEED`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_attrs(cls, d: Mapping[str, Any]) -> RetrainRecord:
        """Read a stored retraining result (extra keys ignored; version 2's acc, acc_drop)."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = {_LEGACY_RETRAIN.get(k, k): v for k, v in d.items()}
        return cls(**{k: v for k, v in d.items() if k in names})


_LEGACY_RETRAIN = {"acc": "test_acc", "acc_drop": "test_drop"}  # version 2 scored on test
RETRAIN_PREFIX = "retrain:"


def retrain_key(number: int, seed: int) -> str:
    """The study attr that copies a trial's retraining with one seed."""
    return f"{RETRAIN_PREFIX}{number}:{seed}"


def retrain_results(study: Any) -> dict[int, list[RetrainRecord]]:
    """Retraining results by trial number, one per seed (trial attrs, else the study's copies)."""
    raw: dict[int, dict[int, dict[str, Any]]] = {}
    for key, value in study.user_attrs.items():
        if key.startswith(RETRAIN_PREFIX) and isinstance(value, dict):
            number = int(key[len(RETRAIN_PREFIX):].split(":")[0])
            raw.setdefault(number, {})[int(value.get("seed", 0))] = value
    for t in study.get_trials(deepcopy=False):
        stored = t.user_attrs.get("retrain")
        for value in [stored] if isinstance(stored, dict) else stored or []:
            raw.setdefault(t.number, {})[int(value.get("seed", 0))] = value
    return {n: [RetrainRecord.from_attrs(v) for _, v in sorted(by_seed.items())]
            for n, by_seed in sorted(raw.items())}


@dataclass(frozen=True)
class TrialRecord:
    """A trial's user_attrs: its recipe, exact cost, proxy result and bookkeeping."""

    recipe: list[float] | None = None  # one pruning ratio per unit
    channels: list[int] | None = None  # kept channels per unit
    flops: int | None = None  # exact, of the pruned network
    params: int | None = None
    flops_ratio: float | None = None
    params_ratio: float | None = None
    mcb: float | None = None  # Eq. 2: flops_ratio / params_ratio
    recipe_std: float | None = None
    val_acc: float | None = None  # after the proxy fine-tune, on the selection split, in [0, 1]
    val_drop: float | None = None  # percentage points against the base's val accuracy
    seed: int | None = None  # the proxy fine-tune's seed (trial j shares it across spaces)
    proxy_seconds: float | None = None
    is_uniform: bool = False  # the uniform baseline (kept out of the sampler's parents)
    role: str | None = None  # "baseline": a heuristic allocation (out of EDFs and laws)
    criterion: str | None = None  # a baseline's criterion: l2, taylor, lamp, bn_scale
    baseline_kept: list[int] | None = None  # a baseline's kept channels, given when enqueued
    worker: dict[str, Any] | None = None  # host, pid and index of the process that ran it
    screen_acc: float | None = None  # adaptive-BN accuracy (--screen)
    screened_out: bool | None = None
    rung_acc: list[float] | None = None  # val accuracy after each rung reached (--rungs)
    rung_out: int | None = None  # PRUNED: the rung (index) whose promotion it missed
    latency_ms: float | None = None
    fail_reason: str | None = None
    surplus: bool | None = None  # PRUNED: n trials were already complete or running
    retry_of: int | None = None  # legacy (version 1): read `storage.retried_from` instead
    retrain: list[dict[str, Any]] | None = None  # RetrainRecord attrs, one per seed

    def to_attrs(self) -> dict[str, Any]:
        """The user_attrs to write (None fields left out)."""
        return _drop_none(dataclasses.asdict(self))

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        """Read a trial's user_attrs; keys a user set of their own are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        attrs = {_LEGACY_TRIAL.get(k, k): v for k, v in attrs.items()}
        if isinstance(attrs.get("retrain"), dict):
            attrs["retrain"] = [attrs["retrain"]]
        return cls(**{k: v for k, v in attrs.items() if k in names})

    @property
    def finite(self) -> bool:
        """Whether the trial has a finite proxy drop."""
        return self.val_drop is not None and math.isfinite(self.val_drop)

    @property
    def is_baseline(self) -> bool:
        """Whether the trial is a heuristic allocation (`role: baseline`), not a searched recipe."""
        return self.role == "baseline"


_LEGACY_TRIAL = {"proxy_acc": "val_acc", "acc_drop": "val_drop"}  # versions 1-2


def trial_record(trial: Any) -> TrialRecord:
    """The record of an Optuna (frozen) trial."""
    return TrialRecord.from_attrs(trial.user_attrs)


TRIAL_KEYS = tuple(f.name for f in dataclasses.fields(TrialRecord))
STUDY_KEYS = tuple(f.name for f in dataclasses.fields(StudyRecord))
__all__ = [
    "GENE_NAMINGS",
    "INDEX_NAMES",
    "LEGACY_OBJECTIVES",
    "RETRAIN_PREFIX",
    "SCHEMA_VERSION",
    "STUDY_KEYS",
    "TRIAL_KEYS",
    "UNIT_NAMES",
    "Checkpoint",
    "RetrainRecord",
    "StudyRecord",
    "TrialRecord",
    "created",
    "drop_pp",
    "identity_of",
    "objectives_now",
    "retrain_key",
    "retrain_results",
    "study_record",
    "trial_record",
]
