"""One trial: decode the genotype (or draw the recipe), prune, screen, fine-tune (the proxy), record.

The proxy is the paper's standard setting (Sec. 2.2): one-shot L2-norm filter pruning, then a
short fine-tune with lr 0.01 on a cosine schedule — or the user's own `finetune` and `evaluate`
(the Python API). The fine-tune's seed is a function of the study seed and the trial number
only, so trial j of every space of one regime shares it (common random numbers), and the
accuracy is read on the validation split. Under the random sampler a trial's recipe is an
i.i.d. draw from the space's own distribution (`Decoder.sample`), not a decoded genotype. A trial that cannot produce a finite result (non-finite loss or output, out
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

from evoprune.core.events import Progress, TrialDone, TrialFailed
from evoprune.errors import EvopruneError, NonFiniteLossError, NonFiniteOutputError
from evoprune.network.cost import latency_ms
from evoprune.network.pruning import IMPORTANCES, prune_channels
from evoprune.searching.baselines import warm_genes
from evoprune.searching.genes import gene_names
from evoprune.searching.sampler import derive_seed
from evoprune.store.schema import UNIT_NAMES, TrialRecord, drop_pp, objectives_now
from evoprune.store.storage import set_user_attrs
from evoprune.training.engine import Schedule, adaptive_bn, evaluate, fit

if TYPE_CHECKING:
    import torch
    from torch import nn

    from evoprune.network.units import Units
    from evoprune.spaces import Decoded, Decoder
    from evoprune.training.data import DeviceBatches

OBJECTIVES = ("val_drop", "flops", "params", "latency")
SCREENS = ("adaptive-bn",)
MIN_SCREENED = 4  # trials screened before the screen starts to prune


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
    rungs: tuple[int, ...] = ()  # successive halving: epochs per rung (0: adaptive BN only)
    rung_keep: float = 0.5  # fraction promoted past each rung (of the trials that reached it)

    def __post_init__(self) -> None:
        """Refuse settings no proxy can use; with rungs, `epochs` is the last rung's."""
        if self.rungs:
            rungs = tuple(int(r) for r in self.rungs)
            if min(rungs) < 0 or rungs[-1] < 1 or list(rungs) != sorted(set(rungs)):
                raise EvopruneError(f"`rungs` must increase and end with a fine-tune of at least "
                                    f"1 epoch (0: adaptive BN only), e.g. 0,1,4; got "
                                    f"{','.join(map(str, rungs))}")
            if self.screen is not None:
                raise EvopruneError("`screen` is rung 0 of `rungs`: give `rungs` 0,… instead "
                                    "of both")
            if not 0 < self.rung_keep < 1:
                raise EvopruneError(f"`rung_keep` must be in (0, 1), got {self.rung_keep}")
            object.__setattr__(self, "rungs", rungs)
            object.__setattr__(self, "epochs", rungs[-1])
        if self.epochs < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise EvopruneError("`proxy_epochs` and `proxy_batch_size` must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise EvopruneError(f"`proxy_lr` must be a positive number, got {self.lr}")
        if self.screen is not None and self.screen not in SCREENS:
            raise EvopruneError(f"unknown screen {self.screen!r}: choose {', '.join(SCREENS)}")
        if not 0 < self.screen_keep <= 1:
            raise EvopruneError(f"`screen_keep` must be in (0, 1], got {self.screen_keep}")
        if self.importance not in IMPORTANCES:
            raise EvopruneError(f"unknown importance {self.importance!r}: choose "
                                f"{', '.join(IMPORTANCES)}")

    def to_dict(self) -> dict[str, Any]:
        """Return plain data (the study's `proxy` branch)."""
        return asdict(self)


def check_objectives(names: Sequence[str]) -> tuple[str, ...]:
    """Validate objective names (all minimised; `acc_drop` is read as `val_drop`); return them."""
    names = objectives_now(names)
    bad = [n for n in names if n not in OBJECTIVES]
    if bad or not names:
        raise EvopruneError(f"unknown objective(s) {', '.join(bad) or '(none)'}: choose from "
                            f"{', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise EvopruneError(f"objective listed twice in {','.join(names)}")
    return names


class TrialFailure(Exception):
    """A trial that produced no finite result; its reason is stored with it."""


Finetune = Callable[["nn.Module", int], Any]  # trains a pruned network in place, with a seed
Evaluate = Callable[["nn.Module"], float]  # its accuracy in [0, 1] on the validation split


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a process needs, built once: the base, its units and space, training.

    `finetune(model, seed)` trains a pruned network in place; `evaluate` returns its accuracy
    in [0, 1] on the validation split (never the test split).
    `data` (the built-in data path) is needed only by the adaptive-BN screen.
    """

    base: nn.Module
    units: Units
    decoder: Decoder
    device: torch.device
    finetune: Finetune
    evaluate: Evaluate
    data: DeviceBatches | None = None
    finetune_epochs: Callable[[nn.Module, int, int], Any] | None = None  # (model, seed, epochs)


def proxy_context(base: nn.Module, units: Units, decoder: Decoder, data: DeviceBatches,
                  proxy: ProxyConfig) -> TrialContext:
    """The built-in context: `fit` with the proxy's schedule on device-resident data."""
    from dataclasses import replace


    assert proxy.batch_size is not None
    schedule = Schedule(epochs=proxy.epochs, lr=proxy.lr, batch_size=proxy.batch_size,
                        augment=proxy.augment)
    return TrialContext(base.to(data.device), units, decoder, data.device,
                        finetune=lambda m, seed: fit(m, data, schedule, seed=seed),
                        evaluate=lambda m: evaluate(m, data, split="val").top1, data=data,
                        finetune_epochs=lambda m, seed, epochs: fit(
                            m, data, replace(schedule, epochs=epochs), seed=seed))


def trial_seed(seed: int, number: int) -> int:
    """The proxy fine-tune's seed of trial `number`: the same in every study sharing `seed`."""

    return derive_seed(seed, number, 0)


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
                 objectives: Sequence[str], seed: int = 0, draw: bool = False,
                 worker: dict[str, Any] | None = None, progress: Progress | None = None,
                 gene_naming: str = UNIT_NAMES) -> None:
        """`draw`: each trial's recipe is drawn from the space (the random sampler's way);
        `gene_naming`: the study's (`StudyRecord.gene_names`: index in studies stored before)."""
        self.ctx = context
        self.gene_naming = gene_naming
        self.gene_names = gene_names(context.decoder, gene_naming)
        self.draw = draw
        self.base_acc = float(base_acc)
        self.proxy = proxy
        self.objectives = check_objectives(objectives)
        self.seed = seed
        self.worker = worker or {}
        self.progress = progress
        if proxy.rungs and ((0 in proxy.rungs and context.data is None)
                            or (max(proxy.rungs) > 0 and context.finetune_epochs is None)):
            raise EvopruneError("`rungs` need the built-in data and fine-tune (adaptive BN, "
                                "fine-tunes of each rung's epochs): leave rungs out with your "
                                "own finetune")
        self.timing: dict[str, float] = {}  # seconds of the last trial, per stage
        self.last_failure: str | None = None  # the reason the last trial failed, if it did

    def genes(self, trial: Any) -> np.ndarray:
        """Suggest the genotype (uniform in [0, 1]; genes named by `gene_names`) and return it."""
        return np.array([trial.suggest_float(name, 0.0, 1.0) for name in self.gene_names])

    def recipe(self, trial: Any, uniform: bool, seed: int) -> Decoded:
        """The trial's recipe: uniform, a given baseline, a draw from the space, or decoded genes."""
        if uniform:  # enqueued with no genes (searching.sampler: kept out of the sampler)
            return self.ctx.decoder.uniform()
        kept = trial.user_attrs.get("baseline_kept")
        if trial.user_attrs.get("role") == "baseline" and kept is not None:

            # enqueued with genes: the warm start
            if warm_genes(self.ctx.decoder, kept, self.gene_naming) is not None:
                self.genes(trial)
            return self.ctx.decoder.describe_kept(np.asarray(kept, dtype=np.int64)[None])
        if self.draw:
            return self.ctx.decoder.sample(1, seed=seed)
        return self.ctx.decoder.decode(self.genes(trial)[None])

    def __call__(self, trial: Any, *, seed_number: int | None = None) -> tuple[float, ...]:
        """Run one trial; raise TrialFailure (stored as FAIL with its reason) where it cannot.

        `seed_number`: the trial whose seed to use (a retry's original); default its own number.
        """

        t0 = time.perf_counter()
        self.last_failure = None
        if self.worker:
            trial.set_user_attr("worker", self.worker)
        seed = trial_seed(self.seed, trial.number if seed_number is None else seed_number)
        uniform = bool(trial.user_attrs.get("is_uniform", False))
        t_genes = time.perf_counter()
        try:  # the uniform baseline is the band's uniform recipe, whatever its genes
            d = self.recipe(trial, uniform, seed)
        except EvopruneError as exc:
            self._fail(trial, f"genotype could not be repaired into the space: {exc}")
        t1 = time.perf_counter()
        pruned = prune_channels(self.ctx.base, self.ctx.units, d.kept[0],
                                importance=self.proxy.importance, seed=seed)
        t2 = time.perf_counter()
        record = _with(_cost_record(self.ctx.decoder, d, uniform), seed=seed,
                       role=trial.user_attrs.get("role"),
                       criterion=trial.user_attrs.get("criterion"))
        record, screen_s = self._screen(trial, pruned, record)
        if self.proxy.rungs:
            record, acc = self._rungs(trial, pruned, record, seed)
        else:
            acc = self._finetune(trial, pruned, record, seed)
        t3 = time.perf_counter()
        record = _with(record, val_acc=acc, val_drop=drop_pp(self.base_acc, acc),
                       proxy_seconds=t3 - t2 - screen_s)
        if "latency" in self.objectives:

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
            self.progress(TrialDone(trial.number, self.worker.get("index"), record.val_drop,
                                    record.flops_ratio, record.params_ratio, record.mcb,
                                    record.recipe_std, uniform, t4 - t0, values,
                                    record.criterion))
        return values

    def _finetune(self, trial: Any, pruned: Any, record: TrialRecord, seed: int,
                  epochs: int | None = None) -> float:
        """Fine-tune (`epochs`: a rung's, else the proxy's) then evaluate `pruned`; FAIL the
        trial on NaN, inf or out-of-memory."""
        import torch

        try:
            if epochs is None:
                result = self.ctx.finetune(pruned, seed)
            else:
                assert self.ctx.finetune_epochs is not None
                result = self.ctx.finetune_epochs(pruned, seed, epochs)
            acc = getattr(result, "val_acc", None)  # the built-in fit evaluates already
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


        if self.proxy.screen != "adaptive-bn" or self.ctx.data is None:
            return record, 0.0
        tic = time.perf_counter()
        try:
            adaptive_bn(pruned.to(self.ctx.device), self.ctx.data, seed=record.seed or 0)
            screen_acc = evaluate(pruned, self.ctx.data, split="val").top1
        except NonFiniteOutputError as exc:
            self._write(trial, record)
            self._fail(trial, f"non-finite outputs after adaptive BN: {exc}")
        record = _with(record, screen_acc=screen_acc)
        if not (record.is_uniform or record.is_baseline) and not self._passes_screen(trial, screen_acc):
            self._write(trial, _with(record, screened_out=True))
            raise optuna.TrialPruned(f"adaptive-BN accuracy {screen_acc:.4f} below the "
                                     f"best {self.proxy.screen_keep:.0%} so far")
        return record, time.perf_counter() - tic

    def _rungs(self, trial: Any, pruned: Any, record: TrialRecord,
               seed: int) -> tuple[TrialRecord, float]:
        """Successive halving: each rung a fresh fine-tune of its epochs from the pruned weights
        (0: adaptive BN only), the same seed at every rung; PRUNE the trial unless it is in the
        best `rung_keep` of the trials that reached the rung; return the last rung's accuracy."""
        import copy

        import optuna

        rungs = self.proxy.rungs
        accs: list[float] = []
        for i, epochs in enumerate(rungs):
            last = i == len(rungs) - 1
            model = pruned if last else copy.deepcopy(pruned)
            acc = (self._adaptive_bn(trial, model, record) if epochs == 0 else
                   self._finetune(trial, model, record, seed, epochs=epochs))
            accs.append(float(acc))
            record = _with(record, rung_acc=list(accs))
            trial.set_user_attr("rung_acc", list(accs))  # the trials judged later read it
            if not last and not (record.is_uniform or record.role == "baseline") \
                    and not self._promoted(trial, i, acc):
                self._write(trial, _with(record, rung_out=i))
                raise optuna.TrialPruned(f"rung {i} ({epochs} epochs) accuracy {acc:.4f} below "
                                         f"the best {self.proxy.rung_keep:.0%} so far")
        return record, accs[-1]

    def _adaptive_bn(self, trial: Any, model: Any, record: TrialRecord) -> float:
        """Rung 0: recalibrate BN on training batches (no gradient step), then validation."""

        assert self.ctx.data is not None
        try:
            adaptive_bn(model.to(self.ctx.device), self.ctx.data, seed=record.seed or 0)
            return float(self.ctx.evaluate(model))
        except NonFiniteOutputError as exc:
            self._write(trial, record)
            self._fail(trial, f"non-finite outputs after adaptive BN: {exc}")

    def _promoted(self, trial: Any, rung: int, acc: float) -> bool:
        """Whether `acc` is in the best `rung_keep` of the other trials that reached `rung`
        (always, until MIN_SCREENED have)."""
        seen = [t.user_attrs["rung_acc"][rung] for t in trial.study.get_trials(deepcopy=False)
                if t.number != trial.number and len(t.user_attrs.get("rung_acc") or ()) > rung]
        if len(seen) < MIN_SCREENED:
            return True
        return acc >= float(np.quantile(seen, 1.0 - self.proxy.rung_keep))

    def _value(self, name: str, record: TrialRecord) -> float:
        """The minimised value of objective `name`."""
        key = {"val_drop": "val_drop", "flops": "flops_ratio", "params": "params_ratio",
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
