from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from evoprune.data import dataset_info, load_dataset
from evoprune.errors import EvopruneError


def test_digits_is_the_fixed_embedded_split():
    data = load_dataset("digits")
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    assert data.train_x.dtype == torch.uint8 and int(data.train_x.max()) == 255
    assert torch.bincount(data.test_y).tolist() == torch.bincount(load_dataset().test_y).tolist()
    assert set(data.train_y.unique().tolist()) == set(range(10))
    assert data.info.flip is False and data.info.in_shape == (1, 8, 8)


def _write_cifar(root, folder, files, label_key, classes, n=6, seed=0):
    rng = np.random.default_rng(seed)
    base = root / folder
    base.mkdir(parents=True)
    expected = []
    for f in files:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, classes, n)]
        with open(base / f, "wb") as fh:
            pickle.dump({"data": x, label_key: y, "batch_label": f}, fh)
        expected.append((x, y))
    return expected


def test_cifar10_reader_on_tiny_files(tmp_path):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = _write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", 10)
    data = load_dataset("cifar10", tmp_path)
    assert data.train_x.shape == (30, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    x0, y0 = written[0]
    assert np.array_equal(data.train_x[0].numpy().reshape(-1), x0[0])  # CHW order of the rows
    assert data.train_y[:6].tolist() == y0
    assert data.test_y.tolist() == written[-1][1]


def test_cifar100_reader_uses_fine_labels(tmp_path):
    written = _write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", 100)
    data = load_dataset("cifar100", tmp_path / "cifar-100-python")  # the folder itself works too
    assert data.info.num_classes == 100 and data.train_y.tolist() == written[0][1]


def test_cifar_missing_files_name_the_fix(tmp_path):
    with pytest.raises(EvopruneError, match="--download"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(EvopruneError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nowhere")


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    for f in ("train", "test"):
        with open(base / f, "wb") as fh:
            pickle.dump({"data": Evil(), "fine_labels": [0]}, fh)
    with pytest.raises(EvopruneError, match=r"refusing to load builtins\.print"):
        load_dataset("cifar100", tmp_path)


def test_imagefolder_reader_on_tiny_pngs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / split / cls / f"{i}.png")
    info = dataset_info("imagefolder", tmp_path, image_size=16)
    assert info.num_classes == 2 and info.in_shape == (3, 16, 16)
    data = load_dataset("imagefolder", tmp_path, image_size=16)
    assert len(data.train) == 6 and len(data.test) == 4
    x, y = data.test[3]
    assert x.shape == (3, 16, 16) and y == 1


def test_imagefolder_needs_its_folders(tmp_path):
    with pytest.raises(EvopruneError, match="--data-root"):
        dataset_info("imagefolder")
    with pytest.raises(EvopruneError, match="train/<class>"):
        dataset_info("imagefolder", tmp_path)


def test_synthetic_shapes_and_classes():
    info = dataset_info("synthetic:3x224x224:1000")
    assert info.in_shape == (3, 224, 224) and info.num_classes == 1000
    data = load_dataset("synthetic:1x5x7", synthetic_size=(4, 2))
    assert data.train_x.shape == (4, 1, 5, 7) and data.test_y.shape == (2,)
    assert torch.equal(data.train_x, load_dataset("synthetic:1x5x7", synthetic_size=(4, 2)).train_x)


@pytest.mark.parametrize("name", ["mnist", "synthetic:3x0x4", "synthetic:big"])
def test_unknown_datasets_are_refused(name):
    with pytest.raises(EvopruneError, match="dataset"):
        dataset_info(name)


def _crops_of(original: torch.Tensor, pad: int) -> torch.Tensor:
    """Every random crop (and its flip) of one zero-padded image: (2·(2·pad+1)², C, H, W)."""
    h, w = original.shape[-2:]
    padded = torch.nn.functional.pad(original, (pad,) * 4)
    crops = [padded[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return torch.stack(crops + [c.flip(2) for c in crops])


def test_device_batches_augment_per_call_and_crop_the_centre_when_off():
    """augment=False yields the un-padded originals; augment=True crops and flips; no call
    changes the object's default, and padding stored or drawn per batch gives the same batches."""
    from evoprune.data import DeviceBatches

    data = load_dataset("synthetic:3x32x32", synthetic_size=(40, 8))
    padded = DeviceBatches(data)
    assert padded.pad == 4 and padded.train_x.shape == (40, 3, 40, 40)

    def raw(batches) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(batches)
        return torch.round(x * padded.std + padded.mean).to(torch.uint8), y

    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    x, y = raw(padded.train_batches(64, torch.Generator().manual_seed(1), augment=False))
    assert x.shape == (40, 3, 32, 32) and torch.equal(x, data.train_x[order])
    assert torch.equal(y, data.train_y[order]) and padded.augment is True

    x, _ = raw(padded.train_batches(64, torch.Generator().manual_seed(1)))  # the default: augment
    assert x.shape == (40, 3, 32, 32)
    assert sum(torch.equal(a, b) for a, b in zip(x, data.train_x[order])) < 10
    assert all((_crops_of(orig, 4) == aug).flatten(1).all(1).any()
               for orig, aug in zip(data.train_x[order], x))

    plain = DeviceBatches(data, augment=False)  # stored un-padded
    assert plain.train_x.shape == (40, 3, 32, 32)
    xp, _ = next(plain.train_batches(64, torch.Generator().manual_seed(1), augment=True))
    xa, _ = next(padded.train_batches(64, torch.Generator().manual_seed(1), augment=True))
    assert torch.equal(xp, xa) and plain.augment is False
    xn, _ = next(plain.train_batches(64, torch.Generator().manual_seed(1)))
    assert torch.equal(xn, padded.normalise(data.train_x[order]))


def test_folder_batches_without_augmentation_use_the_test_transform(tmp_path):
    """FolderBatches(augment=False) resize-and-centre-crops the train images; the default augments."""
    from PIL import Image
    from torchvision.datasets.folder import default_loader

    from evoprune.data import FolderBatches

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset("imagefolder", tmp_path, image_size=16)
    ref = torch.stack([data.test.transform(default_loader(p)) for p, _ in data.train.samples])
    batches = FolderBatches(data, workers=0)

    def matches(x: torch.Tensor) -> list[int]:
        return [int(torch.isclose(ref, xi).flatten(1).all(1).sum()) for xi in x]

    x, y = next(batches.train_batches(8, torch.Generator().manual_seed(0), augment=False))
    assert x.shape == (6, 3, 16, 16) and matches(x) == [1] * 6
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    x, _ = next(batches.train_batches(8, torch.Generator().manual_seed(0)))
    assert x.shape == (6, 3, 16, 16) and sum(matches(x)) < 6
    assert data.train.transform is not data.test.transform  # the shared dataset is unchanged
