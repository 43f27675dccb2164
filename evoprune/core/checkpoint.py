"""Checkpoint files: atomic writes with sha256, and weights-only loading (no pickled code runs)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.errors import EvopruneError, disk_full


def sha256_of(path: str | Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path: str | Path, flag: str = "`out`") -> None:
    """Refuse an output file whose folder cannot be written: checked before any work is done.

    The folder (made by `atomic_save` where missing) must be creatable and take a file: a
    temporary file is created there and removed, so read-only folders, read-only file systems
    and missing permissions are all found, whoever runs it.
    """
    path = Path(path)
    if path.is_dir():
        raise EvopruneError(f"{flag} {path} is a folder: give a file path")
    folder = path.resolve().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise EvopruneError(f"{flag} {path}: {existing} is a file, not a folder; choose another "
                            f"{flag}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=existing)
    except OSError as exc:
        raise EvopruneError(f"cannot write {flag} {path}: folder {existing} is not writable "
                            f"({exc.strerror}); choose another {flag} or make it writable"
                            ) from None
    os.close(fd)
    os.unlink(tmp)


def atomic_save(obj: Any, path: str | Path) -> str:
    """Write `obj` with torch.save to a temp file, then `os.replace` it; return its sha256.

    A full disk leaves the previous file whole and raises one line (EvopruneError).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)

        full = disk_full(exc)
        if full is None:
            raise
        raise EvopruneError(f"disk full writing {path} ({full}): free space on its disk and "
                            "rerun (the previous file, if any, is whole)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_of(path)


def load_file(path: str | Path) -> Any:
    """Load a torch file with `weights_only=True`: tensors and plain containers only."""
    path = Path(path)
    if not path.is_file():
        raise EvopruneError(f"no such file {path}: give the path of a saved checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvopruneError(f"cannot load {path} as a weights-only torch file: {first}") from None


def state_dict_of(obj: Any, path: str | Path) -> Mapping[str, torch.Tensor]:
    """Find the state_dict in a loaded checkpoint (bare, or under `state_dict`/`model`)."""
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EvopruneError(f"{path} holds no state_dict: save model.state_dict() (or a dict "
                            "with a 'state_dict' entry)")
    return obj


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into `model`, refusing missing, unexpected or mis-shaped keys."""
    state = state_dict_of(load_file(path), path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} mis-shaped (e.g. {k}: file {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        raise EvopruneError(f"checkpoint {path} does not match the model: {'; '.join(parts)}; "
                            "check `model` and `dataset`")
    model.load_state_dict(state)
