"""Top-k selection and full retraining (fine-tune, LR rewinding, from scratch), written back.

The k best COMPLETE trials (by proxy acc_drop, ties by params) and the study's uniform baseline
are retrained with the same mode, epochs and lr, so the comparison is fair. Each result is the
trial's `retrain` user_attr (DESIGN.md) and also the study's `retrain:NUMBER` user_attr (a journal
storage cannot change a finished trial). A trial already retrained with the same settings is
skipped, and an interrupted retraining resumes at its next epoch from its own checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoprune.errors import EvopruneError
from evoprune.recipes import DEFAULT_STORAGE

RETRAIN_DIR = "studies/checkpoints/retrain"


@dataclass(frozen=True)
class RetrainConfig:
    """What `evoprune retrain` does (and `search --top-k`)."""

    storage: str = DEFAULT_STORAGE
    study_name: str = ""
    top_k: int = 3
    mode: str = "finetune"
    epochs: int = 10
    lr: float | None = None  # the mode's default: 0.01 fine-tune, the original lr otherwise
    batch_size: int = 128
    device: str = "auto"
    seed: int = 0
    data_root: str | None = None
    baseline: bool = True  # also retrain the uniform recipe with the same budget
    out_dir: str = RETRAIN_DIR

    def settings(self) -> dict[str, Any]:
        """The settings two retrainings must share to be the same (mode, epochs, lr, batch, seed)."""
        from evoprune.train import Schedule, retrain_schedule

        s = retrain_schedule(self.mode, Schedule(epochs=self.epochs, batch_size=self.batch_size),
                             epochs=self.epochs, lr=self.lr)
        return {"mode": self.mode, "epochs": s.epochs, "lr": s.lr, "batch_size": s.batch_size,
                "seed": self.seed}


def select_top_k(trials: Sequence[Any], k: int) -> list[Any]:
    """The k best COMPLETE, non-uniform trials by (acc_drop, params_ratio), one per network."""
    if k <= 0:
        return []
    seen: set[tuple[int, ...]] = set()
    ranked = sorted((t for t in trials if t.state.name == "COMPLETE"
                     and not t.user_attrs.get("is_uniform")
                     and math.isfinite(t.user_attrs.get("acc_drop", math.nan))),
                    key=lambda t: (t.user_attrs["acc_drop"], t.user_attrs.get("params_ratio", 1.0),
                                   t.number))
    out = []
    for t in ranked:
        key = tuple(t.user_attrs.get("channels", [t.number]))
        if key in seen:  # a retried genotype or an identical network: retrain once
            continue
        seen.add(key)
        out.append(t)
        if len(out) == k:
            break
    return out


def retrain_results(study: Any) -> dict[int, dict[str, Any]]:
    """Retraining results of a study by trial number (trial attrs, else the study's copies)."""
    out = {int(key.split(":", 1)[1]): value for key, value in study.user_attrs.items()
           if key.startswith("retrain:") and isinstance(value, dict)}
    for t in study.get_trials(deepcopy=False):
        if isinstance(t.user_attrs.get("retrain"), dict):
            out[t.number] = t.user_attrs["retrain"]
    return out


def _same(result: dict[str, Any] | None, settings: dict[str, Any]) -> bool:
    return bool(result) and all(result.get(k) == v for k, v in settings.items())


def run_retrain(config: RetrainConfig,
                progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Retrain the top-k trials and the uniform baseline; return one record per trial."""
    from evoprune.storage import load_study, set_finished_attr
    from evoprune.train import RETRAIN_MODES

    say = progress or (lambda _e: None)
    if config.mode not in RETRAIN_MODES:
        raise EvopruneError(f"unknown --mode {config.mode!r}: choose {', '.join(RETRAIN_MODES)}")
    if config.top_k < 0 or config.epochs < 1 or config.batch_size < 1:
        raise EvopruneError("--top-k must be 0 or more, --epochs and --batch-size at least 1")
    if config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0):
        raise EvopruneError(f"--lr must be a positive number, got {config.lr}")
    if not config.study_name:
        raise EvopruneError("--study-name is required")
    settings = config.settings()
    study = load_study(config.storage, config.study_name)
    attrs = study.user_attrs
    if "checkpoint" not in attrs or "base_acc" not in attrs:
        raise EvopruneError(f"study {config.study_name!r} was not made by evoprune search "
                            "(no checkpoint or base_acc in its user_attrs)")
    trials = study.get_trials(deepcopy=False)
    chosen = select_top_k(trials, config.top_k)
    if config.baseline:
        uniform = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("is_uniform")]
        chosen += uniform[:1]
    if not chosen:
        raise EvopruneError(f"study {config.study_name!r} has no COMPLETE trial to retrain")
    done = retrain_results(study)
    todo = [t for t in chosen if not _same(done.get(t.number), settings)]
    records = [{"number": t.number, "is_uniform": bool(t.user_attrs.get("is_uniform")),
                "skipped": True, **done[t.number]} for t in chosen if t not in todo]
    if not todo:
        return sorted(records, key=lambda r: r["number"])
    base, units, data = _load_base(config, attrs)
    for t in todo:
        say({"event": "retrain", "number": t.number, "is_uniform": bool(t.user_attrs.get("is_uniform")),
             **settings})
        result = _retrain_one(config, settings, study, t, base, units, data, attrs, say)
        study.set_user_attr(f"retrain:{t.number}", result)
        set_finished_attr(study, t, "retrain", result)
        records.append({"number": t.number, "is_uniform": bool(t.user_attrs.get("is_uniform")),
                        "skipped": False, **result})
    return sorted(records, key=lambda r: r["number"])


def _load_base(config: RetrainConfig, attrs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The study's base model (weights checked against the stored sha256), units and data."""
    from evoprune.checkpoint import load_weights, sha256_of
    from evoprune.data import batches_for, load_dataset
    from evoprune.models import build_model
    from evoprune.train import resolve_device
    from evoprune.units import find_units

    path, sha = attrs["checkpoint"]["path"], attrs["checkpoint"]["sha256"]
    if not Path(path).is_file():
        raise EvopruneError(f"the study's checkpoint {path} is gone: restore it to retrain")
    if sha256_of(path) != sha:
        raise EvopruneError(f"the study's checkpoint {path} changed since the search (sha256 "
                            "differs): restore the original file")
    device = resolve_device(config.device)
    data_root = config.data_root or attrs.get("data_root")
    data = batches_for(load_dataset(attrs["dataset"], data_root), device)
    base = build_model(attrs["model"], data.info.num_classes, data.info.in_shape)
    load_weights(base, path)
    units = find_units(base, data.info.in_shape, residual=bool(attrs.get("residual")))
    if [u["name"] for u in attrs.get("units", [])] != units.names:
        raise EvopruneError("the model's units differ from the study's: evoprune or the model "
                            "changed since the search")
    return base, units, data


def _retrain_one(config: RetrainConfig, settings: dict[str, Any], study: Any, trial: Any,
                 base: Any, units: Any, data: Any, attrs: dict[str, Any],
                 say: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Prune the base to the trial's channels, retrain, save the model; return the result."""
    from evoprune.prune import PrunedSpec, prune_channels, save_pruned
    from evoprune.train import Schedule, retrain

    kept = trial.user_attrs["channels"]
    model = prune_channels(base, units, kept, importance=attrs.get("proxy", {}).get("importance", "l2"),
                           seed=config.seed)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{study.study_name}-trial{trial.number}-{settings['mode']}-{digest}"
    state = out / f"{stem}.state.pt"
    original = Schedule(epochs=config.epochs, batch_size=config.batch_size)
    result = retrain(model, data, config.mode, original, epochs=config.epochs, lr=config.lr,
                     flops_ratio=float(trial.user_attrs.get("flops_ratio", 1.0)), seed=config.seed,
                     checkpoint=state,
                     progress=lambda r: say({"event": "retrain_epoch", "number": trial.number, **r}))
    spec = PrunedSpec(attrs["model"], data.info.num_classes, tuple(data.info.in_shape),
                      bool(attrs.get("residual")), tuple(units.names),
                      tuple(int(c) for c in units.channels), tuple(int(k) for k in kept),
                      tuple(float(r) for r in trial.user_attrs["recipe"]),
                      attrs.get("proxy", {}).get("importance", "l2"),
                      int(attrs.get("space", {}).get("round_to", 1)))
    model_path = out / f"{stem}.pt"
    sha = save_pruned(model_path, model.cpu(), spec)
    state.unlink(missing_ok=True)
    acc = float(result.test_acc)
    return {**settings, "acc": acc, "acc_drop": 100.0 * (float(attrs["base_acc"]) - acc),
            "seconds": result.seconds, "model_path": str(model_path), "sha256": sha}
