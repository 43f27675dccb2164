"""Errors a user can cause: the CLI prints them in one line and exits 2."""

from __future__ import annotations


class EvopruneError(ValueError):
    """Raise for bad input a user can fix; the message says what to change."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf: the run stopped (a search records a failed trial)."""


class NonFiniteOutputError(RuntimeError):
    """The model produced non-finite outputs at evaluation (a broken network, not the lr)."""
