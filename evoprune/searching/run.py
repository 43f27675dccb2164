"""`evoprune search` end to end: prepare the base and the study, run the workers, retrain."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from evoprune import __version__
from evoprune.core.checkpoint import load_weights, sha256_of
from evoprune.core.events import (
    BaselineFound,
    BaselineScored,
    BaseTraining,
    EpochDone,
    Progress,
    SearchStarted,
)
from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.pruning import prune_channels
from evoprune.network.units import find_units
from evoprune.searching.baselines import compute_baselines, seeded_batches
from evoprune.searching.config import validate
from evoprune.searching.objective import trial_seed
from evoprune.searching.study import (
    check_resume,
    create_study,
    dashboard_command,
    n_complete,
    resume_study,
    study_best,
    summarize,
)
from evoprune.searching.worker import build_context, run_worker, worker_device
from evoprune.spaces import Decoder
from evoprune.store.schema import Checkpoint, StudyRecord, created, drop_pp
from evoprune.store.storage import (
    DISK_FULL,
    check_study_name,
    creation_lock,
    disk_full,
    fail_own_trials,
    find_study,
    load_study,
    reclaim_wal,
    retry_uniform,
    storage_fault,
)
from evoprune.training.base import base_job, base_weights, build_base, cache_path, checkpoint_cache
from evoprune.training.data import batches_for, load_dataset
from evoprune.training.engine import evaluate, resolve_device
from evoprune.training.retraining import RetrainConfig, run_retrain

if TYPE_CHECKING:
    from evoprune.searching.config import SearchConfig
    from evoprune.searching.objective import TrialContext


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

    say = progress or (lambda _e: None)
    check_study_name(config.study_name)
    validate(config)
    name = config.name()
    existing = find_study(config.storage, name)
    check_resume(existing, config.identity())  # before any model is built
    b = load_base(config, existing, say)
    data, decoder, checkpoint, sha, batches, context = (b.data, b.decoder, b.checkpoint, b.sha,
                                                       b.batches, b.context)
    units = b.context.units
    if existing is not None and created(existing):
        study = resume_study(config.storage, name, say)
        retry_uniform(study, config.uniform_seeds)  # a uniform seed failed (a full disk) or missing
    else:

        record = _record(config, checkpoint, sha, decoder, context,
                         test_acc=evaluate(context.base, batches, split="test").top1,
                         sizes=data.sizes)
        found = _baselines(config, context, decoder, batches, say)
        with creation_lock(config.storage):  # a search started at the same moment waits here
            study = create_study(config.storage, name, record, config.objectives, decoder,
                                 config.sampler, config.seed, say, config.uniform_seeds, found)
        check_resume(study, config.identity(), sha)  # where that other search created it
    return Prepared(name, str(checkpoint), sha,
                    StudyRecord.from_attrs(study.user_attrs, name).base_val_acc,
                    n_complete(study), len(units), context)


@dataclass(frozen=True)
class Loaded:
    """The base network of a search, trained or checked, with its data and trial context."""

    data: Any
    decoder: Any
    checkpoint: str
    sha: str
    batches: Any
    context: TrialContext


def load_base(config: SearchConfig, existing: Any, say: Progress) -> Loaded:
    """Build the base and its units and decoder, train or load its weights, build the context.

    `existing` (the study, if any) must have been checked against `config` already; its
    checkpoint sha256 is checked here, before the weights are loaded.
    """

    data = load_dataset(config.base.dataset, config.base.data_root, val_size=config.base.val_size,
                        train_size=config.base.train_size)
    base = build_base(config.base.model, data.info, None)  # weights once the band is reachable
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
    return Loaded(data, decoder, str(checkpoint), sha, batches, context)


def run_baselines(config: SearchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """`evoprune baselines`: the uniform recipe and each heuristic allocation, proxy-scored.

    Each network is pruned by the proxy's filter choice and fine-tuned by the proxy with one
    seed (the study seed's trial-0 seed, the same for all: paired), then scored on validation.
    Nothing is written but the cached base checkpoint.
    """

    say = progress or (lambda _e: None)
    validate(config)
    if not config.baselines:
        raise EvopruneError("no baseline criterion given: name at least one")
    loaded = load_base(config, None, say)
    ctx, decoder = loaded.context, loaded.decoder
    found = _baselines(config, ctx, decoder, loaded.batches, say)
    base_acc = float(ctx.evaluate(ctx.base))
    seed = trial_seed(config.seed, 0)
    u = decoder.uniform()
    entries = [("uniform", u.kept[0], "", bool(u.inside[0]))] + [
        (b.criterion, np.asarray(b.kept), b.note, b.in_space) for b in found]
    rows = []
    for name, kept, note, in_space in entries:
        tic = time.perf_counter()
        pruned = prune_channels(ctx.base, ctx.units, kept, importance=config.proxy.importance,
                                seed=seed)
        ctx.finetune(pruned, seed)
        acc = float(ctx.evaluate(pruned))
        d = decoder.describe_kept(np.asarray(kept)[None])
        row = {"name": name, "kept": [int(k) for k in kept], "recipe": [round(float(r), 6)
                                                                      for r in d.recipes[0]],
               "flops_ratio": float(d.flops_ratio[0]), "params_ratio": float(d.params_ratio[0]),
               "mcb": float(d.mcb[0]), "recipe_std": float(d.std[0]), "val_acc": acc,
               "val_drop": drop_pp(base_acc, acc), "in_space": in_space, "note": note,
               "seconds": time.perf_counter() - tic}
        rows.append(row)
        say(BaselineScored(name, row["val_drop"], row["flops_ratio"], row["seconds"]))
    return {"model": config.base.model, "dataset": config.base.dataset,
            "space": config.space.label, "bands": config.space.bands(),
            "units": list(ctx.units.names), "base_val_acc": base_acc, "seed": seed,
            "proxy_epochs": config.proxy.epochs, "rows": rows}


def _baselines(config: SearchConfig, context: TrialContext, decoder: Any, batches: Any,
               say: Progress) -> list[Any]:
    """The configured heuristic allocations in the study's FLOPs band (each announced)."""

    found = compute_baselines(context.base, context.units, decoder, config.baselines,
                              seeded_batches(batches))
    for b in found:
        say(BaselineFound(b.criterion, b.flops_ratio, b.params_ratio, b.mcb, b.recipe_std,
                          b.note))
    return found


def _record(config: SearchConfig, checkpoint: str, sha: str, decoder: Any,
            context: TrialContext, *, test_acc: float, sizes: dict[str, int]) -> StudyRecord:
    """The study record of a new search: the base's val and test accuracy, the split sizes."""

    return StudyRecord(config=config.stored_tree(),
                       checkpoint=Checkpoint.recorded(checkpoint, sha, config.storage),
                       base_val_acc=float(context.evaluate(context.base)),
                       base_flops=decoder.cost.base_flops, base_params=decoder.cost.base_params,
                       units=decoder.cost.units.describe(), base_test_acc=float(test_acc),
                       split_sizes=dict(sizes), evoprune_version=__version__)


def _cached_checkpoint(config: SearchConfig, existing: Any, say: Progress) -> str:
    """The base checkpoint of a search without one: the study's, or trained and cached beside
    the storage (`jobs.checkpoint_cache`), so a resume from any folder finds it."""

    if existing is not None:
        ck = existing.user_attrs.get("checkpoint", {})
        path = Checkpoint(ck.get("path"), "", ck.get("relative_to")).resolve(config.storage)
        if path and os.path.isfile(path):
            return str(path)
    b = config.base
    cache = checkpoint_cache(config.storage)
    if not cache_path(base_job(b, device=config.device, precision=config.precision),
                      cache).is_file():  # else reused silently
        say(BaseTraining(b.model, b.dataset, b.epochs))
    result = base_weights(b, device=config.device, precision=config.precision, cache=cache,
                          progress=lambda r: say(EpochDone.of(r, "base")))
    return str(result["out"])


def run_search(config: SearchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Prepare the study, run `n_workers` workers on it, retrain the top-k; return a summary.

    A full disk or a corrupted storage met on the way stops it with one line (EvopruneError).
    """

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

    tic = time.perf_counter()
    prepared = prepare(config, progress)
    say = progress or (lambda _e: None)

    say(SearchStarted(prepared.study, prepared.complete, config.n_trials, prepared.base_acc,
                      config.n_workers, *study_best(config.storage, prepared.study)))
    if config.n_workers == 1:
        workers = [_worker(config, prepared.checkpoint, 0, progress, context=prepared.context)]
    else:
        from joblib import Parallel, delayed

        workers = Parallel(n_jobs=config.n_workers, backend="loky")(
            delayed(_worker)(config, prepared.checkpoint, i, progress)
            for i in range(config.n_workers))
    retrained: list[dict[str, Any]] = []
    if config.retrain.top_k > 0:

        retrained = run_retrain(RetrainConfig(
            study_name=prepared.study, storage=config.storage, settings=config.retrain,
            device=config.device, seed=config.seed, data_root=config.base.data_root,
            precision=config.precision, model=config.base.model), progress)
    summary = summarize(config.storage, prepared.study)
    return {**summary, "workers": workers, "retrained": retrained,
            "seconds": time.perf_counter() - tic,
            "dashboard": dashboard_command(config.storage)}
