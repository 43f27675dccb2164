"""A worker: the trial context built once per process, then trials until n are COMPLETE."""

from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING, Any

from evoprune.core.events import Progress
from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.units import find_units
from evoprune.searching.objective import Objective, TrialFailure, proxy_context
from evoprune.searching.sampler import make_sampler
from evoprune.spaces import Decoder
from evoprune.store.schema import study_record
from evoprune.store.storage import load_study, reap_dead_trials, retried_from, worker_tag
from evoprune.training.base import build_base
from evoprune.training.data import batches_for, load_dataset
from evoprune.training.engine import resolve_device

if TYPE_CHECKING:
    from evoprune.searching.config import SamplerConfig, SearchConfig
    from evoprune.searching.objective import Objective, TrialContext

MAX_FAILS_IN_A_ROW = 10  # a worker whose trials keep failing stops instead of looping forever
POLL_S = 0.5  # wait between looks at the last trials other workers run


def worker_device(device: str, worker: int) -> str:
    """Spread workers over CUDA devices (one each where there are several, else shared)."""
    import torch

    if device == "auto" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"cuda:{worker % count}" if count > 1 else "cuda"
    return device


def build_context(config: SearchConfig, checkpoint: str, device: str, worker: int = 0,
                  loaded: tuple[Any, Any, Any] | None = None) -> TrialContext:
    """The built-in trial context: base with its weights, units, decoder, data on `device`.

    `loaded` passes a (base, units, data) the caller already holds, so nothing is built twice.
    """

    dev = resolve_device(device)
    if loaded is None:
        data = load_dataset(config.base.dataset, config.base.data_root,
                            val_size=config.base.val_size, train_size=config.base.train_size)
        base = build_base(config.base.model, data.info, checkpoint)
        units = find_units(base, data.info.in_shape, residual=config.base.residual)
        batches = batches_for(data, dev, precision=config.precision)
    else:
        base, units, batches = loaded
    decoder = Decoder(config.space, CostModel(base, units))
    return proxy_context(base, units, decoder, batches, config.proxy)


def run_worker(config: SearchConfig, checkpoint: str, worker: int = 0,
               progress: Progress | None = None, *, context: TrialContext | None = None
               ) -> dict[str, Any]:
    """Run trials of the prepared study until `n_trials` are COMPLETE; return what it did.

    `context` is the one this process built already (or a benchmark's own model and data).
    """
    import torch


    if config.n_workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.n_workers))
    study = load_study(config.storage, config.name(), heartbeat=True)
    ctx = context or build_context(config, checkpoint, worker_device(config.device, worker),
                                   worker)
    record = study_record(study)
    objective = Objective(ctx, base_acc=record.base_val_acc, proxy=config.proxy,
                          objectives=config.objectives, seed=config.seed,
                          draw=config.sampler.name == "random",
                          worker={**worker_tag(), "index": worker,
                                  **({"precision": ctx.data.precision} if ctx.data else {})},
                          progress=progress, gene_naming=record.gene_names)
    return run_trials(study, objective, n_trials=config.n_trials, sampler=config.sampler,
                      seed=config.seed, worker=worker)


def run_trials(study: Any, objective: Objective, *, n_trials: int, sampler: SamplerConfig,
               seed: int, worker: int) -> dict[str, Any]:
    """The worker loop: one trial at a time until the study holds n COMPLETE trials."""
    import optuna
    from optuna.trial import TrialState


    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.sampler = make_sampler(sampler, seed)  # each trial's stream: the seed and its number
    guarded = _guard(study, objective, n_trials)
    ran = fails = 0
    timings: list[dict[str, float]] = []
    while True:
        counts = _counts(study)
        if counts[TrialState.COMPLETE] >= n_trials:
            break
        if counts[TrialState.COMPLETE] + counts[TrialState.RUNNING] >= n_trials \
                and not counts[TrialState.WAITING]:
            _wait_for_others(study)
            continue
        tic = time.perf_counter()
        study.optimize(guarded, n_trials=1, catch=(TrialFailure,), gc_after_trial=False)
        ran += 1
        if objective.timing:  # a COMPLETE trial: its stages and its whole wall time
            timings.append({**objective.timing, "total": time.perf_counter() - tic})
            objective.timing = {}
        fails = 0 if objective.last_failure is None else fails + 1
        if fails >= MAX_FAILS_IN_A_ROW:
            raise EvopruneError(f"{fails} trials in a row failed (last: {objective.last_failure}); "
                                "fix the cause (e.g. a lower `proxy_lr`) and rerun to resume")
    return {"worker": worker, "trials_run": ran, "timings": timings}


def _counts(study: Any) -> dict[Any, int]:
    """Trials by state (COMPLETE, RUNNING, WAITING)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    trials = study.get_trials(deepcopy=False, states=states)
    return {s: sum(t.state == s for t in trials) for s in states}


def _guard(study: Any, objective: Objective, n_trials: int) -> Any:
    """The objective, unless n trials numbered before this one are COMPLETE or RUNNING; a retry
    runs with its original trial's seed (the same drawn recipe, the same fine-tune).

    Workers racing near the end could start one trial too many: it is PRUNED as surplus, so
    the study holds exactly n COMPLETE trials.
    """
    import optuna
    from optuna.trial import TrialState


    def guarded(trial: Any) -> Any:
        ahead = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(t.number < trial.number for t in ahead) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned(f"{n_trials} trials were already complete or running")
        this = next((t for t in ahead if t.number == trial.number), None)
        original = retried_from(this) if this is not None else None
        return objective(trial, seed_number=original)  # a retry runs as its original would

    return guarded


def _wait_for_others(study: Any) -> None:
    """Others run the last trials: retry those of dead workers (here now, elsewhere by grace)."""
    import optuna


    reap_dead_trials(study)
    with warnings.catch_warnings():  # experimental in Optuna since 2.9
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    time.sleep(POLL_S)
