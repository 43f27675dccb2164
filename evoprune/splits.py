"""The validation split's size: a torch-free home for its default (the CLI and configs read it)."""

from __future__ import annotations

DEFAULT_VAL_SIZE = 0.2  # a fraction of the training set, or a count of images when ≥ 1
