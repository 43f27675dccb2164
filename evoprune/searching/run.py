"""`evoprune search` end to end: prepare the base and the study, run the workers, retrain."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evoprune.errors import EvopruneError
from evoprune.events import BaseTraining, EpochDone, Progress, SearchStarted
from evoprune.schema import StudyRecord

if TYPE_CHECKING:
    from evoprune.objective import TrialContext
    from evoprune.searching.config import SearchConfig


@dataclass(frozen=True)
class Prepared:
    """A study ready for workers, and the trial context this process built on the way."""

    study: str
    checkpoint: str
    sha256: str
    base_acc: float  # on the validation split
    complete: int
    units: int
    context: TrialContext | None = None


def prepare(config: SearchConfig, progress: Progress | None = None) -> Prepared:
    """Validate, train or check the base, create or check the study; nothing is written first.

    The model, units, decoder and data built here are kept as the trial context of the first
    worker, which runs in this process.
    """
    from evoprune.checkpoint import load_weights, sha256_of
    from evoprune.cost import CostModel
    from evoprune.data import batches_for, load_dataset
    from evoprune.models import build_model
    from evoprune.schema import created
    from evoprune.searching.config import validate
    from evoprune.searching.study import check_resume, create_study, n_complete, resume_study
    from evoprune.searching.worker import build_context, worker_device
    from evoprune.spaces import Decoder
    from evoprune.storage import check_study_name, creation_lock, find_study, retry_uniform
    from evoprune.train import resolve_device
    from evoprune.units import find_units

    say = progress or (lambda _e: None)
    check_study_name(config.study_name)
    validate(config)
    name = config.name()
    existing = find_study(config.storage, name)
    check_resume(existing, config.identity())  # before any model is built
    data = load_dataset(config.base.dataset, config.base.data_root, val_size=config.base.val_size,
                        train_size=config.base.train_size)
    base = build_model(config.base.model, data.info.num_classes, data.info.in_shape)
    units = find_units(base, data.info.in_shape, residual=config.base.residual)
    decoder = Decoder(config.space, CostModel(base, units))  # refuses an unreachable band
    checkpoint = config.base.checkpoint or _cached_checkpoint(config, existing, say)
    sha = sha256_of(checkpoint)
    check_resume(existing, config.identity(), sha)
    load_weights(base, checkpoint)
    batches = batches_for(data, resolve_device(worker_device(config.device, 0)),
                          precision=config.precision)
    context = build_context(config, checkpoint, worker_device(config.device, 0), 0,
                            loaded=(base, units, batches))
    if existing is not None and created(existing):
        study = resume_study(config.storage, name, say)
        retry_uniform(study, config.uniform_seeds)  # a uniform seed failed (a full disk) or missing
    else:
        from evoprune.train import evaluate

        record = _record(config, checkpoint, sha, decoder, context,
                         test_acc=evaluate(context.base, batches, split="test").top1,
                         sizes=data.sizes)
        with creation_lock(config.storage):  # a search started at the same moment waits here
            study = create_study(config.storage, name, record, config.objectives, decoder,
                                 config.sampler, config.seed, say, config.uniform_seeds)
        check_resume(study, config.identity(), sha)  # where that other search created it
    return Prepared(name, str(checkpoint), sha,
                    StudyRecord.from_attrs(study.user_attrs, name).base_val_acc,
                    n_complete(study), len(units), context)


def _record(config: SearchConfig, checkpoint: str, sha: str, decoder: Any,
            context: TrialContext, *, test_acc: float, sizes: dict[str, int]) -> StudyRecord:
    """The study record of a new search: the base's val and test accuracy, the split sizes."""
    from evoprune import __version__
    from evoprune.schema import Checkpoint

    return StudyRecord(config=config.stored_tree(),
                       checkpoint=Checkpoint.recorded(checkpoint, sha, config.storage),
                       base_val_acc=float(context.evaluate(context.base)),
                       base_flops=decoder.cost.base_flops, base_params=decoder.cost.base_params,
                       units=decoder.cost.units.describe(), base_test_acc=float(test_acc),
                       split_sizes=dict(sizes), evoprune_version=__version__)


def _cached_checkpoint(config: SearchConfig, existing: Any, say: Progress) -> str:
    """The base checkpoint of a search without one: the study's, or trained and cached beside
    the storage (`jobs.checkpoint_cache`), so a resume from any folder finds it."""
    from evoprune.jobs import TrainJob, cached_base, checkpoint_cache
    from evoprune.schema import Checkpoint

    if existing is not None:
        ck = existing.user_attrs.get("checkpoint", {})
        path = Checkpoint(ck.get("path"), "", ck.get("relative_to")).resolve(config.storage)
        if path and os.path.isfile(path):
            return str(path)
    b = config.base
    job = TrainJob(model=b.model, dataset=b.dataset, data_root=b.data_root, epochs=b.epochs,
                   val_size=b.val_size, train_size=b.train_size, device=config.device,
                   precision=config.precision)
    say(BaseTraining(b.model, b.dataset, b.epochs))
    result = cached_base(job, checkpoint_cache(config.storage),
                         progress=lambda r: say(EpochDone.of(r, "base")))
    return str(result["out"])


def run_search(config: SearchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Prepare the study, run `n_workers` workers on it, retrain the top-k; return a summary.

    A full disk or a corrupted storage met on the way stops it with one line (EvopruneError).
    """
    from evoprune.storage import storage_fault

    try:
        return _run_search(config, progress)
    except EvopruneError:
        raise
    except Exception as exc:
        fault = storage_fault(exc, config.storage)
        if fault is None:
            raise
        raise EvopruneError(fault) from None


def _worker(config: SearchConfig, checkpoint: str, worker: int, progress: Progress | None,
            context: TrialContext | None = None) -> dict[str, Any]:
    """`run_worker`, stopped by a full disk in one line, its running trial FAIL with the reason.

    Runs in each worker process, so each marks its own trial (`storage.fail_own_trials`).
    """
    from evoprune.searching.worker import run_worker
    from evoprune.storage import DISK_FULL, disk_full, fail_own_trials, load_study, reclaim_wal

    try:
        return run_worker(config, checkpoint, worker, progress, context=context)
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        reclaim_wal(config.storage)  # the WAL's space, for the FAIL below
        try:
            marked = fail_own_trials(load_study(config.storage, config.name()),
                                     f"{DISK_FULL}: {full}")
        except Exception:
            marked = []
        trials = ", ".join(str(n) for n in marked)
        said = (f"trial {trials} is FAIL with the reason" if len(marked) == 1 else
                f"trials {trials} are FAIL with the reason" if marked else
                "its running trial is failed and retried on resume")
        raise EvopruneError(f"disk full ({full}) while writing to {config.storage}: the search "
                            f"stopped ({said}); free space on the disk and rerun the same "
                            "command to resume") from None


def _run_search(config: SearchConfig, progress: Progress | None) -> dict[str, Any]:
    from evoprune.searching.study import dashboard_command, summarize

    tic = time.perf_counter()
    prepared = prepare(config, progress)
    say = progress or (lambda _e: None)
    say(SearchStarted(prepared.study, prepared.complete, config.n_trials, prepared.base_acc,
                      config.n_workers))
    if config.n_workers == 1:
        workers = [_worker(config, prepared.checkpoint, 0, progress, context=prepared.context)]
    else:
        from joblib import Parallel, delayed

        workers = Parallel(n_jobs=config.n_workers, backend="loky")(
            delayed(_worker)(config, prepared.checkpoint, i, progress)
            for i in range(config.n_workers))
    retrained: list[dict[str, Any]] = []
    if config.retrain.top_k > 0:
        from evoprune.retrain import RetrainConfig, run_retrain

        retrained = run_retrain(RetrainConfig(
            study_name=prepared.study, storage=config.storage, settings=config.retrain,
            device=config.device, seed=config.seed, data_root=config.base.data_root,
            precision=config.precision, model=config.base.model), progress)
    summary = summarize(config.storage, prepared.study)
    return {**summary, "workers": workers, "retrained": retrained,
            "seconds": time.perf_counter() - tic,
            "dashboard": dashboard_command(config.storage)}
