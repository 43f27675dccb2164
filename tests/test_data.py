from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from evoprune.errors import EvopruneError
from evoprune.training.data import (
    DEFAULT_VAL_SIZE,
    dataset_info,
    load_dataset,
    split_indices,
)


def _sklearn_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits' training (4 of 5 images) and test (every 5th) sets, read independently."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None])
    y = torch.from_numpy(bunch.target.astype(np.int64))
    test = torch.arange(len(y)) % 5 == 0
    return x[~test], y[~test], x[test], y[test]


def test_digits_is_the_fixed_embedded_split():
    data = load_dataset("digits")
    assert DEFAULT_VAL_SIZE == 0.2 and data.sizes == {"train": 1150, "val": 287, "test": 360}
    assert data.train_x.shape == (1150, 1, 8, 8) and data.val_x.shape == (287, 1, 8, 8)
    assert data.test_x.shape == (360, 1, 8, 8)
    assert data.train_x.dtype == torch.uint8 and int(data.train_x.max()) == 255
    assert torch.bincount(data.test_y).tolist() == torch.bincount(load_dataset().test_y).tolist()
    assert set(data.train_y.unique().tolist()) == set(range(10))
    assert data.info.flip is False and data.info.in_shape == (1, 8, 8)


def test_digits_validation_split_is_stratified_disjoint_and_fixed():
    """287 of the 1437 training images, per class by largest remainder; test is untouched."""
    train_x, train_y, test_x, test_y = _sklearn_digits()
    counts = torch.bincount(train_y).tolist()
    assert counts == [136, 154, 151, 135, 143, 143, 151, 153, 138, 133]
    data = load_dataset("digits")
    # quotas 287·n_c/1437 floor to 282 images; the 5 largest remainders (.962 .756 .563 .562, and
    # .560 of class 4 before its tie, class 5) get one more
    assert torch.bincount(data.val_y).tolist() == [27, 31, 30, 27, 29, 28, 30, 30, 28, 27]
    assert (torch.bincount(data.train_y) + torch.bincount(data.val_y)).tolist() == counts
    train_idx, val_idx = split_indices(train_y.numpy())
    assert len(train_idx) == 1150 and len(val_idx) == 287
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert sorted([*train_idx.tolist(), *val_idx.tolist()]) == list(range(1437))
    assert torch.equal(data.train_x, train_x[train_idx])
    assert torch.equal(data.val_x, train_x[val_idx])
    assert torch.equal(data.train_y, train_y[train_idx])
    assert torch.equal(data.val_y, train_y[val_idx])
    assert torch.equal(data.test_x, test_x) and torch.equal(data.test_y, test_y)  # as before
    # by content too: no validation image is a training image of the same index
    rows = {(bytes(x.numpy()), i) for i, x in zip(train_idx.tolist(), data.train_x)}
    assert not rows & {(bytes(x.numpy()), i) for i, x in zip(val_idx.tolist(), data.val_x)}
    for again in (load_dataset("digits"), load_dataset("digits", seed=7)):  # not the run seed
        assert torch.equal(again.val_x, data.val_x) and torch.equal(again.train_y, data.train_y)


def test_validation_size_as_a_count_or_a_fraction():
    data = load_dataset("digits", val_size=100)
    assert data.sizes == {"train": 1337, "val": 100, "test": 360}
    # quotas 9.46 10.72 10.51 9.39 9.95 9.95 10.51 10.65 9.60 9.26 floor to 94; the 6 largest
    # remainders are classes 4, 5, 1, 7, 8 and 2 (2 and 6 tie at .508: the lower label)
    assert torch.bincount(data.val_y).tolist() == [9, 11, 11, 9, 10, 10, 10, 11, 10, 9]
    assert load_dataset("digits", val_size=0.5).sizes == {"train": 718, "val": 719, "test": 360}


def test_largest_remainder_is_exact_and_keeps_a_training_image_per_class():
    train, val = split_indices(np.array([0, 0, 1, 1, 1, 2]), 3)  # quotas 1, 1.5, 0.5
    assert sorted(np.array([0, 0, 1, 1, 1, 2])[val].tolist()) == [0, 1, 1]  # tie: lower label
    labels = np.array([0] + [1] * 9)  # quotas 0.5, 4.5: the tie goes to 1, class 0 keeps its image
    train, val = split_indices(labels, 5)
    assert labels[val].tolist() == [1] * 5 and labels[train].tolist() == [0, 1, 1, 1, 1]
    assert np.array_equal(split_indices(labels, 0.5)[1], val)


@pytest.mark.parametrize(("val_size", "words"), [
    (-1, "at least 1"), (0, "at least 1"), (0.0, r"in \(0, 1\)"), (1.0, r"in \(0, 1\)"),
    (1.5, r"in \(0, 1\)"), (float("nan"), r"in \(0, 1\)"), (True, "give a fraction"),
    ("0.2", "give a fraction"), (1437, "not fewer than the 1437"),
    (5000, "not fewer than the 1437"), (1428, "fewer than one training image"),
    (0.0003, "is no image"),
])
def test_impossible_validation_sizes_are_refused_in_one_line(val_size, words):
    with pytest.raises(EvopruneError, match=words) as info:
        load_dataset("digits", val_size=val_size)
    assert "`val_size`" in str(info.value) and "\n" not in str(info.value)
    assert len(load_dataset("digits", val_size=1427).train_y) == 10  # one image per class is enough


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
    assert data.sizes == {"train": 24, "val": 6, "test": 6}
    assert data.train_x.shape == (24, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    x = np.concatenate([w[0] for w in written[:5]])
    y = np.concatenate([w[1] for w in written[:5]])
    train, val = split_indices(y)
    assert np.array_equal(data.train_x.numpy().reshape(24, -1), x[train])  # CHW order of the rows
    assert np.array_equal(data.val_x.numpy().reshape(6, -1), x[val])
    assert data.train_y.tolist() == y[train].tolist() and data.val_y.tolist() == y[val].tolist()
    assert data.test_y.tolist() == written[-1][1]
    assert np.array_equal(data.test_x.numpy().reshape(6, -1), written[-1][0])


def test_cifar100_reader_uses_fine_labels(tmp_path):
    written = _write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", 100,
                           n=250)
    data = load_dataset("cifar100", tmp_path / "cifar-100-python")  # the folder itself works too
    train, val = split_indices(np.array(written[0][1]))
    assert data.info.num_classes == 100
    assert data.train_y.tolist() == np.array(written[0][1])[train].tolist()
    assert data.val_y.tolist() == np.array(written[0][1])[val].tolist()
    assert data.sizes == {"train": 200, "val": 50, "test": 250}


def test_cifar_missing_files_name_the_fix(tmp_path):
    with pytest.raises(EvopruneError, match="`download`"):
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
    assert data.sizes == {"train": 5, "val": 1, "test": 4}
    x, y = data.test[3]
    assert x.shape == (3, 16, 16) and y == 1
    # val: one of the 6 train-folder images (quotas 0.5, 0.5: the tie goes to class 0), disjoint
    assert data.val.indices == [0] and data.train.indices == [1, 2, 3, 4, 5]
    assert data.val.dataset.samples == data.train.dataset.samples
    assert [data.val.dataset.targets[i] for i in data.val.indices] == [0]
    assert data.val.dataset.transform is data.test.transform  # no augmentation
    assert data.train.dataset.transform is not data.test.transform
    xv, yv = data.val[0]
    assert yv == 0 and torch.equal(xv, data.val[0][0])  # read the same way every time
    again = load_dataset("imagefolder", tmp_path, image_size=16, val_size=2)
    assert again.val.indices == [0, 5] and again.sizes["train"] == 4  # one per class


def test_imagefolder_needs_its_folders(tmp_path):
    with pytest.raises(EvopruneError, match="`data_root`"):
        dataset_info("imagefolder")
    with pytest.raises(EvopruneError, match="train/<class>"):
        dataset_info("imagefolder", tmp_path)


def test_synthetic_shapes_and_classes():
    info = dataset_info("synthetic:3x224x224:1000")
    assert info.in_shape == (3, 224, 224) and info.num_classes == 1000
    data = load_dataset("synthetic:1x5x7", synthetic_size=(40, 2))
    assert data.sizes == {"train": 32, "val": 8, "test": 2}
    assert data.train_x.shape == (32, 1, 5, 7) and data.test_y.shape == (2,)
    again = load_dataset("synthetic:1x5x7", synthetic_size=(40, 2))
    assert torch.equal(data.train_x, again.train_x) and torch.equal(data.val_x, again.val_x)
    _, val = split_indices(torch.cat([data.train_y, data.val_y]).numpy())  # any labels: 8 held out
    assert len(val) == 8


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
    from evoprune.training.data import DeviceBatches

    data = load_dataset("synthetic:3x32x32", synthetic_size=(50, 8))  # 40 train, 10 val
    padded = DeviceBatches(data)
    assert padded.pad == 4 and padded.train_x.shape == (40, 3, 40, 40)
    assert (padded.n_train, padded.n_val, padded.n_test) == (40, 10, 8)
    assert padded.val_x.shape == (10, 3, 32, 32)  # stored un-padded, like test
    (xv, yv), = padded.val_batches()
    assert torch.equal(xv, padded.normalise(data.val_x)) and torch.equal(yv, data.val_y)

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

    from evoprune.training.data import FolderBatches

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset("imagefolder", tmp_path, image_size=16)
    samples = data.train.dataset.samples
    ref = torch.stack([data.test.transform(default_loader(samples[i][0]))
                       for i in data.train.indices])
    batches = FolderBatches(data, workers=0)
    assert (batches.n_train, batches.n_val, batches.n_test) == (5, 1, 6)
    (xv, yv), = batches.val_batches()
    assert torch.equal(xv[0], data.test.transform(default_loader(samples[0][0])))
    assert yv.tolist() == [0]

    def matches(x: torch.Tensor) -> list[int]:
        return [int(torch.isclose(ref, xi).flatten(1).all(1).sum()) for xi in x]

    x, y = next(batches.train_batches(8, torch.Generator().manual_seed(0), augment=False))
    assert x.shape == (5, 3, 16, 16) and matches(x) == [1] * 5
    assert sorted(y.tolist()) == [0, 0, 1, 1, 1]
    x, _ = next(batches.train_batches(8, torch.Generator().manual_seed(0)))
    assert x.shape == (5, 3, 16, 16) and sum(matches(x)) < 5
    assert data.train.dataset.transform is not data.test.transform  # the shared set is unchanged
