"""Errors a user can cause (the CLI prints them in one line and exits 2), and `disk_full`, which
finds a full disk in any exception's chain."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator


class EvopruneError(ValueError):
    """Raise for bad input a user can fix; the message says what to change."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf: the run stopped (a search records a failed trial)."""


class NonFiniteOutputError(RuntimeError):
    """The model produced non-finite outputs at evaluation (a broken network, not the lr)."""


def disk_full(exc: BaseException) -> str | None:
    """The disk-full error in `exc`'s chain (ENOSPC, EDQUOT, SQLITE_FULL) as text, or None."""
    for e in exception_chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e.strerror or os.strerror(e.errno)
        if isinstance(e, sqlite3.OperationalError) and (
                getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                or "database or disk is full" in str(e)):
            return str(e)
        if "No space left on device" in str(e):  # torch's writer keeps only the text
            return "No space left on device"
    return None


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and the driver errors SQLAlchemy wraps (`orig`)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
