"""Shared fixtures: tiny models, their units and a trained base checkpoint, built once per session."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from evoprune.network.cost import CostModel
from evoprune.network.models import build_model
from evoprune.network.units import find_units

DIGITS = (1, 8, 8)


@pytest.fixture(scope="session")
def resnet20():
    """A resnet20 for 8x8 grey images with random BN statistics (so pruning changes outputs)."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10, DIGITS)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="session")
def resnet20_units(resnet20):
    """The default (internal) units of the resnet20 fixture."""
    return find_units(resnet20, DIGITS)


@pytest.fixture(scope="session")
def resnet20_cost(resnet20, resnet20_units):
    """The cost model of the resnet20 fixture."""
    return CostModel(resnet20, resnet20_units)


@pytest.fixture(scope="session")
def base_ckpt(tmp_path_factory) -> str:
    """A resnet20 trained 3 epochs on digits (about 2 s): the base of every search, retraining
    and reliability test, trained once a session (the tests only read it)."""
    from evoprune.training.base import TrainJob, run_train

    out = tmp_path_factory.mktemp("base") / "resnet20-digits.pt"
    run_train(TrainJob(epochs=3, out=str(out), device="cpu"))
    return str(out)


def idx_file(path: Path, array: np.ndarray, magic: int, compress: bool) -> None:
    """Write `array` (uint8) as an IDX file, the format of the original distribution."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def write_fashion(root: Path, n_train: int = 200, n_test: int = 50, compress: bool = True,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny Fashion-MNIST files: images whose first pixel encodes their index, balanced labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n) % 256
        y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        idx_file(root / f"{split}-images-idx3-ubyte", x, 2051, compress)
        idx_file(root / f"{split}-labels-idx1-ubyte", y, 2049, compress)
        arrays[split] = (x, y)
    return arrays


@pytest.fixture
def fashion_files():
    """`write_fashion(root, …)`: tiny Fashion-MNIST IDX files for a test to read."""
    return write_fashion


def _finished_study(storage: str, name: str, nets: list[tuple[dict, list[float], list[float]]]) -> None:
    """A finished study: each net's user_attrs and its (val, test) drops by retraining seed."""
    import optuna

    from evoprune.store.schema import retrain_key

    study = optuna.create_study(study_name=name, storage=storage)
    for number, (attrs, val, test) in enumerate(nets):
        study.add_trial(optuna.trial.create_trial(
            value=attrs.get("val_drop", 1.0), user_attrs={"val_drop": 1.0, **attrs},
            params={}, distributions={}))
        for seed, (v, t) in enumerate(zip(val, test)):
            study.set_user_attr(retrain_key(number, seed), {
                "test_drop": t, "val_drop": v, "seed": seed, "seconds": 60.0})


@pytest.fixture
def finished_study():
    """Write a finished study with retrained results (payoff and gap tests)."""
    return _finished_study
