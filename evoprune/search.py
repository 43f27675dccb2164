"""The search: study creation and resume, sampler choice, the uniform baseline first, workers.

A study is named after its model, dataset and space; its user_attrs record the configuration and
the checkpoint's sha256 (DESIGN.md, "The study storage is the interface"). Rerunning the same
command continues it until `n_trials` trials are COMPLETE in total: trials left RUNNING by a dead
process are failed and retried (same genotype, declared by `retry_of`), the sampler is rebuilt
with the same settings and a seed derived from the seed and the trials already stored, so a
resumed study does not repeat its first generation.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from evoprune.errors import EvopruneError
from evoprune.objective import ProxyConfig, check_objectives
from evoprune.recipes import DEFAULT_STORAGE

SAMPLERS = ("nsga2", "random", "tpe")
MAX_FAILS_IN_A_ROW = 10  # a worker whose trials keep failing stops instead of looping forever
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SearchConfig:
    """Everything `evoprune search` does, as one frozen value (the CLI's flags)."""

    c_flops: float | None = None
    c_mcb: float | None = None
    mcb_tol: float = 0.1
    c_std: float | None = None
    c_params: float | None = None
    delta: float = 0.002
    r_max: float = 0.95
    round_to: int = 1
    residual: bool = False
    model: str = "resnet20"
    dataset: str = "digits"
    data_root: str | None = None
    checkpoint: str | None = None
    sampler: str = "nsga2"
    population: int = 16
    n_trials: int = 32
    seed: int = 0
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    objectives: tuple[str, ...] = ("acc_drop", "params")
    storage: str = DEFAULT_STORAGE
    study_name: str | None = None
    n_workers: int = 1
    device: str = "auto"
    top_k: int = 0
    retrain_mode: str = "finetune"
    retrain_epochs: int = 10
    base_epochs: int = 30

    def space(self) -> Any:
        """The pruning space of the flags (validated)."""
        from evoprune.spaces import PruningSpace

        if self.c_flops is None:
            raise EvopruneError("--c-flops is required (the FLOPs band centre, in (0, 1])")
        return PruningSpace(c_flops=self.c_flops, c_params=self.c_params, c_mcb=self.c_mcb,
                            mcb_tol=self.mcb_tol, c_std=self.c_std, delta=self.delta,
                            r_max=self.r_max, round_to=self.round_to)

    def name(self) -> str:
        """The study name: given, or derived from model, dataset and space."""
        if self.study_name:
            return self.study_name
        space = self.space()
        parts = [self.model, self.dataset, space.label, f"f{self.c_flops:g}"]
        if self.c_params is not None:
            parts.append(f"p{self.c_params:g}")
        if self.residual:
            parts.append("residual")
        return "-".join(parts).replace(":", "_")

    def identity(self) -> dict[str, Any]:
        """What a resumed study must share with the stored one (else its trials mix)."""
        return {"model": self.model, "dataset": self.dataset, "residual": self.residual,
                "space": self.space().to_dict(), "objectives": list(self.objectives),
                "proxy": self.proxy.to_dict(),
                "sampler": {"name": self.sampler, "population": self.population}}


def validate(config: SearchConfig) -> None:
    """Check every flag before any model is built or any storage opened; raise EvopruneError."""
    from evoprune.data import dataset_info
    from evoprune.storage import check_storage
    from evoprune.train import RETRAIN_MODES, resolve_device

    config.space()
    check_objectives(config.objectives)
    if config.sampler not in SAMPLERS:
        raise EvopruneError(f"unknown sampler {config.sampler!r}: choose {', '.join(SAMPLERS)}")
    if config.population < 2:
        raise EvopruneError(f"--population must be at least 2, got {config.population}")
    if config.n_trials < 1:
        raise EvopruneError(f"--n-trials must be at least 1, got {config.n_trials}")
    if config.n_workers < 1:
        raise EvopruneError(f"--n-workers must be at least 1, got {config.n_workers}")
    if config.top_k < 0:
        raise EvopruneError(f"--top-k must be 0 or more, got {config.top_k}")
    if config.retrain_mode not in RETRAIN_MODES:
        raise EvopruneError(f"unknown --retrain-mode {config.retrain_mode!r}: choose "
                            f"{', '.join(RETRAIN_MODES)}")
    if config.retrain_epochs < 1 or config.base_epochs < 1:
        raise EvopruneError("--retrain-epochs must be at least 1")
    if config.checkpoint is not None and not os.path.isfile(config.checkpoint):
        raise EvopruneError(f"checkpoint {config.checkpoint} does not exist: train one with "
                            "`evoprune train --out FILE`, or leave --checkpoint out")
    if not config.name() or "/" in config.name():
        raise EvopruneError(f"bad study name {config.name()!r}")
    resolve_device(config.device)
    info = dataset_info(config.dataset, config.data_root)
    check_storage(config.storage, n_workers=config.n_workers)
    from evoprune.models import build_model

    try:
        build_model(config.model, info.num_classes, info.in_shape)  # unknown names fail here
    except EvopruneError:
        raise
    except Exception as exc:
        raise EvopruneError(f"cannot build model {config.model!r}: {exc}") from None


def sampler_for(config: SearchConfig, seed: int) -> Any:
    """The sampler of the flags with `seed`; the same settings on create and on resume."""
    import optuna

    if config.sampler == "nsga2":
        inner = optuna.samplers.NSGAIISampler(population_size=config.population, seed=seed)
    elif config.sampler == "tpe":
        inner = optuna.samplers.TPESampler(seed=seed, multivariate=True)
    else:
        inner = optuna.samplers.RandomSampler(seed=seed)
    return _distinct(inner, seed)


def _distinct(inner: Any, seed: int) -> Any:
    """Wrap a sampler so no trial repeats a stored genotype (retries are enqueued, not sampled).

    NSGA-II copies a parent unchanged when crossover is skipped and no gene mutates (a few % of
    children with 9 genes): such a copy would spend a trial on a network already measured.
    """
    from optuna.samplers import BaseSampler

    class DistinctSampler(BaseSampler):
        """Delegate to `inner`; redraw a relative sample that repeats a stored genotype."""

        def __init__(self) -> None:
            self.inner = inner
            self._rng = np.random.default_rng(seed)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            params = self.inner.sample_relative(study, trial, search_space)
            if not params:
                return params
            seen = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)
                    if t.number != trial.number}
            for _ in range(8):
                if tuple(sorted(params.items())) not in seen:
                    return params
                params = self.inner.sample_relative(study, trial, search_space)
            params = dict(params)  # still a copy: mutate one gene uniformly
            gene = sorted(params)[int(self._rng.integers(len(params)))]
            params[gene] = float(self._rng.random())
            return params

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return self.inner.sample_independent(study, trial, name, dist)

        def before_trial(self, study: Any, trial: Any) -> None:
            self.inner.before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return DistinctSampler()


def derive_seed(seed: int, n_stored: int, worker: int) -> int:
    """A sampler seed from the user's seed, the trials already stored and the worker index."""
    return int(np.random.SeedSequence([seed, n_stored, worker]).generate_state(1)[0])


def _created(study: Any) -> bool:
    """Whether the study's creation finished (attrs, metric names, uniform trial), or an older one."""
    attrs = study.user_attrs
    return bool(attrs.get("created")) or ("space" in attrs and any(
        t.user_attrs.get("is_uniform") for t in study.get_trials(deepcopy=False)))


def _diff(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Keys whose stored and current values differ, with both values."""
    return [f"{k}: stored {stored.get(k)!r}, now {now[k]!r}" for k in now if stored.get(k) != now[k]]


@dataclass(frozen=True)
class Context:
    """What a worker needs to run trials: the base model on its device, units, decoder, data."""

    base: Any
    units: Any
    decoder: Any
    data: Any
    device: Any


def load_context(config: SearchConfig, checkpoint: str, device: str) -> Context:
    """Build the base model with its weights, its units and decoder, and the data on `device`."""
    from evoprune.checkpoint import load_weights
    from evoprune.cost import CostModel
    from evoprune.data import batches_for, load_dataset
    from evoprune.models import build_model
    from evoprune.spaces import Decoder
    from evoprune.train import resolve_device
    from evoprune.units import find_units

    dev = resolve_device(device)
    data = load_dataset(config.dataset, config.data_root)
    base = build_model(config.model, data.info.num_classes, data.info.in_shape)
    load_weights(base, checkpoint)
    units = find_units(base, data.info.in_shape, residual=config.residual)
    decoder = Decoder(config.space(), CostModel(base, units))
    return Context(base.to(dev), units, decoder, batches_for(data, dev), dev)


def prepare(config: SearchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Validate, train or check the base, create or check the study; return its description.

    Nothing is written to the storage before every check has passed.
    """
    import optuna

    from evoprune import __version__
    from evoprune.checkpoint import load_weights, sha256_of
    from evoprune.cost import CostModel
    from evoprune.data import dataset_info
    from evoprune.models import build_model
    from evoprune.spaces import Decoder
    from evoprune.storage import find_study, open_storage, reap_dead_trials
    from evoprune.units import find_units

    say = progress or (lambda _e: None)
    validate(config)
    name = config.name()
    existing = find_study(config.storage, name)
    created = existing is not None and _created(existing)
    if existing is not None:
        stored = existing.user_attrs
        now = config.identity()
        if not created:  # a creation cut short (killed): compare what it wrote, finish it below
            now = {k: v for k, v in now.items() if k in stored}
        diff = _diff(stored, now)
        if diff:
            raise EvopruneError(f"study {name!r} exists with another configuration ("
                                f"{'; '.join(diff)}): pass the same flags to resume it, or "
                                "another --study-name")
    info = dataset_info(config.dataset, config.data_root)
    base = build_model(config.model, info.num_classes, info.in_shape)
    if config.checkpoint is not None:
        load_weights(base, config.checkpoint)
    units = find_units(base, info.in_shape, residual=config.residual)
    cost = CostModel(base, units)
    decoder = Decoder(config.space(), cost)  # refuses an unreachable band with its range
    checkpoint = config.checkpoint
    if checkpoint is None:
        checkpoint = _cached_checkpoint(config, existing, say)
    sha = sha256_of(checkpoint)
    if existing is not None and "checkpoint" in existing.user_attrs and \
            existing.user_attrs["checkpoint"].get("sha256") != sha:
        raise EvopruneError(f"study {name!r} was searched from another checkpoint (sha256 "
                            f"{existing.user_attrs.get('checkpoint', {}).get('sha256', '?')[:12]}…,"
                            f" this one {sha[:12]}…): pass that checkpoint or another "
                            "--study-name")
    if not created:
        load_weights(base, checkpoint)
        base_acc = _base_accuracy(config, base)
        storage = open_storage(config.storage, heartbeat=True)
        study = optuna.create_study(
            study_name=name, storage=storage, directions=["minimize"] * len(config.objectives),
            sampler=sampler_for(config, derive_seed(config.seed, 0, 0)), load_if_exists=True)
        if not _created(study):  # another process may have created it a moment ago
            attrs = {
                **config.identity(), "checkpoint": {"path": str(checkpoint), "sha256": sha},
                "base_acc": base_acc, "base_flops": cost.base_flops,
                "base_params": cost.base_params, "units": units.describe(),
                "data_root": config.data_root, "seed": config.seed,
                "evoprune_version": __version__}
            for key, value in attrs.items():
                study.set_user_attr(key, value)
            with warnings.catch_warnings():  # experimental in Optuna; the dashboard reads it
                warnings.simplefilter("ignore")
                study.set_metric_names(list(config.objectives))
            uniform = decoder.uniform()
            if not any(t.user_attrs.get("is_uniform") for t in study.get_trials(deepcopy=False)):
                study.enqueue_trial({f"g{i:03d}": 0.5 for i in range(len(units))},
                                    user_attrs={"is_uniform": True})
            study.set_user_attr("created", True)  # written last: the study is whole
            say({"event": "created", "study": name, "units": len(units),
                 "uniform": {"flops_ratio": float(uniform.flops_ratio[0]),
                             "params_ratio": float(uniform.params_ratio[0]),
                             "mcb": float(uniform.mcb[0])}})
        existing = study
    else:
        assert existing is not None
        existing = optuna.load_study(study_name=name,
                                     storage=open_storage(config.storage, heartbeat=True))
        reaped = reap_dead_trials(existing)
        if reaped:
            say({"event": "reaped", "trials": reaped})
    from optuna.trial import TrialState

    complete = len(existing.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return {"study": name, "checkpoint": str(checkpoint), "sha256": sha,
            "base_acc": existing.user_attrs["base_acc"], "complete": complete,
            "units": len(units)}


def _cached_checkpoint(config: SearchConfig, existing: Any, say: Progress) -> str:
    """The base checkpoint of a search without --checkpoint: the study's, or trained and cached."""
    from evoprune.jobs import TrainJob, cached_base

    if existing is not None:
        path = existing.user_attrs.get("checkpoint", {}).get("path")
        if path and os.path.isfile(path):
            return str(path)
    job = TrainJob(model=config.model, dataset=config.dataset, data_root=config.data_root,
                   epochs=config.base_epochs, device=config.device)
    say({"event": "base", "model": config.model, "dataset": config.dataset,
         "epochs": config.base_epochs})
    result = cached_base(job, progress=lambda r: say({"event": "base_epoch", **r}))
    return str(result["out"])


def _base_accuracy(config: SearchConfig, base: Any) -> float:
    """Test top-1 of the base model on the search's data and device."""
    from evoprune.data import batches_for, load_dataset
    from evoprune.train import evaluate, resolve_device

    dev = resolve_device(config.device)
    data = batches_for(load_dataset(config.dataset, config.data_root), dev)
    return float(evaluate(base.to(dev), data).top1)


def worker_device(device: str, worker: int) -> str:
    """Spread workers over CUDA devices (one each where there are several, else shared)."""
    import torch

    if device == "auto" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"cuda:{worker % count}" if count > 1 else "cuda"
    return device


def run_worker(config: SearchConfig, checkpoint: str, worker: int = 0,
               progress: Progress | None = None, *, context: Context | None = None
               ) -> dict[str, Any]:
    """Run trials of the prepared study until `n_trials` are COMPLETE; return what this worker did.

    `context` replaces the model and data the worker would load (benchmarks pass their own).
    """
    import optuna
    import torch
    from optuna.trial import TrialState

    from evoprune.objective import Objective, TrialFailure
    from evoprune.storage import open_storage, reap_dead_trials, worker_tag

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if config.n_workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.n_workers))
    storage = open_storage(config.storage, heartbeat=True)
    study = optuna.load_study(study_name=config.name(), storage=storage)
    n_stored = len(study.get_trials(deepcopy=False))
    study.sampler = sampler_for(config, derive_seed(config.seed, n_stored, worker))
    ctx = context or load_context(config, checkpoint, worker_device(config.device, worker))
    objective = Objective(base=ctx.base, units=ctx.units, decoder=ctx.decoder, data=ctx.data,
                          base_acc=study.user_attrs["base_acc"], proxy=config.proxy,
                          objectives=config.objectives, seed=config.seed + worker,
                          worker={**worker_tag(), "index": worker}, progress=progress)
    ran = fails = 0
    timings: list[dict[str, float]] = []

    def guarded(trial: Any) -> Any:
        """Run the trial unless n trials numbered before it are COMPLETE or RUNNING (a race of
        workers near the end): then it is PRUNED as surplus, so the study holds exactly n."""
        ahead = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(t.number < trial.number for t in ahead) >= config.n_trials:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned(f"{config.n_trials} trials were already complete or running")
        return objective(trial)

    while True:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                          TrialState.WAITING))
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        if complete >= config.n_trials:
            break
        if complete + running >= config.n_trials and not waiting:
            reap_dead_trials(study)  # a worker on this host that died: retry its trial now
            with warnings.catch_warnings():  # experimental in Optuna since 2.9
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)  # another machine's: after grace period
            time.sleep(0.5)  # another worker finishes the last trials (or fails and we retry)
            continue
        tic = time.perf_counter()
        study.optimize(guarded, n_trials=1, catch=(TrialFailure,), gc_after_trial=False)
        ran += 1
        if objective.timing:  # a COMPLETE trial: its stages and its whole wall time
            timings.append({**objective.timing, "total": time.perf_counter() - tic})
            objective.timing = {}
        if objective.last_failure is None:
            fails = 0
            continue
        fails += 1
        if fails >= MAX_FAILS_IN_A_ROW:
            raise EvopruneError(f"{fails} trials in a row failed (last: {objective.last_failure}); "
                                "fix the cause (e.g. a lower --proxy-lr) and rerun to resume")
    return {"worker": worker, "trials_run": ran, "timings": timings}


def run_search(config: SearchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Prepare the study, run `n_workers` workers on it, retrain the top-k; return a summary."""
    tic = time.perf_counter()
    prepared = prepare(config, progress)
    say = progress or (lambda _e: None)
    say({"event": "start", **prepared, "n_trials": config.n_trials, "workers": config.n_workers})
    if config.n_workers == 1:
        workers = [run_worker(config, prepared["checkpoint"], 0, progress)]
    else:
        from joblib import Parallel, delayed

        workers = Parallel(n_jobs=config.n_workers, backend="loky")(
            delayed(run_worker)(config, prepared["checkpoint"], i, progress)
            for i in range(config.n_workers))
    retrained: list[dict[str, Any]] = []
    if config.top_k > 0:
        from evoprune.retrain import RetrainConfig, run_retrain

        retrained = run_retrain(RetrainConfig(
            storage=config.storage, study_name=prepared["study"], top_k=config.top_k,
            mode=config.retrain_mode, epochs=config.retrain_epochs, device=config.device,
            seed=config.seed, data_root=config.data_root), progress)
    summary = summarize(config.storage, prepared["study"])
    return {**summary, "workers": workers, "retrained": retrained,
            "seconds": time.perf_counter() - tic,
            "dashboard": dashboard_command(config.storage)}


def dashboard_command(storage: str) -> str:
    """The command that opens the storage in optuna-dashboard."""
    from evoprune.storage import _journal_path, storage_kind

    target = str(_journal_path(storage)) if storage_kind(storage) == "journal" else storage
    return f"optuna-dashboard {target}"


def summarize(storage: str, study_name: str, k: int = 10) -> dict[str, Any]:
    """Counts of a study's trials by state and its best COMPLETE trials (by acc_drop, params)."""
    from collections import Counter

    from evoprune.retrain import retrain_results
    from evoprune.storage import load_study

    study = load_study(storage, study_name)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    retrained = retrain_results(study)
    rows = [trial_row(t, retrained.get(t.number)) for t in trials if t.state.name == "COMPLETE"]
    rows.sort(key=lambda r: (r["acc_drop"], r["params_ratio"]))
    uniform = next((r for r in rows if r["is_uniform"]), None)
    return {"study": study_name, "storage": storage, "states": dict(states),
            "base_acc": study.user_attrs.get("base_acc"), "best": rows[:k], "uniform": uniform,
            "metric_names": study.metric_names}


def trial_row(trial: Any, retrained: dict[str, Any] | None = None) -> dict[str, Any]:
    """One COMPLETE trial as a plain record."""
    a = trial.user_attrs
    row = {"number": trial.number, "acc_drop": a.get("acc_drop", math.nan),
           "proxy_acc": a.get("proxy_acc"), "flops_ratio": a.get("flops_ratio"),
           "params_ratio": a.get("params_ratio", math.nan), "mcb": a.get("mcb"),
           "recipe_std": a.get("recipe_std"), "is_uniform": bool(a.get("is_uniform")),
           "recipe": a.get("recipe"), "values": list(trial.values or [])}
    if retrained is not None:
        row["retrain"] = retrained
    return row


def config_from(**kwargs: Any) -> SearchConfig:
    """Build a SearchConfig from flat keyword arguments (proxy_* go into ProxyConfig)."""
    proxy_keys = {f"proxy_{k}": k for k in ProxyConfig.__dataclass_fields__}
    proxy_keys.update(screen="screen", screen_keep="screen_keep")
    proxy = {proxy_keys[k]: kwargs.pop(k) for k in list(kwargs) if k in proxy_keys}
    proxy = {k: v for k, v in proxy.items() if v is not None}
    if "batch_size" not in proxy:
        proxy["batch_size"] = default_proxy_batch(kwargs.get("dataset", "digits"))
    return replace(SearchConfig(**kwargs), proxy=ProxyConfig(**proxy))


def default_proxy_batch(dataset: str) -> int:
    """32 on digits (1,437 images: 45 steps an epoch, enough to recover), else 128."""
    return 32 if dataset == "digits" else 128

