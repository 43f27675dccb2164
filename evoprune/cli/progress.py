"""Progress a user can read: each typed event (`evoprune.core.events`) as one line on stderr, and
on a terminal a live bar (tqdm) with k of n, the best so far and the time left; plain lines, each
with k of n and the time left, when stderr is a file or a pipe."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

from evoprune.core import events as ev


class EventPrinter:
    """Prints a search's, a retraining's or a base training's events; a bar on a terminal."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        """`live`: draw bars (default: when `stream` is a terminal)."""
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) if live is None else live
        self.best: dict[str, Any] = {}
        self.run: dict[str, Any] = {}  # this run's start, trials done, the study's count and n
        self.bar: tqdm | None = None

    def __call__(self, e: Any) -> None:
        """Print one event (and move the bar)."""
        text = self.line(e)
        if self.live:
            self._move(e)
        if text is not None:
            if self.bar is not None:
                self.bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def _open(self, total: int, initial: int, desc: str, unit: str) -> None:
        """A new bar (the last one closed)."""
        self.close()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                        dynamic_ncols=True, leave=False, smoothing=0.1)

    def _move(self, e: Any) -> None:
        """The bar's part of an event."""
        if isinstance(e, ev.SearchStarted):
            self._open(e.n_trials, min(e.complete, e.n_trials), e.study, "trial")
            if e.best_drop is not None:
                self.bar.set_postfix_str(f"best {e.best_drop:.2f} pp (#{e.best_number})")
        elif isinstance(e, ev.TrialDone) and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"best {self.best['val_drop']:.2f} pp "
                                     f"(#{self.best['number']})")
        elif isinstance(e, ev.RetrainStarted):
            self._open(e.epochs, 0, f"retrain #{e.number}", "epoch")
        elif isinstance(e, ev.BaseTraining):
            self._open(e.epochs, 0, f"base {e.model}", "epoch")
        elif isinstance(e, ev.EpochDone) and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"val {100 * e.val_acc:.2f}%")
        if self.bar is not None and self.bar.n >= (self.bar.total or 0):
            self.close()

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, e: Any) -> str | None:
        """The event's line, or None for an event with none."""
        tag = f" [w{e.worker}]" if getattr(e, "worker", None) is not None else ""
        if isinstance(e, ev.BaseTraining):
            return (f"training the base {e.model} on {e.dataset} ({e.epochs} epochs, cached "
                    "in checkpoints/ beside the storage for later searches)")
        if isinstance(e, ev.EpochDone):
            return f"  epoch {e.epoch}  loss {e.loss:.4f}  val {100 * e.val_acc:.2f}%"
        if isinstance(e, ev.StudyCreated):
            return (f"created study {e.study} ({e.units} units); the first trials are the "
                    f"uniform baseline, one per seed: FLOPs {e.flops_ratio:.4f}, params "
                    f"{e.params_ratio:.4f}, mCB {e.mcb:.3f}")
        if isinstance(e, ev.BaselineFound):
            return (f"baseline {e.criterion}: FLOPs {e.flops_ratio:.4f}, params "
                    f"{e.params_ratio:.4f}, mCB {e.mcb:.3f}, std {e.recipe_std:.3f}"
                    + (f" ({e.note})" if e.note else ""))
        if isinstance(e, ev.BaselineScored):
            return (f"  {e.name}: val drop {e.val_drop:.2f} pp at FLOPs {e.flops_ratio:.4f} "
                    f"({e.seconds:.1f} s)")
        if isinstance(e, ev.TrialsReaped):
            return (f"trial(s) {', '.join(map(str, e.trials))} were left RUNNING by a dead "
                    "process: marked FAIL and queued again")
        if isinstance(e, ev.SearchStarted):
            self.run.update(start=time.monotonic(), done=0, complete=e.complete, n=e.n_trials)
            self.best.clear()  # a new study (payoff runs several through one printer)
            if e.best_drop is not None:
                self.best.update(val_drop=e.best_drop, number=e.best_number)
            return (f"study {e.study}: {e.complete}/{e.n_trials} COMPLETE, base accuracy "
                    f"{100 * e.base_acc:.2f}% (validation), {e.workers} worker(s)"
                    + (f", best so far {e.best_drop:.2f} pp (#{e.best_number})"
                       if e.best_drop is not None else ""))
        if isinstance(e, ev.RetrainStarted):
            return (f"retraining trial {e.number}{' (uniform)' if e.is_uniform else ''}: "
                    f"{e.mode}, {e.epochs} epochs, lr {e.lr:g}")
        if isinstance(e, ev.TrialFailed):
            return f"trial {e.number:>4}{tag} FAILED: {e.reason}"
        if isinstance(e, ev.TrialDone):
            if not self.best or e.val_drop < self.best["val_drop"]:
                self.best.update(val_drop=e.val_drop, number=e.number)
            self.run["done"] = self.run.get("done", 0) + 1
            return (f"trial {e.number:>4}{tag}  drop {e.val_drop:6.2f} pp  FLOPs "
                    f"{e.flops_ratio:.4f}  params {e.params_ratio:.4f}  mCB {e.mcb:.3f}  "
                    f"std {e.recipe_std:.3f}{'  uniform' if e.is_uniform else ''}"
                    f"{f'  baseline {e.criterion}' if e.criterion else ''}  "
                    f"{e.seconds:.1f} s | best {self.best['val_drop']:.2f} pp "
                    f"(#{self.best['number']}){eta(self.run)}")
        return None


def eta(run: dict[str, Any]) -> str:
    """ " | k/n, ETA 4m 10s": COMPLETE trials of the study and the time left at this run's pace."""
    if "n" not in run:
        return ""
    k = min(run["complete"] + run["done"], run["n"])
    left = run["n"] - k
    pace = (time.monotonic() - run["start"]) / max(run["done"], 1)
    secs = pace * left
    when = f"{int(secs // 3600)}h {int(secs % 3600 // 60):02d}m" if secs >= 3600 else \
        f"{int(secs // 60)}m {int(secs % 60):02d}s"
    return f" | {k}/{run['n']}" + (f", ETA {when}" if left else "")
