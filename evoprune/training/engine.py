"""Training, fine-tuning and evaluation on a device-resident data path; adaptive BN; NaN guard.

`fit` is SGD (momentum, Nesterov, weight decay) on a per-step cosine schedule with optional
linear warm-up and label smoothing. The paper's proxy is `fit` with lr 0.01 for t epochs
(Sec. 2.2, "Fine-tuning"). A non-finite loss stops the run with `NonFiniteLossError`, non-finite
outputs at evaluation with `NonFiniteOutputError`; no non-finite number is ever returned as an
accuracy. With `checkpoint`, the state is written atomically after every epoch and a rerun
resumes at the next epoch. `fit` and `retrain` read the training and validation splits only;
test accuracy is `evaluate(model, data, split="test")`, measured by the caller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.core.checkpoint import atomic_save, load_file
from evoprune.errors import EvopruneError, NonFiniteLossError, NonFiniteOutputError
from evoprune.training.data import DeviceBatches, FolderBatches


@dataclass(frozen=True)
class Schedule:
    """An SGD training schedule (per-step cosine decay after an optional linear warm-up)."""

    epochs: int = 30
    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True

    def __post_init__(self) -> None:
        """Refuse settings no training can use."""
        if self.epochs < 1 or self.batch_size < 1:
            raise EvopruneError("epochs and batch size must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise EvopruneError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise EvopruneError("warm-up epochs must be in [0, epochs]")
        if not 0 <= self.label_smoothing < 1:
            raise EvopruneError("label smoothing must be in [0, 1)")

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate of optimiser step `step` (0-based)."""
        total = self.epochs * steps_per_epoch
        warm = round(self.warmup_epochs * steps_per_epoch)
        if step < warm:
            return self.lr * (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Accuracy:
    """Accuracy on one split in [0, 1]: top-1, and top-5 where there are more than 10 classes."""

    top1: float
    top5: float | None = None


@dataclass(frozen=True)
class FitResult:
    """What a training run did and reached; settings recorded so comparisons stay fair."""

    schedule: Schedule
    epochs_run: int
    val_acc: float
    val_top5: float | None
    train_loss: float
    seconds: float
    images_per_s: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    precision: str = "fp32"  # what the forward passes computed in: fp32 or bf16 (autocast)
    mode: str = "train"  # train | finetune | rewind | scratch | scratch-b

    def to_dict(self) -> dict[str, Any]:
        """Return plain data (JSON, study attrs)."""
        out = asdict(self)
        out["schedule"] = asdict(self.schedule)
        return out


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn auto|cpu|cuda[:i] into a device, refusing a CUDA device that is not there."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EvopruneError(f"`device` {spec}: no CUDA device here; use `device` cpu or auto")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EvopruneError(f"`device` {spec}: only {torch.cuda.device_count()} CUDA device(s)")
        return device
    raise EvopruneError(f"unknown device {spec!r}: use auto, cpu or cuda[:i]")


def _autocast(data: DeviceBatches | FolderBatches):
    """bf16 autocast on the data's device where its precision is bf16, else none."""
    return torch.autocast(data.device.type, dtype=torch.bfloat16,
                          enabled=data.precision == "bf16")


SPLITS = ("val", "test")


def evaluate(model: nn.Module, data: DeviceBatches | FolderBatches, split: str = "val",
             batch_size: int = 1024) -> Accuracy:
    """Return top-1 (and top-5 above 10 classes) on `split` (val|test), in eval/inference mode."""
    if split not in SPLITS:
        raise EvopruneError(f"unknown split {split!r}: evaluate on val or test")
    batches = data.val_batches(batch_size) if split == "val" else data.test_batches(batch_size)
    was_training = model.training
    model.eval()
    top1 = top5 = total = 0
    with torch.inference_mode(), _autocast(data):
        for x, y in batches:
            logits = model(x).float()
            if not torch.isfinite(logits).all():
                raise NonFiniteOutputError(f"the model produced non-finite outputs on the {split} "
                                           "set")
            top1 += int((logits.argmax(1) == y).sum())
            if data.info.num_classes > 10:
                top5 += int((logits.topk(5, 1).indices == y[:, None]).any(1).sum())
            total += len(y)
    model.train(was_training)
    return Accuracy(top1 / total, top5 / total if data.info.num_classes > 10 else None)


def adaptive_bn(model: nn.Module, data: DeviceBatches | FolderBatches, batches: int = 50,
                batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Recalibrate BN statistics on training batches, in train mode, without gradients; in place."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was_training = model.training
    model.train()
    gen = torch.Generator().manual_seed(seed)
    done = 0
    with torch.no_grad(), _autocast(data):
        while done < batches:
            for x, _ in data.train_batches(batch_size, gen):
                model(x)
                done += 1
                if done >= batches:
                    break
    for m, momentum in saved:
        m.momentum = momentum
    model.train(was_training)
    return model


def fit(
    model: nn.Module,
    data: DeviceBatches | FolderBatches,
    schedule: Schedule,
    *,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
    compile: bool = False,
) -> FitResult:
    """Train `model` in place with `schedule` on `data`; resume from `checkpoint` if it exists.

    It reads the training split and evaluates on the validation split only (never test).
    `compile` runs the training forward through `torch.compile` (its first epoch pays the
    compilation; it pays off only on long runs).
    """
    device = data.device
    model.to(device)
    if data.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": schedule.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=schedule.lr, momentum=schedule.momentum, nesterov=schedule.nesterov)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=schedule.label_smoothing)
    steps_per_epoch = math.ceil(data.n_train / schedule.batch_size)
    start_epoch, history = 0, []
    if checkpoint is not None and Path(checkpoint).is_file():
        start_epoch, history = _resume(checkpoint, model, opt, gen, schedule, _split_of(data))
    augment = schedule.augment and data.augment  # per call: the shared data is not changed
    seen, seconds, loss_sum = 0, 0.0, 0.0
    model.train()
    for epoch in range(start_epoch, schedule.epochs):
        tic = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        batches = data.train_batches(schedule.batch_size, gen, augment=augment)
        for i, (x, y) in enumerate(batches):
            for group in opt.param_groups:
                group["lr"] = schedule.lr_at(epoch * steps_per_epoch + i, steps_per_epoch)
            with _autocast(data):
                logits = forward(x)
                loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, "
                                    f"step {i + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        elapsed = time.perf_counter() - tic
        seconds += elapsed
        seen += data.n_train
        acc = evaluate(model, data, split="val")
        record = {"epoch": epoch + 1, "loss": float(loss_sum) / data.n_train,
                  "train_acc": float(correct) / data.n_train, "val_acc": acc.top1,
                  "images_per_s": data.n_train / elapsed, "lr": opt.param_groups[0]["lr"]}
        history.append(record)
        if checkpoint is not None:
            _save_state(checkpoint, model, opt, gen, schedule, epoch + 1, history,
                        _split_of(data))
        if progress is not None:
            progress(record)
    if start_epoch >= schedule.epochs:  # resumed a finished run: nothing evaluated yet
        acc = evaluate(model, data, split="val")
    return FitResult(schedule, schedule.epochs, acc.top1, acc.top5,
                     history[-1]["loss"] if history else float("nan"), seconds,
                     seen / seconds if seconds > 0 else 0.0, str(device), history,
                     precision=data.precision)


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise every layer's parameters and BN statistics in place (retraining from scratch)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


def retrain(model: nn.Module, data: DeviceBatches | FolderBatches, mode: str,
            original: Schedule, *,
            epochs: int | None = None, lr: float | None = None, flops_ratio: float = 1.0,
            seed: int = 0, checkpoint: str | Path | None = None,
            progress: Callable[[dict[str, float]], None] | None = None) -> FitResult:
    """Retrain a pruned model in place with one technique; validation figures, its settings."""

    schedule = retrain_schedule(mode, original, epochs=epochs, lr=lr, flops_ratio=flops_ratio)
    if mode.startswith("scratch"):
        reinitialise(model, seed)
    result = fit(model, data, schedule, seed=seed, checkpoint=checkpoint, progress=progress)
    return replace(result, mode=mode)


def _split_of(data: DeviceBatches | FolderBatches) -> dict[str, int]:
    """The split a training run reads: its train and validation sizes."""
    return {"train": data.n_train, "val": data.n_val}


def _save_state(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer,
                gen: torch.Generator, schedule: Schedule, epoch: int,
                history: list[dict[str, float]], split: dict[str, int]) -> str:
    """Write the training state atomically; return its sha256."""
    return atomic_save({"format": "evoprune.train/1", "epoch": epoch,
                        "schedule": asdict(schedule), "split": split, "history": history,
                        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "optimizer": opt.state_dict(), "generator": gen.get_state()}, path)


def _resume(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer,
            gen: torch.Generator, schedule: Schedule,
            split: dict[str, int]) -> tuple[int, list[dict[str, float]]]:
    """Load a training state written by `_save_state`; return (epochs done, history)."""
    state = load_file(path)
    if not isinstance(state, dict) or state.get("format") != "evoprune.train/1":
        raise EvopruneError(f"{path} is not an evoprune training checkpoint: remove it or choose "
                            "another `out`")
    if state["schedule"] != asdict(schedule):
        raise EvopruneError(f"{path} was written with another schedule: remove it to start over")
    if state.get("split") != split:
        raise EvopruneError(f"{path} was trained on another train/validation split (sizes "
                            f"{state.get('split')}, now {split}): remove it to start over")
    model.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    return int(state["epoch"]), list(state["history"])


RETRAIN_MODES = ("finetune", "rewind", "scratch", "scratch-b")


def retrain_schedule(mode: str, original: Schedule, *, epochs: int | None = None,
                     lr: float | None = None, flops_ratio: float = 1.0) -> Schedule:
    """The schedule of a retraining technique (Sec. 2.2; Liu et al. 2019 for scratch-b).

    finetune: small lr (0.01), no warm-up. rewind: the original initial lr, 5 warm-up epochs
    (learning-rate restarting). scratch: the original schedule. scratch-b: the original
    schedule with epochs scaled by 1/flops_ratio, so the FLOPs budget equals the original's.
    """
    if mode not in RETRAIN_MODES:
        raise EvopruneError(f"unknown retraining mode {mode!r}: choose {', '.join(RETRAIN_MODES)}")
    if not 0 < flops_ratio <= 1:
        raise EvopruneError(f"flops_ratio must be in (0, 1], got {flops_ratio}")
    n = epochs if epochs is not None else original.epochs
    if mode == "finetune":
        return replace(original, epochs=n, lr=lr if lr is not None else 0.01, warmup_epochs=0.0)
    if mode == "rewind":
        return replace(original, epochs=n, lr=lr if lr is not None else original.lr,
                       warmup_epochs=min(5.0, float(n)))
    if mode == "scratch-b":
        n = math.ceil(n / flops_ratio)
    return replace(original, epochs=n, lr=lr if lr is not None else original.lr)
