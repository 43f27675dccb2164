"""The one-shot jobs on a recipe: prune a checkpoint by it (`evoprune prune`), draw recipes of a
space (`evoprune sample`). Configs in, plain results out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.models import build_model, check_stored
from evoprune.network.pruning import (
    IMPORTANCES,
    PrunedSpec,
    export_onnx,
    prune_channels,
    save_pruned,
)
from evoprune.network.units import check_kept, check_recipe, find_units, round_recipe
from evoprune.spaces import Decoder, PruningSpace
from evoprune.store.recipes import KeptChannels, _split_study_spec, parse_recipe_spec, study_trial
from evoprune.store.schema import StudyRecord
from evoprune.store.storage import DEFAULT_STORAGE
from evoprune.training.base import BaseConfig, build_base
from evoprune.training.data import dataset_info


@dataclass(frozen=True)
class PruneJob:
    """What `evoprune prune` does: prune one model to one recipe, report its cost, save it."""

    model: str = BaseConfig.model
    recipe: str = "uniform:0.5"
    dataset: str = BaseConfig.dataset
    data_root: str | None = None
    checkpoint: str | None = None
    importance: str = IMPORTANCES[0]  # the filter criterion: L2 norm
    round_to: int = 1
    residual: bool = BaseConfig.residual
    seed: int = 0
    out: str | None = None
    onnx: str | None = None
    storage: str = DEFAULT_STORAGE


def run_prune(job: PruneJob) -> dict[str, Any]:
    """Prune `job.model` to `job.recipe`; return units, kept channels and exact cost figures."""

    stored = None  # the study's model is data: built only if built-in or named again
    if job.recipe.startswith("study:"):  # the trial's architecture: the study's model and units
        job, stored = _study_defaults(job)
    if job.importance not in IMPORTANCES:
        raise EvopruneError(f"unknown importance {job.importance!r}: choose {', '.join(IMPORTANCES)}")
    if job.round_to < 1:
        raise EvopruneError(f"`round_to` must be a positive integer, got {job.round_to}")
    for target in (job.out, job.onnx):
        if target is not None and not Path(target).resolve().parent.is_dir():
            raise EvopruneError(f"folder {Path(target).resolve().parent} does not exist: "
                                "create it or choose another output path")
    if job.onnx is not None:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise EvopruneError("`onnx` needs the onnx package: pip install onnx") from None
    info = dataset_info(job.dataset, job.data_root)
    base = build_base(job.model, info, job.checkpoint, stored_in=stored and stored[0],
                      named=stored and stored[1])
    units = find_units(base, info.in_shape, residual=job.residual)
    spec = parse_recipe_spec(job.recipe, len(units), job.storage)
    if isinstance(spec, KeptChannels):  # explicit counts: refused where they break a unit's step
        kept = check_kept(units, spec.in_order(units.names, units.channels.tolist()), job.round_to)
        recipe = 1.0 - kept / units.channels
    else:  # ratios of every form: each unit rounded to its step, as the spaces round
        recipe = check_recipe(units, spec)
        kept = round_recipe(units, recipe, job.round_to)
    cost = CostModel(base, units)
    figures = cost.of_channels(kept)
    pruned = prune_channels(base, units, kept, importance=job.importance, seed=job.seed)
    result: dict[str, Any] = {
        "model": job.model, "dataset": job.dataset, "in_shape": list(info.in_shape),
        "importance": job.importance, "round_to": job.round_to, "residual": job.residual,
        "units": units.names, "kinds": [u.kind for u in units],
        "original_channels": [int(c) for c in units.channels], "channels": [int(k) for k in kept],
        "recipe": [float(r) for r in recipe],
        "base_flops": cost.base_flops, "base_macs": cost.base_flops // 2,
        "base_params": cost.base_params, **figures.to_dict(), "out": None, "sha256": None,
    }
    if job.out is not None:
        spec = PrunedSpec(job.model, info.num_classes, info.in_shape, job.residual,
                          tuple(units.names), tuple(int(c) for c in units.channels),
                          tuple(int(k) for k in kept), tuple(float(r) for r in recipe),
                          job.importance, job.round_to)
        result["sha256"] = save_pruned(job.out, pruned, spec)
        result["out"] = str(job.out)
    if job.onnx is not None:
        export_onnx(pruned, info.in_shape, job.onnx)
        result["onnx"] = str(job.onnx)
    return result


def _study_defaults(job: PruneJob) -> tuple[PruneJob, tuple[str, str | None] | None]:
    """Take model, dataset, residual, rounding and (unless given) checkpoint from the study.

    Also returns (the study's words for messages, the user's --model if it names the stored
    model again, else None): a stored `package:callable` is imported only when named again
    (`models.build_stored`).
    """


    attrs, _ = study_trial(job.recipe, job.storage)
    if "config" not in attrs and "model" not in attrs:  # not an evoprune study: flags as given
        return job, None
    r = StudyRecord.from_attrs(attrs, job.recipe)
    named = job.model if job.model == r.model else None
    where = f"study {_split_study_spec(job.recipe)[0]!r}"
    check_stored(r.model, named, where)  # before any file is read
    return replace(job, model=r.model, dataset=r.dataset, residual=r.residual,
                   round_to=r.round_to, data_root=job.data_root or r.data_root,
                   checkpoint=job.checkpoint or r.checkpoint.resolve(job.storage)), (where, named)


@dataclass(frozen=True)
class SampleJob:
    """What `evoprune sample` does: draw i.i.d. recipes from a pruning space of one model."""

    space: PruningSpace
    base: BaseConfig = field(default_factory=BaseConfig)
    n: int = 10  # recipes to draw
    seed: int = 0


def run_sample(job: SampleJob) -> dict[str, Any]:
    """Bind the space to the model, decode n uniform genotypes, describe them and the baseline."""
    import time


    if job.n < 1:
        raise EvopruneError(f"`n` must be at least 1, got {job.n}")
    space, b = job.space, job.base
    info = dataset_info(b.dataset, b.data_root)
    base = build_model(b.model, info.num_classes, info.in_shape)
    units = find_units(base, info.in_shape, residual=b.residual)
    decoder = Decoder(space, CostModel(base, units))
    start = time.perf_counter()
    out = decoder.sample(job.n, job.seed)
    seconds = time.perf_counter() - start
    uniform = decoder.uniform()
    return {
        "model": b.model, "dataset": b.dataset, "space": space.to_dict(),
        "label": space.label, "bands": space.bands(), "units": units.names,
        "recipes": _rows(out), "uniform": _rows(uniform)[0],
        "summary": {"n": job.n, "inside": int(out.inside.sum()),
                    "hit_rate": float(out.inside.mean()), "seconds": seconds,
                    "recipes_per_s": job.n / seconds if seconds > 0 else float("inf"),
                    "seed": job.seed},
    }


def _rows(decoded: Any) -> list[dict[str, Any]]:
    """One plain record per decoded recipe."""
    return [{"recipe": [float(v) for v in decoded.recipes[i]],  # full precision: re-prunes exactly
             "channels": [int(k) for k in decoded.kept[i]],
             "flops_ratio": float(decoded.flops_ratio[i]),
             "params_ratio": float(decoded.params_ratio[i]),
             "mcb": float(decoded.mcb[i]), "std": float(decoded.std[i]),
             "inside": bool(decoded.inside[i])} for i in range(len(decoded.recipes))]
