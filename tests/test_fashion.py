"""Fashion-MNIST's reader (tiny IDX files the tests write; the real files when installed), the
stratified training subset, and the CLI's one-line error when the files are missing."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evoprune.errors import EvopruneError
from evoprune.training.data import dataset_info, load_dataset, split_indices, subset_indices
from evoprune.training.splits import FASHION_ROOT


@pytest.mark.parametrize("compress", [True, False])
def test_reads_the_four_idx_files_gz_or_plain(tmp_path, compress, fashion_files):
    arrays = fashion_files(tmp_path, compress=compress)
    data = load_dataset("fashion-mnist", tmp_path, val_size=40)
    assert data.sizes == {"train": 160, "val": 40, "test": 50}
    assert data.train_x.shape == (160, 1, 28, 28) and data.train_x.dtype == torch.uint8
    (trx, try_), (tex, tey) = arrays["train"], arrays["t10k"]
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(tex))
    assert data.test_y.tolist() == tey.tolist() and data.test_y.dtype == torch.int64
    _, val = split_indices(try_.astype(np.int64), 40)
    assert torch.equal(data.val_x[:, 0], torch.from_numpy(trx[val]))
    assert torch.bincount(data.val_y).tolist() == [4] * 10  # stratified: 20 a class, 4 held out
    info = dataset_info("fashion-mnist")
    assert info.in_shape == (1, 28, 28) and info.num_classes == 10 and info.flip


def test_training_subset_is_stratified_fixed_and_disjoint_from_validation(tmp_path,
                                                                         fashion_files):
    fashion_files(tmp_path, n_train=400)
    full = load_dataset("fashion-mnist", tmp_path, val_size=100)
    sub = load_dataset("fashion-mnist", tmp_path, val_size=100, train_size=150)
    again = load_dataset("fashion-mnist", tmp_path, val_size=100, train_size=150, seed=7)
    assert sub.sizes == {"train": 150, "val": 100, "test": 50}
    assert torch.equal(sub.val_x, full.val_x)  # the subset never moves the validation split
    assert torch.equal(sub.train_x, again.train_x)  # the run seed does not move it either
    assert torch.bincount(sub.train_y).tolist() == [15] * 10
    def keys(x):  # random 28x28 images: their first 16 pixels identify them
        return {tuple(i.flatten()[:16].tolist()) for i in x}

    assert keys(sub.train_x) <= keys(full.train_x) and not keys(sub.train_x) & keys(full.val_x)
    half = load_dataset("fashion-mnist", tmp_path, val_size=100, train_size=0.5)
    assert half.sizes["train"] == 150
    assert load_dataset("fashion-mnist", tmp_path, val_size=100, train_size=300).sizes["train"] == 300


def test_subset_indices_bounds():
    y = np.arange(100) % 10
    assert subset_indices(y, None).tolist() == list(range(100))
    assert subset_indices(y, 100).tolist() == list(range(100))
    picked = subset_indices(y, 30)
    assert len(picked) == 30 and np.bincount(y[picked]).tolist() == [3] * 10
    assert np.all(np.diff(picked) > 0)
    with pytest.raises(EvopruneError, match="`train_size` 101 is more than the 100 training"):
        subset_indices(y, 101)
    with pytest.raises(EvopruneError, match="`train_size` 0: an image count must be at least 1"):
        subset_indices(y, 0)


def test_missing_or_corrupt_files_are_one_line_errors(tmp_path, fashion_files):
    with pytest.raises(EvopruneError) as err:
        load_dataset("fashion-mnist", tmp_path / "none")
    msg = str(err.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg and FASHION_ROOT in msg
    assert "train-images-idx3-ubyte.gz" in msg and "\n" not in msg
    fashion_files(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03xxxx"))
    with pytest.raises(EvopruneError, match="is not an IDX label file"):
        load_dataset("fashion-mnist", tmp_path)
    header = (2049).to_bytes(4, "big") + (49).to_bytes(4, "big")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + bytes(49)))
    with pytest.raises(EvopruneError, match="hold 50 images but 49 labels"):
        load_dataset("fashion-mnist", tmp_path)


def test_cli_train_without_the_files_exits_2_in_one_line(tmp_path):
    out = tmp_path / "base.pt"
    run = subprocess.run([sys.executable, "-m", "evoprune", "train", "--dataset", "fashion-mnist",
                          "--data-root", str(tmp_path / "absent"), "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and not out.exists()
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install -y dataset-fashion-mnist" in lines[0]
    assert "Traceback" not in run.stderr


def test_cli_trains_on_tiny_files(tmp_path, fashion_files):
    fashion_files(tmp_path / "fm", n_train=300, n_test=60)
    run = subprocess.run([sys.executable, "-m", "evoprune", "train", "--model", "resnet20",
                          "--dataset", "fashion-mnist", "--data-root", str(tmp_path / "fm"),
                          "--epochs", "1", "--val-size", "50", "--train-size", "100",
                          "--precision", "fp32", "--json"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["sizes"] == {"train": 100, "val": 50, "test": 60}
    assert result["train_size"] == 100 and result["precision"] == "fp32"


@pytest.mark.skipif(not Path(FASHION_ROOT).is_dir(), reason="dataset-fashion-mnist not installed")
def test_the_real_files_when_installed():
    data = load_dataset("fashion-mnist", val_size=5000, train_size=10000)
    assert data.sizes == {"train": 10000, "val": 5000, "test": 10000}
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert torch.bincount(data.train_y).tolist() == [1000] * 10
    assert torch.bincount(data.val_y).tolist() == [500] * 10
    mean = data.train_x.float().mean().item() / 255
    std = data.train_x.float().std().item() / 255
    info = dataset_info("fashion-mnist")
    assert abs(mean - info.mean[0]) < 0.01 and abs(std - info.std[0]) < 0.01
