"""Shared fixtures: tiny models, their units and a trained base checkpoint, built once per session."""

from __future__ import annotations

import pytest
import torch

from evoprune.cost import CostModel
from evoprune.models import build_model
from evoprune.units import find_units

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
    from evoprune.jobs import TrainJob, run_train

    out = tmp_path_factory.mktemp("base") / "resnet20-digits.pt"
    run_train(TrainJob(epochs=3, out=str(out), device="cpu"))
    return str(out)
