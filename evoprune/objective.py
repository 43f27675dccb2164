"""One trial: decode the genotype, prune, optionally screen, proxy fine-tune, record user_attrs.

The proxy is the paper's standard setting (Sec. 2.2): one-shot L2-norm filter pruning, then a
short fine-tune with lr 0.01 on a cosine schedule. A trial that cannot produce a finite result
(non-finite loss, out of memory, a genotype that cannot be repaired) is stored as FAIL with its
reason; no inf or NaN is ever stored as a value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evoprune.errors import EvopruneError, NonFiniteLossError

OBJECTIVES = ("acc_drop", "flops", "params", "latency")
SCREENS = ("adaptive-bn",)
MIN_SCREENED = 4  # trials screened before the screen starts to prune


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy fine-tune of every trial (the paper's lr 0.01, cosine, t epochs)."""

    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 128
    augment: bool = True
    importance: str = "l2"
    screen: str | None = None  # adaptive-bn: recalibrate BN, prune the weakest before training
    screen_keep: float = 0.5

    def __post_init__(self) -> None:
        """Refuse settings no proxy can use."""
        if self.epochs < 1 or self.batch_size < 1:
            raise EvopruneError("--proxy-epochs and --proxy-batch-size must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise EvopruneError(f"--proxy-lr must be a positive number, got {self.lr}")
        if self.screen is not None and self.screen not in SCREENS:
            raise EvopruneError(f"unknown screen {self.screen!r}: choose {', '.join(SCREENS)}")
        if not 0 < self.screen_keep <= 1:
            raise EvopruneError(f"--screen-keep must be in (0, 1], got {self.screen_keep}")

    def to_dict(self) -> dict[str, Any]:
        """Return plain data (the study's `proxy` attr)."""
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


def latency_ms(model: Any, in_shape: Sequence[int], device: Any, batch: int = 32,
               repeats: int = 5) -> float:
    """Median forward time of one batch in milliseconds (eval mode, no gradients)."""
    import torch

    x = torch.randn(batch, *in_shape, device=device)
    model.eval()
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            tic = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - tic)
    model.train()
    return 1000 * float(np.median(times))


class Objective:
    """The Optuna objective of a search: genotype in, minimised values out, user_attrs written."""

    def __init__(self, *, base: Any, units: Any, decoder: Any, data: Any, base_acc: float,
                 proxy: ProxyConfig, objectives: Sequence[str], seed: int = 0,
                 worker: dict[str, Any] | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.base = base
        self.units = units
        self.decoder = decoder
        self.data = data
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
                         for i in range(len(self.units))])

    def __call__(self, trial: Any) -> tuple[float, ...]:
        """Run one trial; raise TrialFailure (stored as FAIL with its reason) where it cannot."""
        import optuna
        import torch

        from evoprune.prune import prune_channels
        from evoprune.train import Schedule, adaptive_bn, evaluate, fit

        t0 = time.perf_counter()
        self.last_failure = None
        if self.worker:
            trial.set_user_attr("worker", self.worker)
        genes = self.genes(trial)
        t_genes = time.perf_counter()
        uniform = bool(trial.user_attrs.get("is_uniform", False))
        try:
            d = self.decoder.uniform() if uniform else self.decoder.decode(genes[None])
        except EvopruneError as exc:
            self._fail(trial, f"genotype could not be repaired into the space: {exc}")
        t1 = time.perf_counter()
        pruned = prune_channels(self.base, self.units, d.kept[0], importance=self.proxy.importance,
                                seed=self.seed)
        t2 = time.perf_counter()
        flops, params = self.decoder.cost.batch(d.kept)  # exact integers (the analytic model)
        attrs: dict[str, Any] = {
            "recipe": [float(v) for v in d.recipes[0]], "channels": [int(k) for k in d.kept[0]],
            "flops": int(flops[0]), "params": int(params[0]),
            "flops_ratio": float(d.flops_ratio[0]), "params_ratio": float(d.params_ratio[0]),
            "mcb": float(d.mcb[0]), "recipe_std": float(d.std[0]), "is_uniform": uniform,
        }
        screen_s = 0.0
        try:
            if self.proxy.screen == "adaptive-bn":
                tic = time.perf_counter()
                adaptive_bn(pruned.to(self.data.device), self.data, seed=self.seed)
                screen_acc = evaluate(pruned, self.data).top1
                screen_s = time.perf_counter() - tic
                attrs["screen_acc"] = screen_acc
                if not uniform and not self._passes_screen(trial, screen_acc):
                    self._write(trial, {**attrs, "screened_out": True})
                    raise optuna.TrialPruned(f"adaptive-BN accuracy {screen_acc:.4f} below the "
                                             f"best {self.proxy.screen_keep:.0%} so far")
            schedule = Schedule(epochs=self.proxy.epochs, lr=self.proxy.lr,
                                batch_size=self.proxy.batch_size, augment=self.proxy.augment)
            result = fit(pruned, self.data, schedule, seed=self.seed)
        except NonFiniteLossError as exc:
            self._write(trial, attrs)
            self._fail(trial, f"non-finite loss in the proxy fine-tune: {exc}")
        except torch.OutOfMemoryError as exc:
            pruned = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._write(trial, attrs)
            self._fail(trial, f"out of memory: {str(exc).splitlines()[0]}")
        t3 = time.perf_counter()
        acc = float(result.test_acc)
        attrs.update(proxy_acc=acc, acc_drop=100.0 * (self.base_acc - acc),
                     proxy_seconds=result.seconds)
        if "latency" in self.objectives:
            attrs["latency_ms"] = latency_ms(pruned, self.units.in_shape, self.data.device)
        values = tuple(self._value(name, attrs) for name in self.objectives)
        if not all(math.isfinite(v) for v in values):
            self._write(trial, attrs)
            self._fail(trial, f"non-finite objective values {values}")
        self._write(trial, attrs)
        t4 = time.perf_counter()
        self.timing = {"suggest": t_genes - t0, "decode": t1 - t_genes, "prune": t2 - t1, "screen": screen_s,
                       "train_eval": t3 - t2 - screen_s, "record": t4 - t3}
        if self.progress is not None:
            self.progress({"number": trial.number, **attrs, "values": values,
                           "seconds": t4 - t0, "worker": self.worker})
        return values

    def _value(self, name: str, attrs: dict[str, Any]) -> float:
        """The minimised value of objective `name`."""
        key = {"acc_drop": "acc_drop", "flops": "flops_ratio", "params": "params_ratio",
               "latency": "latency_ms"}[name]
        return float(attrs[key])

    def _passes_screen(self, trial: Any, screen_acc: float) -> bool:
        """Keep the trial when its adaptive-BN accuracy is in the best `screen_keep` so far."""
        seen = [t.user_attrs["screen_acc"] for t in trial.study.get_trials(deepcopy=False)
                if "screen_acc" in t.user_attrs and t.number != trial.number]
        if len(seen) < MIN_SCREENED:
            return True
        return screen_acc >= float(np.quantile(seen, 1.0 - self.proxy.screen_keep))

    @staticmethod
    def _write(trial: Any, attrs: dict[str, Any]) -> None:
        from evoprune.storage import set_user_attrs

        set_user_attrs(trial, attrs)

    def _fail(self, trial: Any, reason: str) -> None:
        self.last_failure = reason
        trial.set_user_attr("fail_reason", reason)
        if self.progress is not None:
            self.progress({"number": trial.number, "failed": reason, "worker": self.worker})
        raise TrialFailure(reason)
