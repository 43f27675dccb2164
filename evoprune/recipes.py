"""Recipe specs a user types: `uniform:R`, a JSON file, or `study:NAME:TRIAL` from a study storage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from evoprune.errors import EvopruneError
from evoprune.storage import DEFAULT_STORAGE  # re-exported: it moved to storage.py


def parse_recipe_spec(spec: str, n_units: int, storage: str = DEFAULT_STORAGE) -> list[float] | dict[str, float]:
    """Turn a recipe spec into a list of ratios (or a {unit: ratio} map) for `check_recipe`."""
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


def _from_json(path: Path) -> list[float] | dict[str, float]:
    """Read a list of ratios, a {unit: ratio} map, or an object with a `recipe` entry."""
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvopruneError(f"cannot read recipe file {path}: {exc}") from None
    if isinstance(data, dict) and "recipe" in data:
        data = data["recipe"]
    if isinstance(data, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in data):
        return [float(v) for v in data]
    if isinstance(data, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in data.values()):
        return {str(k): float(v) for k, v in data.items()}
    raise EvopruneError(f"recipe file {path} must hold a list of ratios or a {{unit: ratio}} map")


def _split_study_spec(spec: str) -> tuple[str, int]:
    """NAME and TRIAL of `study:NAME:TRIAL`."""
    parts = spec.split(":")
    if len(parts) < 3 or not parts[-1].isdigit():
        raise EvopruneError(f"bad recipe {spec!r}: write study:NAME:TRIAL (TRIAL a trial number)")
    return ":".join(parts[1:-1]), int(parts[-1])


def study_trial(spec: str, storage: str) -> tuple[dict[str, Any], Any]:
    """The study's user_attrs and trial TRIAL of a `study:NAME:TRIAL` spec."""
    from evoprune.storage import load_study

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
