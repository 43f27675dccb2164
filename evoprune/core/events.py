"""Typed progress events of long work (base training, search, retraining); the CLI prints them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BaseTraining:
    """The base network is being trained (a search without --checkpoint)."""

    model: str
    dataset: str
    epochs: int


@dataclass(frozen=True)
class EpochDone:
    """One epoch of base training or of a retraining finished."""

    stage: str  # base | retrain
    epoch: int
    loss: float
    val_acc: float  # on the validation split (training never reads the test split)
    number: int | None = None  # the retrained trial

    @classmethod
    def of(cls, record: Mapping[str, Any], stage: str, number: int | None = None) -> EpochDone:
        """From a `fit` history record."""
        return cls(stage, int(record["epoch"]), float(record["loss"]), float(record["val_acc"]),
                   number)


@dataclass(frozen=True)
class StudyCreated:
    """A new study with its uniform baseline queued as trial 0."""

    study: str
    units: int
    flops_ratio: float
    params_ratio: float
    mcb: float


@dataclass(frozen=True)
class BaselineFound:
    """A heuristic allocation in the FLOPs band, queued as a labelled trial."""

    criterion: str
    flops_ratio: float
    params_ratio: float
    mcb: float
    recipe_std: float
    note: str


@dataclass(frozen=True)
class BaselineScored:
    """A baseline (or the uniform recipe) pruned, proxy-fine-tuned and scored on validation."""

    name: str
    val_drop: float
    flops_ratio: float
    seconds: float


@dataclass(frozen=True)
class TrialsReaped:
    """Trials left RUNNING by dead processes were failed and queued again."""

    trials: tuple[int, ...]


@dataclass(frozen=True)
class SearchStarted:
    """Workers start on a study."""

    study: str
    complete: int
    n_trials: int
    base_acc: float
    workers: int
    best_drop: float | None = None  # the study's best proxy drop so far (a resume's too)
    best_number: int | None = None


@dataclass(frozen=True)
class TrialDone:
    """A COMPLETE trial."""

    number: int
    worker: int | None
    val_drop: float
    flops_ratio: float
    params_ratio: float
    mcb: float
    recipe_std: float
    is_uniform: bool
    seconds: float
    values: tuple[float, ...]
    criterion: str | None = None  # a heuristic baseline's criterion


@dataclass(frozen=True)
class TrialFailed:
    """A FAIL trial, with its reason."""

    number: int
    worker: int | None
    reason: str


@dataclass(frozen=True)
class RetrainStarted:
    """A trial's retraining starts."""

    number: int
    is_uniform: bool
    mode: str
    epochs: int
    lr: float


Event = (BaseTraining | EpochDone | StudyCreated | BaselineFound | BaselineScored | TrialsReaped
         | SearchStarted | TrialDone | TrialFailed | RetrainStarted)
Progress = Callable[[Event], None]
