"""Recipe specs a user types: `uniform:R`, a JSON file, or `study:NAME:TRIAL` from a study storage.

Ratios of every form are rounded by one rule (`units.round_recipe`: each unit to its channel
step); a file of explicit kept channels (`{"channels": …}`) is checked against the same steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoprune.errors import EvopruneError
from evoprune.store.storage import (
    DEFAULT_STORAGE,
    load_study,
)


@dataclass(frozen=True)
class KeptChannels:
    """Explicit kept channels per unit (a file's `channels` entry): a list or a {unit: count} map."""

    channels: list[float] | dict[str, float]

    def in_order(self, names: list[str], widths: list[int]) -> list[float]:
        """The counts in unit order; a unit the map leaves out keeps all its channels."""
        if isinstance(self.channels, list):
            return list(self.channels)
        unknown = sorted(set(self.channels) - set(names))
        if unknown:
            raise EvopruneError(f"channels file names unknown unit(s) {', '.join(unknown[:5])}")
        return [self.channels.get(n, w) for n, w in zip(names, widths)]


def parse_recipe_spec(spec: str, n_units: int, storage: str = DEFAULT_STORAGE
                      ) -> list[float] | dict[str, float] | KeptChannels:
    """Turn a recipe spec into ratios (a list or a {unit: ratio} map), or a file's kept channels."""
    if spec.startswith("uniform:"):
        try:
            ratio = float(spec.split(":", 1)[1])
        except ValueError:
            raise EvopruneError(f"bad recipe {spec!r}: write uniform:R with 0 <= R < 1") from None
        if not (math.isfinite(ratio) and 0 <= ratio < 1):
            raise EvopruneError(f"bad recipe {spec!r}: the uniform ratio must satisfy 0 <= R < 1")
        return [ratio] * n_units
    if spec.startswith("study:"):
        return _from_study(spec, storage)
    path = Path(spec)
    if not path.is_file():
        raise EvopruneError(f"recipe {spec!r} is neither uniform:R, study:NAME:TRIAL nor a JSON file")
    return _from_json(path)


def _from_json(path: Path) -> list[float] | dict[str, float] | KeptChannels:
    """Read a list of ratios, a {unit: ratio} map, an object with a `recipe` entry, or one with
    only a `channels` entry (kept channels per unit: a list or a {unit: count} map)."""
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvopruneError(f"cannot read recipe file {path}: {exc}") from None
    if isinstance(data, dict) and "channels" in data and "recipe" not in data:
        kept = _numbers(data["channels"])
        if kept is None:
            raise EvopruneError(f"the channels of {path} must be a list of counts or a "
                                "{unit: count} map")
        return KeptChannels(kept)
    if isinstance(data, dict) and "recipe" in data:
        data = data["recipe"]
    ratios = _numbers(data)
    if ratios is not None:
        return ratios
    raise EvopruneError(f"recipe file {path} must hold a list of ratios or a {{unit: ratio}} map")


def _numbers(data: Any) -> list[float] | dict[str, float] | None:
    """A list of numbers or a {name: number} map as floats; None for anything else."""
    if isinstance(data, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in data):
        return [float(v) for v in data]
    if isinstance(data, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in data.values()):
        return {str(k): float(v) for k, v in data.items()}
    return None


def _split_study_spec(spec: str) -> tuple[str, int]:
    """NAME and TRIAL of `study:NAME:TRIAL`."""
    parts = spec.split(":")
    if len(parts) < 3 or not parts[-1].isdigit():
        raise EvopruneError(f"bad recipe {spec!r}: write study:NAME:TRIAL (TRIAL a trial number)")
    return ":".join(parts[1:-1]), int(parts[-1])


def study_trial(spec: str, storage: str) -> tuple[dict[str, Any], Any]:
    """The study's user_attrs and trial TRIAL of a `study:NAME:TRIAL` spec."""

    name, number = _split_study_spec(spec)
    study = load_study(storage, name)
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        raise EvopruneError(f"study {name!r} has no trial {number}")
    return dict(study.user_attrs), trial


def _from_study(spec: str, storage: str) -> list[float]:
    """Read trial TRIAL's `recipe` user_attr from study NAME."""
    _, trial = study_trial(spec, storage)
    recipe = trial.user_attrs.get("recipe")
    if not isinstance(recipe, list):
        raise EvopruneError(f"trial {trial.number} of {spec.rsplit(':', 1)[0]!r} records no recipe "
                            f"(state {trial.state.name})")
    return [float(v) for v in recipe]
