"""Top-k selection and full retraining (fine-tune, LR rewinding, from scratch), written back.

The k best COMPLETE searched trials (by validation drop, ties by params), the study's uniform
baseline, its heuristic baselines (`role: baseline`, one per criterion) and, to measure the proxy's fidelity, `random_k` trials drawn without selection are retrained
with the same mode, epochs and lr, each with `seeds` seeds, so the comparison is fair and
paired by seed. Each result is a `schema.RetrainRecord` with its validation and TEST figures
(the test split is read here and for the base only), stored in the trial's `retrain` user_attr
(a list, one per seed) and as the study's `retrain:NUMBER:SEED` (a journal storage cannot change
a finished trial; docs/architecture.md). A retraining already done with the same settings is
skipped, and an interrupted one resumes at its next epoch from its own checkpoint. The
retraining modes and their schedules live here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoprune.core.checkpoint import sha256_of
from evoprune.core.events import EpochDone, RetrainStarted
from evoprune.core.machine import DEFAULT_PRECISION
from evoprune.errors import EvopruneError
from evoprune.network.models import check_stored
from evoprune.network.pruning import PrunedSpec, prune_channels, save_pruned
from evoprune.network.units import find_units
from evoprune.store.schema import (
    RetrainRecord,
    drop_pp,
    retrain_key,
    retrain_results,
    study_record,
    trial_record,
)
from evoprune.store.storage import DEFAULT_STORAGE, load_study, set_finished_attr, storage_folder
from evoprune.training.base import build_base
from evoprune.training.data import batches_for, load_dataset
from evoprune.training.engine import (
    RETRAIN_MODES,
    Schedule,
    evaluate,
    resolve_device,
    retrain,
    retrain_schedule,
)
from evoprune.training.splits import DEFAULT_VAL_SIZE

if TYPE_CHECKING:
    from evoprune.training.engine import Schedule

RETRAIN_DIR = "checkpoints/retrain"  # beside a file storage (else under studies/)
__all__ = ["RETRAIN_MODES", "RetrainConfig", "RetrainSettings", "retrain_results",
           "retrain_schedule", "run_retrain", "select_top_k"]


@dataclass(frozen=True)
class RetrainSettings:
    """How the winners are retrained: which, with which technique and budget."""

    top_k: int = 3  # best trials by proxy drop to retrain
    mode: str = "finetune"  # finetune, rewind, scratch or scratch-b
    epochs: int = 10
    lr: float | None = None  # None: 0.01 for finetune, the original lr otherwise
    batch_size: int = 128
    baseline: bool = True  # also retrain the uniform recipe and the heuristic baselines alike
    seeds: int = 3  # retraining seeds per network (seed, seed + 1, …): paired across networks
    random_k: int = 0  # trials drawn without selection, retrained to measure proxy fidelity

    def __post_init__(self) -> None:
        """Refuse settings no retraining can use."""
        if self.mode not in RETRAIN_MODES:
            raise EvopruneError(f"unknown retraining mode {self.mode!r}: choose "
                                f"{', '.join(RETRAIN_MODES)}")
        if self.top_k < 0 or self.random_k < 0 or self.epochs < 1 or self.batch_size < 1:
            raise EvopruneError("`top_k` and `random_k` must be 0 or more, `epochs` "
                                "(`retrain_epochs`) and `batch_size` at least 1")
        if self.seeds < 1:
            raise EvopruneError(f"`seeds` (`retrain_seeds`) must be at least 1, got {self.seeds}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise EvopruneError(f"`lr` must be a positive number, got {self.lr}")


@dataclass(frozen=True)
class RetrainConfig:
    """What `evoprune retrain` does (and `search --top-k`): a study's winners retrained."""

    study_name: str
    storage: str = DEFAULT_STORAGE
    settings: RetrainSettings = field(default_factory=RetrainSettings)
    device: str = "auto"  # auto, cpu or cuda[:i]
    seed: int = 0
    data_root: str | None = None  # the dataset's folder, if not the study's
    precision: str = DEFAULT_PRECISION  # auto, fp32 or bf16 (autocast; auto: where native)
    out_dir: str | None = None  # retrained models and states; None: RETRAIN_DIR beside the storage
    model: str | None = None  # the study's package:callable model, named again to import it

    def out_folder(self) -> Path:
        """Where retrained models and their resumable states go (beside a file storage)."""

        if self.out_dir is not None:
            return Path(self.out_dir)
        folder = storage_folder(self.storage)
        return (Path("studies") if folder is None else folder) / RETRAIN_DIR

    def schedule_settings(self, seed: int | None = None) -> dict[str, Any]:
        """What two retrainings must share to be the same (mode, epochs, lr, batch, seed)."""

        s = self.settings
        sched = retrain_schedule(s.mode, Schedule(epochs=s.epochs, batch_size=s.batch_size),
                                 epochs=s.epochs, lr=s.lr)
        return {"mode": s.mode, "epochs": sched.epochs, "lr": sched.lr,
                "batch_size": sched.batch_size, "seed": self.seed if seed is None else seed}

    def seeds(self) -> list[int]:
        """The retraining seeds: seed, seed + 1, …"""
        return [self.seed + i for i in range(self.settings.seeds)]


def select_top_k(trials: Sequence[Any], k: int) -> list[Any]:
    """The k best COMPLETE, non-uniform trials by (val_drop, params_ratio), one per network."""

    if k <= 0:
        return []
    records = {t.number: trial_record(t) for t in trials}
    ranked = sorted((t for t in trials if t.state.name == "COMPLETE"
                     and not records[t.number].is_uniform and not records[t.number].is_baseline
                     and records[t.number].finite),
                    key=lambda t: (records[t.number].val_drop,
                                   records[t.number].params_ratio or 1.0, t.number))
    seen: set[tuple[int, ...]] = set()
    out = []
    for t in ranked:
        key = tuple(records[t.number].channels or [t.number])
        if key in seen:  # a retried genotype or an identical network: retrain once
            continue
        seen.add(key)
        out.append(t)
        if len(out) == k:
            break
    return out


def select_random(trials: Sequence[Any], k: int, exclude: Sequence[Any], seed: int) -> list[Any]:
    """k COMPLETE, non-uniform trials drawn without selection (seeded), none of `exclude`."""
    import numpy as np


    skip = {t.number for t in exclude}
    pool = [t for t in trials if t.state.name == "COMPLETE" and t.number not in skip
            and not trial_record(t).is_uniform and not trial_record(t).is_baseline
            and trial_record(t).finite]
    if k <= 0 or not pool:
        return []
    picks = np.random.default_rng(seed).choice(len(pool), size=min(k, len(pool)), replace=False)
    return [pool[i] for i in sorted(picks)]


def _done(results: Sequence[RetrainRecord], settings: dict[str, Any]) -> RetrainRecord | None:
    """The stored result with exactly these settings, if any."""
    return next((r for r in results if all(getattr(r, k) == v for k, v in settings.items())),
                None)


def _current(study: Any, number: int, results: Sequence[RetrainRecord], config: RetrainConfig,
             seed: int) -> list[RetrainRecord]:
    """A trial's other seeds' results with these settings; those with others are dropped.

    A trial's seeds must share mode, epochs, lr and batch size (their mean is its retrained
    drop): a retraining with new settings replaces the old ones, their study copies included.
    """
    out = []
    for r in results:
        if r.seed == seed:
            continue
        if _done([r], config.schedule_settings(r.seed)) is None:
            study.set_user_attr(retrain_key(number, r.seed), None)  # read as absent
        else:
            out.append(r)
    return out


def _row(trial: Any, chosen_as: str, record: RetrainRecord, skipped: bool) -> dict[str, Any]:
    """One plain output row of a retrained trial and seed."""
    return {"number": trial.number, "is_uniform": bool(trial.user_attrs.get("is_uniform")),
            "chosen_as": chosen_as, "skipped": skipped, **record.to_attrs()}


def run_retrain(config: RetrainConfig,
                progress: Callable[[Any], None] | None = None) -> list[dict[str, Any]]:
    """Retrain the top-k, the uniform baseline and random_k unselected trials, every seed.

    Returns one row per trial and seed, `chosen_as` top-k, uniform or random.
    """

    say = progress or (lambda _e: None)
    if not config.study_name:
        raise EvopruneError("`study_name` is required")
    study = load_study(config.storage, config.study_name)
    record = study_record(study)
    check_stored(record.model, config.model, f"study {config.study_name!r}")  # data, not code
    if record.checkpoint.path is None:
        raise EvopruneError(f"study {config.study_name!r} was searched from a model given in "
                            "Python: retrain its winners with your own training loop "
                            "(evoprune.network.pruning gives the pruned network)")
    chosen = _chosen(study.get_trials(deepcopy=False), config)
    if not chosen:
        raise EvopruneError(f"study {config.study_name!r} has no COMPLETE trial to retrain")
    done = retrain_results(study)
    rows: list[dict[str, Any]] = []
    loaded = None
    for t, chosen_as in chosen:
        results = list(done.get(t.number, []))
        for seed in config.seeds():
            settings = config.schedule_settings(seed)
            old = _done(results, settings)
            if old is not None:
                rows.append(_row(t, chosen_as, old, True))
                continue
            loaded = loaded or _load_base(config, record)
            say(RetrainStarted(t.number, bool(t.user_attrs.get("is_uniform")), settings["mode"],
                               settings["epochs"], settings["lr"]))
            result = _retrain_one(config, settings, study, t, loaded, record, say)
            study.set_user_attr(retrain_key(t.number, seed), result.to_attrs())
            results = [*_current(study, t.number, results, config, seed), result]
            set_finished_attr(study, t, "retrain", [r.to_attrs() for r in results])
            rows.append(_row(t, chosen_as, result, False))
    return sorted(rows, key=lambda r: (r["number"], r["seed"]))


def _chosen(trials: Sequence[Any], config: RetrainConfig) -> list[tuple[Any, str]]:
    """The trials to retrain, each with why: top-k, uniform (the first one), baseline:CRITERION
    (each heuristic allocation, once) or random."""
    s = config.settings
    top = select_top_k(trials, s.top_k)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    uniform = [t for t in done if t.user_attrs.get("is_uniform")][:1] if s.baseline else []
    heuristics: dict[str, Any] = {}
    for t in done if s.baseline else []:
        if t.user_attrs.get("role") == "baseline":
            heuristics.setdefault(str(t.user_attrs.get("criterion")), t)
    drawn = select_random(trials, s.random_k, top, config.seed)
    return ([(t, "top-k") for t in top] + [(t, "uniform") for t in uniform]
            + [(t, f"baseline:{c}") for c, t in heuristics.items()]
            + [(t, "random") for t in drawn])


def _load_base(config: RetrainConfig, record: Any) -> tuple[Any, Any, Any]:
    """The study's base model (weights checked against the stored sha256), units and data."""

    path, sha = record.checkpoint.resolve(config.storage), record.checkpoint.sha256
    if not Path(path).is_file():
        raise EvopruneError(f"the study's checkpoint {path} is gone: restore it to retrain")
    if sha256_of(path) != sha:
        raise EvopruneError(f"the study's checkpoint {path} changed since the search (sha256 "
                            "differs): restore the original file")
    device = resolve_device(config.device)
    base_tree = record.config["base"]
    data = batches_for(load_dataset(record.dataset, config.data_root or record.data_root,
                                    val_size=base_tree.get("val_size", DEFAULT_VAL_SIZE),
                                    train_size=base_tree.get("train_size")), device,
                       precision=config.precision)
    base = build_base(record.model, data.info, path, stored_in=f"study {config.study_name!r}",
                      named=config.model)
    units = find_units(base, data.info.in_shape, residual=record.residual)
    if record.unit_names != units.names:
        raise EvopruneError("the model's units differ from the study's: evoprune or the model "
                            "changed since the search")
    return base, units, data


def _retrain_one(config: RetrainConfig, settings: dict[str, Any], study: Any, trial: Any,
                 loaded: tuple[Any, Any, Any], record: Any,
                 say: Callable[[Any], None]) -> RetrainRecord:
    """Prune the base to the trial's channels, retrain, save the model; return the result."""

    base, units, data = loaded
    tr = trial_record(trial)
    kept = tr.channels
    seed = int(settings["seed"])
    model = prune_channels(base, units, kept, importance=record.importance, seed=seed)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    out = config.out_folder()
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{study.study_name}-trial{trial.number}-{settings['mode']}-{digest}"
    state = out / f"{stem}.state.pt"
    s = config.settings
    result = retrain(model, data, s.mode, Schedule(epochs=s.epochs, batch_size=s.batch_size),
                     epochs=s.epochs, lr=s.lr, flops_ratio=float(tr.flops_ratio or 1.0),
                     seed=seed, checkpoint=state,
                     progress=lambda r: say(EpochDone.of(r, "retrain", trial.number)))
    spec = PrunedSpec(record.model, data.info.num_classes, tuple(data.info.in_shape),
                      record.residual, tuple(units.names), tuple(int(c) for c in units.channels),
                      tuple(int(k) for k in kept), tuple(float(r) for r in tr.recipe or ()),
                      record.importance, record.round_to)
    test = evaluate(model, data, split="test").top1  # the report's split, never a selection's
    model_path = out / f"{stem}.pt"
    sha = save_pruned(model_path, model.cpu(), spec)
    state.unlink(missing_ok=True)
    base_test = record.base_test_acc if record.base_test_acc is not None else record.base_val_acc
    return RetrainRecord(**settings, test_acc=test, test_drop=drop_pp(base_test, test),
                         val_acc=float(result.val_acc),
                         val_drop=drop_pp(record.base_val_acc, result.val_acc),
                         seconds=result.seconds, model_path=str(model_path), sha256=sha,
                         precision=result.precision)
