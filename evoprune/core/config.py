"""Configuration trees: frozen dataclasses nested in one another, to and from plain data.

Each concern is one frozen dataclass whose fields carry their default and a one-line comment,
written once (docs/architecture.md, "Configuration"). `from_tree` builds a dataclass from nested
dicts (a study's stored tree, a TOML table, the CLI's dotted argument names); `to_tree` is the
inverse; `nest` turns `{"proxy.epochs": 2}` into `{"proxy": {"epochs": 2}}`; `default_of` reads
a field's one default (the CLI's help prints it); `read_toml`, `overrides` and `merge` give a
job's config file and its `--set key=value` overrides (`--set proxy.epochs=2`, or the leaf's
path joined by `_`, `proxy_epochs=2`, or a leaf name found once in the tree, `top_k=3`).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from evoprune.errors import EvopruneError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's fields."""
    return typing.get_type_hints(cls)


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field's hint names (also inside `X | None`), or None."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return found[0] if found else None
    return None


def from_tree(cls: type[T], tree: Mapping[str, Any], base: T | None = None) -> T:
    """Build dataclass `cls` from nested plain data; unknown keys are refused with their names.

    A branch given in part starts from the field's own default (its factory's value), so a
    default written there (the search's `retrain.top_k = 0`) is kept; `base` does the same
    for the root.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    names = set(fields)
    unknown = sorted(set(tree) - names)
    if unknown:
        raise EvopruneError(f"unknown {cls.__name__} key(s) {', '.join(unknown)}: "
                            f"known are {', '.join(sorted(names))}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in tree.items():
        hint = hints[key]
        inner = _dataclass_of(hint)
        if inner is not None and isinstance(value, Mapping):
            start = getattr(base, key) if base is not None else _default_or_none(fields[key])
            value = from_tree(inner, value, start if dataclasses.is_dataclass(start) else None)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def _default_or_none(f: dataclasses.Field) -> Any:
    """A field's default value (its factory called), or None where it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_tree(config: Any) -> dict[str, Any]:
    """Plain nested data of a dataclass tree (tuples as lists: what JSON and Optuna store)."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(config))


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a.b": 1, "c": 2}` -> `{"a": {"b": 1}, "c": 2}`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def default_of(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls` (its factory called where it has one)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def diff(stored: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose stored and current values differ, with both values (nested dicts)."""
    out = []
    for key, value in now.items():
        old = stored.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out += diff(old, value, f"{prefix}{key}.")
        elif old != value:
            out.append(f"{prefix}{key}: stored {old!r}, now {value!r}")
    return out


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A TOML file's tree; one line naming the file (`what` it is) where it cannot be read."""
    file = Path(path)
    if not file.is_file():
        raise EvopruneError(f"{what} {path} does not exist")
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EvopruneError(f"{what} {path} is not valid TOML: {exc}") from None


def leaves(cls: type, prefix: str = "") -> list[str]:
    """Every leaf field's dotted path in dataclass `cls`'s tree."""
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        inner = _dataclass_of(hints[f.name])
        out += leaves(inner, f"{prefix}{f.name}.") if inner else [f"{prefix}{f.name}"]
    return out


def _value(text: str) -> Any:
    """A --set value as TOML reads it (2, 0.5, true, [1, 2], "x"), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def overrides(items: list[str], cls: type) -> dict[str, Any]:
    """`--set` items (KEY=VALUE) as a nested tree of `cls`; an unknown or ambiguous key, one line."""
    paths = leaves(cls)
    flat: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise EvopruneError(f"`set` takes KEY=VALUE, got {item!r}")
        found = [p for p in paths if key in (p, p.replace(".", "_"))] or \
            [p for p in paths if p.rsplit(".", 1)[-1] == key]
        if len(found) != 1:
            why = (f"ambiguous: say {' or '.join(found)}" if found else
                   f"unknown: the keys are {', '.join(paths)}")
            raise EvopruneError(f"`set` {key}: {why}")
        flat[found[0]] = _value(text.strip())
    return nest(flat)


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts: `top`'s values over `base`'s, branch by branch."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
