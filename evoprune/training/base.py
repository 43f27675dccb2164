"""The base network: its configuration (`BaseConfig`), its training (`evoprune train`) and the one
builder every job uses to train it once and cache it, or load it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from evoprune.core.checkpoint import load_weights, sha256_of
from evoprune.core.machine import DEFAULT_PRECISION, resolve_precision
from evoprune.errors import EvopruneError
from evoprune.network.models import build_model, build_stored
from evoprune.store.storage import storage_folder
from evoprune.training.data import DatasetInfo, batches_for, load_dataset
from evoprune.training.engine import Schedule, evaluate, fit, resolve_device
from evoprune.training.splits import DEFAULT_VAL_SIZE


@dataclass(frozen=True)
class BaseConfig:
    """The trained network to prune and its data."""

    model: str = "resnet20"  # a zoo name, torchvision:NAME or package.module:callable
    dataset: str = "digits"  # digits, fashion-mnist, cifar10, cifar100, imagefolder, synthetic…
    data_root: str | None = None  # the dataset's folder (CIFAR, ImageFolder)
    residual: bool = False  # also prune channel groups coupled by skip connections
    checkpoint: str | None = None  # trained weights; None: train once and cache
    epochs: int = 30  # epochs of that cached base training
    val_size: float | int = DEFAULT_VAL_SIZE  # validation carved from training: fraction or count
    train_size: float | int | None = None  # stratified training subset of the rest; None: all

    def __post_init__(self) -> None:
        """Refuse settings no base can use."""
        if self.epochs < 1:
            raise EvopruneError(f"`base_epochs` must be at least 1, got {self.epochs}")
        if not (0 < self.val_size < 1 or (self.val_size >= 1 and float(self.val_size).is_integer())):
            raise EvopruneError(f"`val_size` must be a fraction in (0, 1) or a whole number of "
                                f"images, got {self.val_size}")
        if self.val_size >= 1:  # a count of images (the CLI parses every value as a float)
            object.__setattr__(self, "val_size", int(self.val_size))
        if self.train_size is not None:
            if not (0 < self.train_size < 1 or (self.train_size >= 1
                                                and float(self.train_size).is_integer())):
                raise EvopruneError(f"`train_size` must be a fraction in (0, 1) or a whole number "
                                    f"of images, got {self.train_size}")
            if self.train_size >= 1:
                object.__setattr__(self, "train_size", int(self.train_size))


@dataclass(frozen=True)
class TrainJob:
    """What `evoprune train` does: train a zoo model from scratch on a dataset."""

    model: str = BaseConfig.model
    dataset: str = BaseConfig.dataset
    data_root: str | None = None
    download: bool = False
    epochs: int = BaseConfig.epochs
    lr: float = 0.1
    batch_size: int = 128
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    compile: bool = False
    val_size: float | int = BaseConfig.val_size  # held out of the training set (fraction or count)
    train_size: float | int | None = None  # stratified training subset of the rest; None: all
    precision: str = DEFAULT_PRECISION  # auto, fp32 or bf16 (autocast; auto: where native)


def run_train(job: TrainJob, progress: Any = None) -> dict[str, Any]:
    """Train `job.model` on `job.dataset`'s train split; write the checkpoint to `job.out`.

    The result has the validation accuracy (from `fit`), the test accuracy (one evaluation of
    the final model) and the split sizes.
    """
    import torch


    schedule = Schedule(epochs=job.epochs, lr=job.lr, batch_size=job.batch_size,
                        weight_decay=job.weight_decay, warmup_epochs=job.warmup_epochs,
                        label_smoothing=job.label_smoothing)
    device = resolve_device(job.device)
    if job.out is not None and not Path(job.out).resolve().parent.is_dir():
        raise EvopruneError(f"folder {Path(job.out).resolve().parent} does not exist: create it "
                            "or choose another `out`")

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

    folder = storage_folder(storage)
    return Path(CHECKPOINT_CACHE) if folder is None else folder / "checkpoints"


def cached_base(job: TrainJob, cache: str | Path = CHECKPOINT_CACHE,
                progress: Any = None) -> dict[str, Any]:
    """Train the base model once per configuration under `cache`; later calls reuse the file.

    The file name carries the model, dataset and a hash of every setting that changes the
    weights (the validation size among them), so a search without --checkpoint trains once and
    every later search reuses it (an interrupted training resumes at its next epoch).
    """

    out = cache_path(job, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    return run_train(replace(job, out=str(out)), progress)


def cache_path(job: TrainJob, cache: str | Path = CHECKPOINT_CACHE) -> Path:
    """The cached base's file: model, dataset and a hash of every setting that changes weights."""
    import hashlib
    import json
    from dataclasses import asdict


    settings = {k: v for k, v in asdict(job).items() if k not in ("out", "device", "compile")}
    settings["precision"] = resolve_precision(job.precision, resolve_device(job.device).type)
    for key in ("train_size", "precision"):  # left out at their former values: old caches hold
        if settings[key] in (None, "fp32"):
            settings.pop(key)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{job.model}-{job.dataset}")
    return Path(cache) / f"{safe}-{digest}.pt"


def base_weights(base: BaseConfig, *, device: str = "auto", precision: str = DEFAULT_PRECISION,
                 seed: int = 0, cache: str | Path = CHECKPOINT_CACHE,
                 progress: Any = None) -> dict[str, Any]:
    """The base's weights file (in "out"): `base.checkpoint` as given, or trained once with the
    base's settings and cached under `cache` (then the training's result, a reused one's too)."""
    if base.checkpoint is not None:
        return {"out": str(base.checkpoint)}
    return cached_base(base_job(base, device=device, precision=precision, seed=seed), cache,
                       progress)


def base_job(base: BaseConfig, *, device: str = "auto", precision: str = DEFAULT_PRECISION,
             seed: int = 0) -> TrainJob:
    """The training that makes the base of `base` (its cache key)."""
    return TrainJob(model=base.model, dataset=base.dataset, data_root=base.data_root,
                    epochs=base.epochs, val_size=base.val_size, train_size=base.train_size,
                    device=device, precision=precision, seed=seed)


def build_base(model: str, info: DatasetInfo, checkpoint: str | Path | None, *,
               stored_in: str | None = None, named: str | None = None) -> nn.Module:
    """The one base builder: network `model` for `info`'s inputs and classes with
    `checkpoint`'s weights (None: as initialised). A name read from a storage (`stored_in`
    says which) is data: its `package:callable` is imported only when the user `named` it."""
    if stored_in is None:
        net = build_model(model, info.num_classes, info.in_shape)
    else:
        net = build_stored(model, info.num_classes, info.in_shape, named=named, where=stored_in)
    if checkpoint is not None:
        load_weights(net, checkpoint)
    return net
