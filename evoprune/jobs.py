"""The library function behind each CLI subcommand: configs in, plain results out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoprune.errors import EvopruneError
from evoprune.machine import DEFAULT_PRECISION
from evoprune.searching.config import BaseConfig
from evoprune.spaces import PruningSpace
from evoprune.splits import DEFAULT_VAL_SIZE
from evoprune.storage import DEFAULT_STORAGE


@dataclass(frozen=True)
class PruneJob:
    """What `evoprune prune` does: prune one model to one recipe, report its cost, save it."""

    model: str = "resnet20"
    recipe: str = "uniform:0.5"
    dataset: str = "digits"
    data_root: str | None = None
    checkpoint: str | None = None
    importance: str = "l2"
    round_to: int = 1
    residual: bool = False
    seed: int = 0
    out: str | None = None
    onnx: str | None = None
    storage: str = DEFAULT_STORAGE


def run_prune(job: PruneJob) -> dict[str, Any]:
    """Prune `job.model` to `job.recipe`; return units, kept channels and exact cost figures."""
    from evoprune.checkpoint import load_weights
    from evoprune.cost import CostModel
    from evoprune.data import dataset_info
    from evoprune.models import build_model, build_stored
    from evoprune.pruning import IMPORTANCES, PrunedSpec, export_onnx, prune_channels, save_pruned
    from evoprune.recipes import KeptChannels, parse_recipe_spec
    from evoprune.units import check_kept, check_recipe, find_units, round_recipe

    stored = None  # the study's model is data: built only if built-in or named again
    if job.recipe.startswith("study:"):  # the trial's architecture: the study's model and units
        job, stored = _study_defaults(job)
    if job.importance not in IMPORTANCES:
        raise EvopruneError(f"unknown importance {job.importance!r}: choose {', '.join(IMPORTANCES)}")
    if job.round_to < 1:
        raise EvopruneError(f"--round-to must be a positive integer, got {job.round_to}")
    for target in (job.out, job.onnx):
        if target is not None and not Path(target).resolve().parent.is_dir():
            raise EvopruneError(f"folder {Path(target).resolve().parent} does not exist: "
                                "create it or choose another output path")
    if job.onnx is not None:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise EvopruneError("--onnx needs the onnx package: pip install onnx") from None
    info = dataset_info(job.dataset, job.data_root)
    base = build_model(job.model, info.num_classes, info.in_shape) if stored is None else \
        build_stored(job.model, info.num_classes, info.in_shape, named=stored[1],
                     where=stored[0])
    if job.checkpoint is not None:
        load_weights(base, job.checkpoint)
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
    from dataclasses import replace

    from evoprune.models import check_stored
    from evoprune.recipes import _split_study_spec, study_trial
    from evoprune.schema import StudyRecord

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

    from evoprune.cost import CostModel
    from evoprune.data import dataset_info
    from evoprune.models import build_model
    from evoprune.spaces import Decoder
    from evoprune.units import find_units

    if job.n < 1:
        raise EvopruneError(f"--n must be at least 1, got {job.n}")
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


@dataclass(frozen=True)
class TrainJob:
    """What `evoprune train` does: train a zoo model from scratch on a dataset."""

    model: str = "resnet20"
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    epochs: int = 30
    lr: float = 0.1
    batch_size: int = 128
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    compile: bool = False
    val_size: float | int = DEFAULT_VAL_SIZE  # held out of the training set (fraction or count)
    train_size: float | int | None = None  # stratified training subset of the rest; None: all
    precision: str = DEFAULT_PRECISION  # auto, fp32 or bf16 (autocast; auto: where native)


def run_train(job: TrainJob, progress: Any = None) -> dict[str, Any]:
    """Train `job.model` on `job.dataset`'s train split; write the checkpoint to `job.out`.

    The result has the validation accuracy (from `fit`), the test accuracy (one evaluation of
    the final model) and the split sizes.
    """
    import torch

    from evoprune.checkpoint import sha256_of
    from evoprune.data import batches_for, load_dataset
    from evoprune.models import build_model
    from evoprune.train import Schedule, evaluate, fit, resolve_device

    schedule = Schedule(epochs=job.epochs, lr=job.lr, batch_size=job.batch_size,
                        weight_decay=job.weight_decay, warmup_epochs=job.warmup_epochs,
                        label_smoothing=job.label_smoothing)
    device = resolve_device(job.device)
    if job.out is not None and not Path(job.out).resolve().parent.is_dir():
        raise EvopruneError(f"folder {Path(job.out).resolve().parent} does not exist: create it "
                            "or choose another --out")
    from evoprune.machine import resolve_precision

    resolve_precision(job.precision, device.type)  # before any file is read
    data = load_dataset(job.dataset, job.data_root, download=job.download, seed=job.seed,
                        val_size=job.val_size, train_size=job.train_size)
    torch.manual_seed(job.seed)
    model = build_model(job.model, data.info.num_classes, data.info.in_shape)
    batches = batches_for(data, device, precision=job.precision)
    result = fit(model, batches, schedule, seed=job.seed, checkpoint=job.out, progress=progress,
                 compile=job.compile)
    test = evaluate(model, batches, split="test")
    out = result.to_dict()
    out.update(test_acc=test.top1, test_top5=test.top5, sizes=data.sizes, val_size=job.val_size,
               train_size=job.train_size,
               model=job.model, dataset=job.dataset, seed=job.seed, out=job.out,
               sha256=sha256_of(job.out) if job.out else None)
    return out


CHECKPOINT_CACHE = "studies/checkpoints"  # beside the storage instead where it is a file


def checkpoint_cache(storage: str) -> Path:
    """Where a search caches its base: `checkpoints/` beside a file storage (SQLite, journal),
    so a resume from any folder finds it; CHECKPOINT_CACHE for an RDB server."""
    from evoprune.storage import storage_folder

    folder = storage_folder(storage)
    return Path(CHECKPOINT_CACHE) if folder is None else folder / "checkpoints"


def cached_base(job: TrainJob, cache: str | Path = CHECKPOINT_CACHE,
                progress: Any = None) -> dict[str, Any]:
    """Train the base model once per configuration under `cache`; later calls reuse the file.

    The file name carries the model, dataset and a hash of every setting that changes the
    weights (the validation size among them), so a search without --checkpoint trains once and
    every later search reuses it (an interrupted training resumes at its next epoch).
    """
    from dataclasses import replace

    out = cache_path(job, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    return run_train(replace(job, out=str(out)), progress)


def cache_path(job: TrainJob, cache: str | Path = CHECKPOINT_CACHE) -> Path:
    """The cached base's file: model, dataset and a hash of every setting that changes weights."""
    import hashlib
    import json
    from dataclasses import asdict

    from evoprune.machine import resolve_precision
    from evoprune.train import resolve_device

    settings = {k: v for k, v in asdict(job).items() if k not in ("out", "device", "compile")}
    settings["precision"] = resolve_precision(job.precision, resolve_device(job.device).type)
    for key in ("train_size", "precision"):  # left out at their former values: old caches hold
        if settings[key] in (None, "fp32"):
            settings.pop(key)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{job.model}-{job.dataset}")
    return Path(cache) / f"{safe}-{digest}.pt"
