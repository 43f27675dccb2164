"""bf16 autocast: what `auto` resolves to, that bf16 runs really compute in bf16, and the
precision check's test on simulated data (its false-positive rate and its power)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evoprune.core import machine
from evoprune.errors import EvopruneError
from evoprune.experiments.precision_check import (
    PrecisionCheck,
    check_precision,
    format_check,
    paired_effect,
    verdict,
)
from evoprune.network.models import build_model
from evoprune.training.data import DeviceBatches, load_dataset
from evoprune.training.engine import Schedule, evaluate, fit

NATIVE = machine.bf16_native("cpu")


def test_precision_resolves_to_what_the_device_computes(monkeypatch):
    assert machine.resolve_precision("fp32", "cpu") == "fp32"
    assert machine.resolve_precision("auto", "cpu") == ("bf16" if NATIVE else "fp32")
    with pytest.raises(EvopruneError, match="unknown precision 'fp16': use auto, fp32, bf16"):
        machine.resolve_precision("fp16", "cpu")
    monkeypatch.setattr(machine, "bf16_native", lambda device_type: False)
    assert machine.resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(EvopruneError, match="neither AVX-512 BF16 nor AMX; use `precision` fp32"):
        machine.resolve_precision("bf16", "cpu")
    monkeypatch.setattr(machine, "bf16_native", lambda device_type: True)
    assert machine.resolve_precision("auto", "cpu") == "bf16"


def _conv_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


@pytest.mark.skipif(not NATIVE, reason="this CPU does not compute bf16 natively")
def test_bf16_trains_and_evaluates_in_bf16_and_fp32_does_not():
    digits = load_dataset("digits")
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        torch.manual_seed(0)
        model = build_model("resnet20", 10, (1, 8, 8))
        seen = _conv_dtypes(model)
        data = DeviceBatches(digits, precision=precision)
        result = fit(model, data, Schedule(epochs=2, lr=0.05, batch_size=64), seed=0)
        assert seen == {dtype} and result.precision == precision
        assert result.val_acc > 0.5 and evaluate(model, data).top1 == result.val_acc
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights fp32


def _simulate(mu: float, n: int, draws: int, seed: int = 0) -> np.ndarray:
    """Verdict "holds" per draw: fp32, bf16 (shifted by mu seed SDs) and a reseeded bf16."""
    rng = np.random.default_rng(seed)
    holds = np.zeros(draws, bool)
    for i in range(draws):
        truth = rng.normal(0, 3, n)  # the recipes' own accuracies (cancel in the differences)
        fp32, bf16, again = (truth + rng.normal(0, 1, n) + m for m in (0, mu, mu))
        holds[i] = paired_effect(fp32, bf16, again)["p_tost"] < 0.05
    return holds


def test_tost_false_positive_rate_at_the_margin_and_power_inside_it():
    at_margin = _simulate(mu=1.0, n=13, draws=1000)  # the truth: a shift of one seed SD
    assert at_margin.mean() <= 0.08  # "holds" wrongly: at most about α
    assert _simulate(mu=0.0, n=40, draws=400).mean() >= 0.9  # no shift, 40 recipes: found
    no_shift_13 = _simulate(mu=0.0, n=13, draws=400).mean()
    assert 0.35 <= no_shift_13 <= 0.8  # 13 recipes: the check's honest power, about 0.55


def test_paired_effect_reads_a_planted_shift():
    rng = np.random.default_rng(1)
    truth = rng.normal(0, 3, 30)
    fp32 = truth + rng.normal(0, 0.5, 30)
    bf16 = truth - 2.0 + rng.normal(0, 0.5, 30)
    e = paired_effect(fp32, bf16, bf16 + rng.normal(0, 0.7, 30))
    assert e["lo"] < -2.0 < e["hi"] and e["p"] < 1e-6 and e["p_tost"] > 0.5
    assert 0.4 < e["margin"] < 0.8 and e["n"] == 30
    assert verdict(e, 0.05).startswith("bf16 does not hold accuracy: -2.")
    same = paired_effect(fp32, fp32 + rng.normal(0, 0.05, 30), fp32 + rng.normal(0, 1, 30))
    assert verdict(same, 0.05).startswith("bf16 holds accuracy")
    noisy = paired_effect(fp32[:4], fp32[:4] + rng.normal(0, 1, 4), fp32[:4])
    assert verdict(noisy, 0.05).startswith("not shown")


@pytest.mark.skipif(not NATIVE, reason="this CPU does not compute bf16 natively")
def test_the_check_runs_end_to_end_on_tiny_files(tmp_path, monkeypatch, fashion_files):
    monkeypatch.chdir(tmp_path)
    fashion_files(tmp_path / "fm", n_train=240, n_test=60)
    config = PrecisionCheck(data_root=str(tmp_path / "fm"), val_size=40, train_size=120,
                            base_epochs=1, recipes=2, proxy_epochs=1)
    lines: list[str] = []
    result = check_precision(config, progress=lines.append)
    assert [(b["precision"], b["seed"]) for b in result["base"]] == [
        ("fp32", 0), ("fp32", 1), ("bf16", 0), ("bf16", 1)]
    assert all(len(v) == 3 for v in result["proxy"].values())  # 2 drawn + the uniform one
    assert result["proxy_effect"]["n"] == 3
    text = format_check(result)
    assert "bench train" in text and "verdict:" in text and "machine:" in text
    assert all(b["seconds"] > 0 and b["images_per_s"] > 0 for b in result["base"])
    again = check_precision(config)  # every base cached now: timings from their own histories
    assert [b["seconds"] for b in again["base"]] == [b["seconds"] for b in result["base"]]
    assert len(list((tmp_path / "studies" / "checkpoints").glob("*.pt"))) == 4
