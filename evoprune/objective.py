"""One trial: decode the genotype, prune, optionally screen, fine-tune (the proxy), record.

The proxy is the paper's standard setting (Sec. 2.2): one-shot L2-norm filter pruning, then a
short fine-tune with lr 0.01 on a cosine schedule — or the user's own `finetune` and `evaluate`
(the Python API). A trial that cannot produce a finite result (non-finite loss or output, out
of memory, a genotype that cannot be repaired) is stored as FAIL with its reason; no inf or NaN
is ever stored as a value. What a trial stores is `schema.TrialRecord`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from evoprune.errors import EvopruneError, NonFiniteLossError, NonFiniteOutputError
from evoprune.events import Progress, TrialDone, TrialFailed
from evoprune.schema import TrialRecord, acc_drop

if TYPE_CHECKING:
    import torch
    from torch import nn

    from evoprune.data import DeviceBatches
    from evoprune.spaces import Decoded, Decoder
    from evoprune.units import Units

OBJECTIVES = ("acc_drop", "flops", "params", "latency")
SCREENS = ("adaptive-bn",)
MIN_SCREENED = 4  # trials screened before the screen starts to prune
IMPORTANCES = ("l2", "l1", "fpgm", "random")


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy fine-tune of every trial (the paper's lr 0.01, cosine, t epochs)."""

    epochs: int = 2  # proxy fine-tune epochs
    lr: float = 0.01  # its peak lr (cosine decay)
    batch_size: int | None = None  # None: 32 on digits (45 steps an epoch), else 128
    augment: bool = True  # random crops and flips where the dataset has them
    importance: str = "l2"  # filter ranking: l2 (the paper's), l1, fpgm or random
    screen: str | None = None  # adaptive-bn: recalibrate BN, prune the weakest before training
    screen_keep: float = 0.5  # fraction the screen lets through

    def __post_init__(self) -> None:
        """Refuse settings no proxy can use."""
        if self.epochs < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise EvopruneError("--proxy-epochs and --proxy-batch-size must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise EvopruneError(f"--proxy-lr must be a positive number, got {self.lr}")
        if self.screen is not None and self.screen not in SCREENS:
            raise EvopruneError(f"unknown screen {self.screen!r}: choose {', '.join(SCREENS)}")
        if not 0 < self.screen_keep <= 1:
            raise EvopruneError(f"--screen-keep must be in (0, 1], got {self.screen_keep}")
        if self.importance not in IMPORTANCES:
            raise EvopruneError(f"unknown importance {self.importance!r}: choose "
                                f"{', '.join(IMPORTANCES)}")

    def to_dict(self) -> dict[str, Any]:
        """Return plain data (the study's `proxy` branch)."""
        return asdict(self)


def check_objectives(names: Sequence[str]) -> tuple[str, ...]:
    """Validate objective names (all minimised); return them as a tuple."""
    names = tuple(names)
    bad = [n for n in names if n not in OBJECTIVES]
    if bad or not names:
        raise EvopruneError(f"unknown objective(s) {', '.join(bad) or '(none)'}: choose from "
                            f"{', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise EvopruneError(f"objective listed twice in {','.join(names)}")
    return names


class TrialFailure(Exception):
    """A trial that produced no finite result; its reason is stored with it."""


Finetune = Callable[["nn.Module"], Any]  # trains a pruned network in place
Evaluate = Callable[["nn.Module"], float]  # its accuracy in [0, 1]


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a process needs, built once: the base, its units and space, training.

    `finetune` trains a pruned network in place; `evaluate` returns its accuracy in [0, 1].
    `data` (the built-in data path) is needed only by the adaptive-BN screen.
    """

    base: nn.Module
    units: Units
    decoder: Decoder
    device: torch.device
    finetune: Finetune
    evaluate: Evaluate
    data: DeviceBatches | None = None


def proxy_context(base: nn.Module, units: Units, decoder: Decoder, data: DeviceBatches,
                  proxy: ProxyConfig, seed: int) -> TrialContext:
    """The built-in context: `fit` with the proxy's schedule on device-resident data."""
    from evoprune.train import Schedule, evaluate, fit

    assert proxy.batch_size is not None
    schedule = Schedule(epochs=proxy.epochs, lr=proxy.lr, batch_size=proxy.batch_size,
                        augment=proxy.augment)
    return TrialContext(base.to(data.device), units, decoder, data.device,
                        finetune=lambda m: fit(m, data, schedule, seed=seed),
                        evaluate=lambda m: evaluate(m, data).top1, data=data)


def _cost_record(decoder: Decoder, d: Decoded, uniform: bool) -> TrialRecord:
    """The recipe, channels and exact cost of a decoded recipe."""
    flops, params = decoder.cost.batch(d.kept)  # exact integers (the analytic model)
    return TrialRecord(
        recipe=[float(v) for v in d.recipes[0]], channels=[int(k) for k in d.kept[0]],
        flops=int(flops[0]), params=int(params[0]), flops_ratio=float(d.flops_ratio[0]),
        params_ratio=float(d.params_ratio[0]), mcb=float(d.mcb[0]), recipe_std=float(d.std[0]),
        is_uniform=uniform)


class Objective:
    """The Optuna objective of a search: genotype in, minimised values out, user_attrs written."""

    def __init__(self, context: TrialContext, *, base_acc: float, proxy: ProxyConfig,
                 objectives: Sequence[str], seed: int = 0, worker: dict[str, Any] | None = None,
                 progress: Progress | None = None) -> None:
        self.ctx = context
        self.base_acc = float(base_acc)
        self.proxy = proxy
        self.objectives = check_objectives(objectives)
        self.seed = seed
        self.worker = worker or {}
        self.progress = progress
        self.timing: dict[str, float] = {}  # seconds of the last trial, per stage
        self.last_failure: str | None = None  # the reason the last trial failed, if it did

    def genes(self, trial: Any) -> np.ndarray:
        """Suggest the genotype g000… (uniform in [0, 1]) and return it."""
        return np.array([trial.suggest_float(f"g{i:03d}", 0.0, 1.0)
                         for i in range(len(self.ctx.units))])

    def __call__(self, trial: Any) -> tuple[float, ...]:
        """Run one trial; raise TrialFailure (stored as FAIL with its reason) where it cannot."""
        from evoprune.pruning import prune_channels

        t0 = time.perf_counter()
        self.last_failure = None
        if self.worker:
            trial.set_user_attr("worker", self.worker)
        genes = self.genes(trial)
        t_genes = time.perf_counter()
        uniform = bool(trial.user_attrs.get("is_uniform", False))
        try:  # the uniform baseline is decoded as the band's uniform recipe, not from its genes
            d = self.ctx.decoder.uniform() if uniform else self.ctx.decoder.decode(genes[None])
        except EvopruneError as exc:
            self._fail(trial, f"genotype could not be repaired into the space: {exc}")
        t1 = time.perf_counter()
        pruned = prune_channels(self.ctx.base, self.ctx.units, d.kept[0],
                                importance=self.proxy.importance, seed=self.seed)
        t2 = time.perf_counter()
        record = _cost_record(self.ctx.decoder, d, uniform)
        record, screen_s = self._screen(trial, pruned, record)
        acc = self._finetune(trial, pruned, record)
        t3 = time.perf_counter()
        record = _with(record, proxy_acc=acc, acc_drop=acc_drop(self.base_acc, acc),
                       proxy_seconds=t3 - t2 - screen_s)
        if "latency" in self.objectives:
            from evoprune.bench import latency_ms

            record = _with(record, latency_ms=latency_ms(pruned, self.ctx.units.in_shape,
                                                         self.ctx.device))
        values = tuple(self._value(name, record) for name in self.objectives)
        if not all(math.isfinite(v) for v in values):
            self._write(trial, record)
            self._fail(trial, f"non-finite objective values {values}")
        self._write(trial, record)
        t4 = time.perf_counter()
        self.timing = {"suggest": t_genes - t0, "decode": t1 - t_genes, "prune": t2 - t1,
                       "screen": screen_s, "train_eval": t3 - t2 - screen_s, "record": t4 - t3}
        if self.progress is not None:
            self.progress(TrialDone(trial.number, self.worker.get("index"), record.acc_drop,
                                    record.flops_ratio, record.params_ratio, record.mcb,
                                    record.recipe_std, uniform, t4 - t0, values))
        return values

    def _finetune(self, trial: Any, pruned: Any, record: TrialRecord) -> float:
        """Fine-tune then evaluate `pruned`; FAIL the trial on NaN, inf or out-of-memory."""
        import torch

        try:
            result = self.ctx.finetune(pruned)
            acc = getattr(result, "test_acc", None)  # the built-in fit evaluates already
            acc = float(self.ctx.evaluate(pruned) if acc is None else acc)
        except NonFiniteLossError as exc:
            self._write(trial, record)
            self._fail(trial, f"non-finite loss in the proxy fine-tune: {exc}")
        except NonFiniteOutputError as exc:
            self._write(trial, record)
            self._fail(trial, f"non-finite outputs at evaluation: {exc}")
        except torch.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._write(trial, record)
            self._fail(trial, f"out of memory: {str(exc).splitlines()[0]}")
        if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
            self._write(trial, record)
            self._fail(trial, f"evaluate returned {acc!r}: an accuracy must be in [0, 1]")
        return acc

    def _screen(self, trial: Any, pruned: Any, record: TrialRecord) -> tuple[TrialRecord, float]:
        """The adaptive-BN screen: PRUNE the trial unless it is in the best `screen_keep`."""
        import optuna

        from evoprune.train import adaptive_bn, evaluate

        if self.proxy.screen != "adaptive-bn" or self.ctx.data is None:
            return record, 0.0
        tic = time.perf_counter()
        try:
            adaptive_bn(pruned.to(self.ctx.device), self.ctx.data, seed=self.seed)
            screen_acc = evaluate(pruned, self.ctx.data).top1
        except NonFiniteOutputError as exc:
            self._write(trial, record)
            self._fail(trial, f"non-finite outputs after adaptive BN: {exc}")
        record = _with(record, screen_acc=screen_acc)
        if not record.is_uniform and not self._passes_screen(trial, screen_acc):
            self._write(trial, _with(record, screened_out=True))
            raise optuna.TrialPruned(f"adaptive-BN accuracy {screen_acc:.4f} below the "
                                     f"best {self.proxy.screen_keep:.0%} so far")
        return record, time.perf_counter() - tic

    def _value(self, name: str, record: TrialRecord) -> float:
        """The minimised value of objective `name`."""
        key = {"acc_drop": "acc_drop", "flops": "flops_ratio", "params": "params_ratio",
               "latency": "latency_ms"}[name]
        return float(getattr(record, key))

    def _passes_screen(self, trial: Any, screen_acc: float) -> bool:
        """Keep the trial when its adaptive-BN accuracy is in the best `screen_keep` so far."""
        seen = [t.user_attrs["screen_acc"] for t in trial.study.get_trials(deepcopy=False)
                if "screen_acc" in t.user_attrs and t.number != trial.number]
        if len(seen) < MIN_SCREENED:
            return True
        return screen_acc >= float(np.quantile(seen, 1.0 - self.proxy.screen_keep))

    @staticmethod
    def _write(trial: Any, record: TrialRecord) -> None:
        from evoprune.storage import set_user_attrs

        set_user_attrs(trial, record.to_attrs())

    def _fail(self, trial: Any, reason: str) -> None:
        self.last_failure = reason
        trial.set_user_attr("fail_reason", reason)
        if self.progress is not None:
            self.progress(TrialFailed(trial.number, self.worker.get("index"), reason))
        raise TrialFailure(reason)


def _with(record: TrialRecord, **changes: Any) -> TrialRecord:
    from dataclasses import replace

    return replace(record, **changes)
