"""The Python API for users who bring their own model, data and training loop.

    heuristics = evoprune.baselines(model, example_input, c_flops=0.25)  # Torch-Pruning's global
    study = evoprune.search(model, example_input, c_flops=0.25,  # the wide space, warm-started
                            finetune=my_finetune, evaluate=my_accuracy, n_trials=64,
                            storage="sqlite:///my.db", study_name="mynet-f0.25")
    small = evoprune.prune(model, study.best_trials[0], example_input)
    evoprune.analyze("sqlite:///my.db", ["mynet-f0.25"], out="report/")

The study is the CLI's (docs/architecture.md, "The storage schema"): uniform baseline first,
the same trial records, the dashboard, analysis and resume all work on it; rerunning the same
call after a kill continues it. Retraining by `evoprune retrain` needs a zoo model and a
dataset it can load, so a Python study's winners are retrained with the user's own loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from evoprune import __version__
from evoprune.analysis.report import AnalyzeConfig, run_analysis
from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.pruning import prune as prune_recipe
from evoprune.network.pruning import prune_channels
from evoprune.network.units import find_units
from evoprune.searching.baselines import CRITERIA, check_criteria, compute_baselines
from evoprune.searching.config import SamplerConfig, objectives_for
from evoprune.searching.objective import Objective, ProxyConfig, TrialContext
from evoprune.searching.study import check_resume, create_study, resume_study
from evoprune.searching.worker import run_trials
from evoprune.spaces import Decoder, PruningSpace
from evoprune.store.schema import Checkpoint, StudyRecord, created, identity_of
from evoprune.store.storage import (
    DEFAULT_STORAGE,
    check_storage,
    check_study_name,
    find_study,
    worker_tag,
)

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

    from evoprune.core.events import Progress
    from evoprune.searching.baselines import Baseline
    from evoprune.searching.config import SamplerConfig
    from evoprune.spaces import PruningSpace

PYTHON_DATASET = "python"  # the dataset name of a study whose data lives in the user's loop


def fingerprint(model: nn.Module) -> str:
    """sha256 of a model's state_dict (names, shapes, dtypes and values), in key order."""
    import torch

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _tree(model: nn.Module, space: PruningSpace, residual: bool, importance: str,
          sampler: SamplerConfig, objectives: Sequence[str], seed: int) -> dict[str, Any]:
    """The configuration tree a Python study stores (the CLI's shape, the model by its class)."""
    cls = type(model)
    return {"base": {"model": f"{cls.__module__}.{cls.__qualname__}", "dataset": PYTHON_DATASET,
                     "residual": residual, "data_root": None},
            "space": space.to_dict(), "proxy": {"importance": importance, "finetune": "python"},
            "sampler": {"name": sampler.name, "population": sampler.population},
            "objectives": list(objectives), "seed": seed}


def search(model: nn.Module, example_input: torch.Tensor, *,
           finetune: Callable[[nn.Module], Any], evaluate: Callable[[nn.Module], float],
           c_flops: float | None = None, space: PruningSpace | None = None,
           n_trials: int = 32, storage: str | None = None, study_name: str | None = None,
           objectives: Sequence[str] | None = None, sampler: SamplerConfig | None = None,
           residual: bool = False, importance: str = "l2", seed: int = 0,
           uniform_seeds: int = 1, baselines: Sequence[str] | None = None,
           batches: Callable[[], Iterable[Any]] | None = None,
           progress: Progress | None = None) -> optuna.Study:
    """Search for the best pruned `model` at a FLOPs budget; return the study (resumed if it exists).

    The default space is the wide one: the FLOPs band `c_flops` ± 0.002 alone, every unit's
    ratio in [0, 0.95], warm-started with the uniform recipe and the heuristic `baselines`
    (Torch-Pruning's global allocations; None: l2, taylor, lamp, bn_scale; taylor needs
    `batches()`, an iterable of training (images, labels) batches, else it is left out). `space` gives any other (the paper's STD or mCB spaces).
    `finetune(net)` (or `finetune(net, seed)`, to pair trials by seed) trains a pruned copy in
    place (your loop, your data); `evaluate(net)` returns its accuracy in [0, 1] on your
    VALIDATION data (keep the test set for the final report). `example_input` is one batch
    (or one image with its batch dimension) the model accepts. Objectives default to val_drop
    plus what the space leaves free; `uniform_seeds` trials fine-tune the uniform recipe.
    """

    if (space is None) == (c_flops is None):
        raise EvopruneError("give c_flops (the wide space at that FLOPs budget) or space, "
                            "not both")
    space = space if space is not None else PruningSpace(c_flops=c_flops)
    baselines = check_criteria(CRITERIA if baselines is None else baselines)
    if baselines and space.c_flops is None:
        raise EvopruneError("baselines need a FLOPs band: give c_flops, or baselines=()")
    if uniform_seeds < 1 or n_trials <= uniform_seeds:
        raise EvopruneError(f"n_trials ({n_trials}) must exceed uniform_seeds ({uniform_seeds}), "
                            "which must be at least 1")
    if not callable(finetune) or not callable(evaluate):
        raise EvopruneError("finetune and evaluate must be callables taking the pruned network")
    storage = storage or DEFAULT_STORAGE
    objectives = objectives_for(space, tuple(objectives) if objectives else None)
    sampler = sampler or SamplerConfig()
    proxy = ProxyConfig(importance=importance)
    check_storage(storage)
    check_study_name(study_name)
    in_shape = tuple(int(s) for s in example_input.shape[1:])
    units = find_units(model, in_shape, residual=residual)
    decoder = Decoder(space, CostModel(model, units))  # refuses an unreachable band
    name = study_name or f"{type(model).__name__}-{space.label}-f{space.c_flops or space.c_params:g}"
    tree = _tree(model, space, residual, importance, sampler, objectives, seed)
    sha = fingerprint(model)
    existing = find_study(storage, name)
    check_resume(existing, identity_of(tree), sha)
    say = progress or (lambda _e: None)
    if existing is not None and created(existing):
        study = resume_study(storage, name, say)
    else:
        record = StudyRecord(config=tree, checkpoint=Checkpoint(None, sha),
                             base_val_acc=_accuracy(evaluate, model),
                             base_flops=decoder.cost.base_flops,
                             base_params=decoder.cost.base_params, units=units.describe(),
                             evoprune_version=_version())
        found = compute_baselines(model, units, decoder, baselines, batches)
        study = create_study(storage, name, record, objectives, decoder, sampler, seed, say,
                             uniform_seeds, found)
    device = next(model.parameters()).device
    ctx = TrialContext(model, units, decoder, device, finetune=_seeded(finetune),
                       evaluate=evaluate)
    stored = StudyRecord.from_attrs(study.user_attrs)
    objective = Objective(ctx, base_acc=stored.base_val_acc, proxy=proxy, objectives=objectives,
                          seed=seed, draw=sampler.name == "random",
                          worker={**worker_tag(), "index": 0}, progress=progress,
                          gene_naming=stored.gene_names)
    run_trials(study, objective, n_trials=n_trials, sampler=sampler, seed=seed, worker=0)
    return study


def baselines(model: nn.Module, example_input: torch.Tensor, *, c_flops: float,
              criteria: Sequence[str] | None = None,
              batches: Callable[[], Iterable[Any]] | None = None, residual: bool = False,
              delta: float = 0.002, r_max: float = 0.95) -> list[Baseline]:
    """Torch-Pruning's global allocations of `model` in the FLOPs band c_flops ± delta.

    Each `Baseline` holds the kept channels per unit (`kept`), the ratios (`recipe`, which
    `prune` takes), its exact FLOPs and params ratios, mCB and how it was found (`note`).
    `criteria` defaults to l2, taylor, lamp, bn_scale; taylor needs `batches()`, an iterable
    of training (images, labels) batches, and is left out without it.
    """

    in_shape = tuple(int(s) for s in example_input.shape[1:])
    units = find_units(model, in_shape, residual=residual)
    decoder = Decoder(PruningSpace(c_flops=c_flops, delta=delta, r_max=r_max),
                      CostModel(model, units))
    return compute_baselines(model, units, decoder,
                             check_criteria(CRITERIA if criteria is None else criteria), batches)


def _seeded(finetune: Callable[..., Any]) -> Callable[[Any, int], Any]:
    """The user's finetune as (net, seed): passed on where it takes a second argument."""
    import inspect

    try:
        params = inspect.signature(finetune).parameters.values()
    except (TypeError, ValueError):
        return lambda net, seed: finetune(net)
    takes = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 2 \
        or any(p.kind == p.VAR_POSITIONAL for p in params)
    return (lambda net, seed: finetune(net, seed)) if takes else (lambda net, seed: finetune(net))


def _accuracy(evaluate: Callable[[Any], float], model: Any) -> float:
    """The user's accuracy of the base model, checked to lie in [0, 1]."""
    import math

    acc = float(evaluate(model))
    if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
        raise EvopruneError(f"evaluate returned {acc!r} for the base model: it must return an "
                            "accuracy in [0, 1]")
    return acc


def _version() -> str:

    return __version__


def prune(model: nn.Module, recipe: Any, example_input: torch.Tensor, *,
          residual: bool | None = None, importance: str = "l2", round_to: int = 1,
          seed: int = 0) -> nn.Module:
    """A physically smaller copy of `model`: a recipe (ratios, or {unit: ratio}) or a trial.

    A trial (e.g. `study.best_trials[0]`) gives its exact kept channels; `residual` is then
    found from the number of units unless given.
    """

    in_shape = tuple(int(s) for s in example_input.shape[1:])
    is_trial = hasattr(recipe, "user_attrs")
    channels = recipe.user_attrs.get("channels") if is_trial else None
    if is_trial and channels is None:
        raise EvopruneError(f"trial {getattr(recipe, 'number', '?')} records no channels "
                            "(not a COMPLETE evoprune trial)")
    if not is_trial:
        units = find_units(model, in_shape, residual=bool(residual))
        return prune_recipe(model, recipe, units=units, importance=importance,
                            round_to=round_to, seed=seed)
    for flag in ([residual] if residual is not None else [False, True]):
        units = find_units(model, in_shape, residual=flag)
        if len(units) == len(channels):
            return prune_channels(model, units, channels, importance=importance, seed=seed)
    raise EvopruneError(f"the trial has {len(channels)} units but this model has another "
                        "number: pass the model the study was searched on")


def analyze(storage: str, study_names: Sequence[str] | None = None, *,
            out: str = "studies/analysis", **options: Any) -> dict[str, Any]:
    """EDFs, optimal mCB and laws of the studies (all when None): report.md, summary.json, figures.

    `options` are `AnalyzeConfig`'s fields (best, winners, winner_fraction, n_boot, level,
    seed, predict); returns summary.json's object.
    """

    config = AnalyzeConfig(storage=storage, study_names=tuple(study_names or ()), out=out,
                           **options)
    return run_analysis(config)
