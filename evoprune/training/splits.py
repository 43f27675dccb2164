"""Torch-free defaults of the data (the CLI and configs read them): the validation split's size,
Fashion-MNIST's folder."""

from __future__ import annotations

DEFAULT_VAL_SIZE = 0.2  # a fraction of the training set, or a count of images when ≥ 1
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it
