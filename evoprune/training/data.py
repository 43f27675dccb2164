"""Datasets: `digits` (embedded, the default), Fashion-MNIST and CIFAR-10/100 from local files,
ImageFolder, synthetic.

`dataset_info` answers shape and class count without reading any file (pruning needs no data);
`load_dataset` reads the data. Sets that fit in memory come back as uint8 tensors (N, C, H, W).
Every dataset has three splits: train, a fixed stratified validation split carved from the
training set (`split_indices`: the same images for every run, seed and worker), and test. Model
selection (proxy fine-tune, screen, search fitness) reads validation; test is reported only.
`train_size` keeps a stratified, fixed subset of what remains for training (a CPU budget).
"""

from __future__ import annotations

import gzip
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from evoprune.core.machine import DEFAULT_PRECISION, resolve_precision
from evoprune.errors import EvopruneError
from evoprune.training.splits import DEFAULT_VAL_SIZE, FASHION_ROOT

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
DEFAULT_DATASET = "digits"
SPLIT_SEED = 13  # which training images form the validation split: fixed, never the run seed


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know of a dataset: input shape, class count, normalisation."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True  # horizontal flips are label-preserving (not for digits)


@dataclass(frozen=True)
class TensorData:
    """An in-memory dataset: uint8 images (N, C, H, W) and int64 labels; train, val and test."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def sizes(self) -> dict[str, int]:
        """Images per split: {"train": n, "val": n, "test": n}."""
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


@dataclass(frozen=True)
class FolderData:
    """A dataset too large for memory: Subsets of the train folder (train, val) and the val folder.

    `train` reads its images with the augmenting train transform; `val` (the held-out part of the
    train folder) and `test` (DIR/val or DIR/test) with the test transform.
    """

    info: DatasetInfo
    train: Any
    val: Any
    test: Any

    @property
    def sizes(self) -> dict[str, int]:
        """Images per split: {"train": n, "val": n, "test": n}."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")  # each as .gz (the original distribution) or plain
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def dataset_info(name: str, data_root: str | Path | None = None, image_size: int = 224) -> DatasetInfo:
    """Return shape, classes and normalisation of dataset `name` without loading it."""
    if name == "digits":
        return DatasetInfo("digits", (1, 8, 8), 10, (0.3,), (0.37,), flip=False)
    if name == "fashion-mnist":
        return DatasetInfo(name, (1, 28, 28), 10, (0.2860,), (0.3530,))
    if name in _CIFAR:
        return DatasetInfo(name, (3, 32, 32), _CIFAR[name][4], CIFAR_MEAN, CIFAR_STD)
    if name == "imagefolder":
        classes = _folder_classes(_require_root(name, data_root) / "train")
        return DatasetInfo(name, (3, image_size, image_size), len(classes), IMAGENET_MEAN,
                           IMAGENET_STD)
    if name == "synthetic" or name.startswith("synthetic:"):
        shape, classes = _parse_synthetic(name)
        return DatasetInfo(name, shape, classes, (0.5,) * shape[0], (0.29,) * shape[0])
    raise EvopruneError(
        f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} "
        "(synthetic takes a shape, e.g. synthetic:3x224x224:1000)"
    )


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_root: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int = 224,
    synthetic_size: tuple[int, int] = (512, 128),
    seed: int = 0,
    val_size: float | int = DEFAULT_VAL_SIZE,
    train_size: float | int | None = None,
) -> TensorData | FolderData:
    """Read dataset `name`, `val_size` of its training set held out; CIFAR downloads on request.

    `train_size` (a fraction or a count; None: all) trains on a stratified subset of the images
    left after the validation split, fixed like it: the same images for every run and seed.
    """
    _check_val_size(val_size)
    if train_size is not None:
        _check_val_size(train_size, "`train_size`")
    info = dataset_info(name, data_root, image_size)
    if name == "imagefolder":
        return _load_imagefolder(info, _require_root(name, data_root), image_size, val_size,
                                 train_size)
    if name == "digits":
        trx, try_, tex, tey = _load_digits()
    elif name == "fashion-mnist":
        trx, try_, tex, tey = _load_fashion(Path(data_root or FASHION_ROOT).expanduser())
    elif name in _CIFAR:
        trx, try_, tex, tey = _load_cifar(info, _require_root(name, data_root,
                                                              must_exist=not download), download)
    else:
        trx, try_, tex, tey = _load_synthetic(info, *synthetic_size, seed=seed)
    train, val = split_indices(try_.numpy(), val_size)
    train = train[subset_indices(try_.numpy()[train], train_size)]
    train, val = torch.from_numpy(train), torch.from_numpy(val)
    return TensorData(info, trx[train], try_[train], trx[val], try_[val], tex, tey)


def _check_val_size(val_size: Any, flag: str = "`val_size`") -> None:
    """Refuse a split size (validation, training subset) that no training set can have."""
    if isinstance(val_size, (bool, np.bool_)) or not isinstance(val_size, (int, float, np.number)):
        raise EvopruneError(f"{flag} {val_size!r}: give a fraction in (0, 1) such as 0.2, or "
                            "an image count such as 300")
    if isinstance(val_size, (int, np.integer)):
        if val_size < 1:
            raise EvopruneError(f"{flag} {val_size}: an image count must be at least 1")
    elif not (math.isfinite(val_size) and 0 < val_size < 1):
        raise EvopruneError(f"{flag} {val_size}: a fraction must be in (0, 1); give an "
                            "integer for an image count")


def subset_indices(labels: np.ndarray, train_size: float | int | None) -> np.ndarray:
    """Sorted indices of a stratified training subset of `labels` (all of them for None).

    Drawn like the validation split (`split_indices`: proportional per class, fixed by
    `SPLIT_SEED`), so a run, its workers and its resumptions train on the same images.
    """
    n = len(labels)
    if train_size is None:
        return np.arange(n)
    _check_val_size(train_size, "`train_size`")
    k = int(train_size) if isinstance(train_size, (int, np.integer)) else \
        math.floor(train_size * n + 0.5)
    if k > n:
        raise EvopruneError(f"`train_size` {train_size} is more than the {n} training images left "
                            "after the validation split: choose a smaller `train_size`")
    if k == n:
        return np.arange(n)
    return split_indices(labels, k)[1]


def split_indices(labels: np.ndarray,
                  val_size: float | int = DEFAULT_VAL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices of a training set: stratified, exact in total, always the same.

    A float is a fraction of the images (rounded half up), an int a count. Each class gives
    its proportional share, rounded by largest remainder (ties: the lower label), never its last
    image; which of its images go is fixed by `SPLIT_SEED` alone.
    """
    _check_val_size(val_size)
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    k = int(val_size) if isinstance(val_size, (int, np.integer)) else math.floor(val_size * n + 0.5)
    classes, counts = np.unique(y, return_counts=True)
    if k < 1:
        raise EvopruneError(f"`val_size` {val_size} of {n} training images is no image: choose a "
                            "larger `val_size`")
    if k >= n:
        raise EvopruneError(f"`val_size` {val_size} is {k} images, not fewer than the {n} training "
                            "images: choose a smaller `val_size`")
    if k > n - len(classes):
        raise EvopruneError(f"`val_size` {val_size} ({k} of {n} training images) leaves fewer than "
                            f"one training image in some of the {len(classes)} classes: choose a "
                            "smaller `val_size`")
    quota = k * counts / n
    take = np.floor(quota).astype(np.int64)
    order = np.lexsort((classes, -(quota - take)))  # largest remainder first, then lower label
    rest = k - int(take.sum())
    while rest:  # terminates: the classes can spare n - len(classes) >= k images
        for i in order:
            if rest and take[i] < counts[i] - 1:
                take[i] += 1
                rest -= 1
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    val = np.sort(np.concatenate([perm[y[perm] == c][:t] for c, t in zip(classes, take)]))
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), val


def _require_root(name: str, data_root: str | Path | None, must_exist: bool = True) -> Path:
    if data_root is None:
        raise EvopruneError(f"dataset {name} reads local files: pass `data_root` DIR")
    root = Path(data_root).expanduser()
    if must_exist and not root.is_dir():
        raise EvopruneError(f"data folder {root} does not exist: check `data_root`")
    return root


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file (gzip or plain) as a uint8 array; `magic`: 2049 labels, 2051 images."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise EvopruneError(f"cannot read {path}: {exc}") from None
    dims = magic - 2048
    header = 4 + 4 * dims
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise EvopruneError(f"{path} is not an IDX {'label' if dims == 1 else 'image'} file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if len(raw) != header + math.prod(shape):
        raise EvopruneError(f"{path} holds {len(raw) - header} bytes of data, not the "
                            f"{math.prod(shape)} its header announces")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _fashion_file(root: Path, name: str) -> Path | None:
    """`root/name.gz`, else `root/name`, else None."""
    return next((p for p in (root / f"{name}.gz", root / name) if p.is_file()), None)


def _load_fashion(root: Path) -> _Arrays:
    """Fashion-MNIST's four original IDX files: 60,000 training and 10,000 test images, 28x28."""
    found = {name: _fashion_file(root, name) for name in FASHION_FILES}
    missing = [f"{name}.gz" for name, path in found.items() if path is None]
    if missing:
        raise EvopruneError(
            f"no Fashion-MNIST files in {root} (missing {', '.join(missing)}): install Debian's "
            f"package with `apt-get install -y dataset-fashion-mnist` (files in {FASHION_ROOT}) "
            "or pass `data_root` DIR holding the four idx files")
    trx, try_, tex, tey = (_read_idx(found[name], 2051 if "images" in name else 2049)
                           for name in FASHION_FILES)
    for x, y, split in ((trx, try_, "training"), (tex, tey, "test")):
        if len(x) != len(y):
            raise EvopruneError(f"Fashion-MNIST's {split} files in {root} hold {len(x)} images "
                                f"but {len(y)} labels")
        if x.shape[1:] != (28, 28) or (len(y) and int(y.max()) > 9):
            raise EvopruneError(f"Fashion-MNIST's {split} files in {root} are not 28x28 images "
                                "with labels 0-9")
    return (torch.from_numpy(trx[:, None].copy()), torch.from_numpy(try_.astype(np.int64)),
            torch.from_numpy(tex[:, None].copy()), torch.from_numpy(tey.astype(np.int64)))


def _parse_synthetic(name: str) -> tuple[tuple[int, int, int], int]:
    """Parse `synthetic[:CxHxW[:classes]]` (default 3x32x32, 10 classes)."""
    parts = name.split(":")
    try:
        shape = tuple(int(s) for s in parts[1].lower().split("x")) if len(parts) > 1 else (3, 32, 32)
        classes = int(parts[2]) if len(parts) > 2 else 10
    except ValueError:
        shape, classes = (), 0
    if len(shape) != 3 or min(shape) < 1 or classes < 1 or len(parts) > 3:
        raise EvopruneError(f"bad synthetic dataset {name!r}: write synthetic:CxHxW[:classes]")
    return shape, classes  # type: ignore[return-value]


_Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # train x, y; test x, y


def _load_digits() -> _Arrays:
    """The 1,797 8x8 digits of scikit-learn; fixed split: every 5th image is a test image."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    test = np.arange(len(y)) % 5 == 0
    return (torch.from_numpy(x[~test]), torch.from_numpy(y[~test]),
            torch.from_numpy(x[test]), torch.from_numpy(y[test]))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle CIFAR batches allowing only plain containers and numpy arrays (no code)."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytes"),
    })

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only allow-listed globals."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            entry = _ArrayUnpickler(fh, encoding="latin1").load()
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(entry[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
        raise EvopruneError(f"cannot read CIFAR file {path}: {exc}") from None
    if len(x) != len(y):
        raise EvopruneError(f"CIFAR file {path} holds {len(x)} images but {len(y)} labels")
    return x, y


def _load_cifar(info: DatasetInfo, root: Path, download: bool) -> _Arrays:
    folder, train_files, test_files, label_key, _ = _CIFAR[info.name]
    base = root if root.name == folder else root / folder
    if download and not base.is_dir():
        import torchvision

        cls = torchvision.datasets.CIFAR10 if info.name == "cifar10" else torchvision.datasets.CIFAR100
        try:
            cls(str(root), train=True, download=True)
        except Exception as exc:
            raise EvopruneError(f"download of {info.name} failed ({exc}); place the files "
                                f"under {root / folder} by hand") from None
    missing = [f for f in train_files + test_files if not (base / f).is_file()]
    if missing:
        raise EvopruneError(
            f"no {info.name} files under {base} (missing {', '.join(missing)}): pass `data_root` "
            f"DIR holding {folder}/ or add `download`"
        )
    parts = [[_read_cifar_batch(base / f, label_key) for f in files]
             for files in (train_files, test_files)]
    (trx, try_), (tex, tey) = ((np.concatenate([p[0] for p in ps]), np.concatenate([p[1] for p in ps]))
                               for ps in parts)
    return (torch.from_numpy(trx), torch.from_numpy(try_), torch.from_numpy(tex),
            torch.from_numpy(tey))


def _folder_classes(path: Path) -> list[str]:
    if not path.is_dir():
        raise EvopruneError(f"no image folder {path}: imagefolder needs DIR/train/<class>/ "
                            "and DIR/val/<class>/")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise EvopruneError(f"image folder {path} has no class subfolders")
    return classes


def _load_imagefolder(info: DatasetInfo, root: Path, image_size: int,
                      val_size: float | int, train_size: float | int | None = None) -> FolderData:
    import torchvision.transforms as T
    from torch.utils.data import Subset
    from torchvision.datasets import ImageFolder

    val_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if val_dir is None:
        raise EvopruneError(f"image folder {root} has no val/ (or test/) folder")
    if _folder_classes(val_dir) != _folder_classes(root / "train"):
        raise EvopruneError(f"{root}/train and {val_dir} hold different class folders")
    norm = T.Normalize(info.mean, info.std)
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(),
                          T.ToTensor(), norm])
    test_tf = T.Compose([T.Resize(round(image_size / 0.875)), T.CenterCrop(image_size),
                         T.ToTensor(), norm])
    try:
        train = ImageFolder(str(root / "train"), transform=train_tf)
        held_out = ImageFolder(str(root / "train"), transform=test_tf)  # the same files, in order
        test = ImageFolder(str(val_dir), transform=test_tf)
    except (FileNotFoundError, OSError) as exc:
        raise EvopruneError(f"cannot read image folder {root}: {exc}") from None
    targets = np.asarray(train.targets)
    train_idx, val_idx = split_indices(targets, val_size)
    train_idx = train_idx[subset_indices(targets[train_idx], train_size)]
    return FolderData(info, Subset(train, train_idx.tolist()), Subset(held_out, val_idx.tolist()),
                      test)


def _load_synthetic(info: DatasetInfo, n_train: int, n_test: int, seed: int) -> _Arrays:
    """Random images and labels of the given shape, for benchmarks only (val is cut from train)."""
    gen = torch.Generator().manual_seed(seed)
    shape = info.in_shape

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
        return x, torch.randint(0, info.num_classes, (n,), generator=gen)

    (trx, try_), (tex, tey) = draw(n_train), draw(n_test)
    return trx, try_, tex, tey


class DeviceBatches:
    """An in-memory dataset resident on one device: index-drawn, device-augmented batches.

    The uint8 images live on `device` once (padded for random crops when built to augment); each
    batch is gathered by index, cropped, flipped (where the dataset allows) and normalised there:
    no per-sample Python. `augment` is only the default of `train_batches`, which takes it per
    call; without augmentation a batch holds the original (centre) images. `precision`
    (auto|fp32|bf16, resolved on `device`) is what training and evaluation on it autocast to.
    """

    def __init__(self, data: TensorData, device: torch.device | str = "cpu", *,
                 augment: bool = True, pad: int | None = None,
                 channels_last: bool = False, precision: str = DEFAULT_PRECISION) -> None:
        self.info = data.info
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device.type)
        self.augment = augment
        self.pad = (4 if data.info.in_shape[1] >= 32 else 1) if pad is None else pad
        self.channels_last = channels_last
        x = data.train_x.to(self.device)
        self.stored_pad = self.pad if augment else 0  # the border train_x is stored with
        p = self.stored_pad
        self.train_x = torch.nn.functional.pad(x, (p, p, p, p)) if p else x
        self.train_y = data.train_y.to(self.device)
        self.val_x = data.val_x.to(self.device)
        self.val_y = data.val_y.to(self.device)
        self.test_x = data.test_x.to(self.device)
        self.test_y = data.test_y.to(self.device)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(data.info.mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(data.info.std, device=self.device).view(shape) * 255

    @property
    def n_train(self) -> int:
        """Number of training images."""
        return len(self.train_y)

    @property
    def n_val(self) -> int:
        """Number of validation images."""
        return len(self.val_y)

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return len(self.test_y)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float on the device."""
        x = (x.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_batches(self, batch_size: int, generator: torch.Generator,
                      augment: bool | None = None):
        """Yield one epoch of (images, labels) batches in a random order; augment=None: the default."""
        augment = self.augment if augment is None else augment
        n = self.n_train
        order = torch.randperm(n, generator=generator).to(self.device)
        h, w = self.info.in_shape[1:]
        s, pad = self.stored_pad, self.pad
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = self.train_x[idx]
            if augment and pad:
                if not s:  # stored un-padded: pad this batch only
                    x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
                b = len(idx)
                off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).to(self.device)
                rows = (off[:, 0:1] + torch.arange(h, device=self.device))[:, :, None]
                cols = (off[:, 1:2] + torch.arange(w, device=self.device))[:, None, :]
                x = x[torch.arange(b, device=self.device)[:, None, None], :, rows, cols]
                x = x.permute(0, 3, 1, 2)
            elif s:  # no augmentation: the centre crop is the original image
                x = x[:, :, s:s + h, s:s + w]
            if augment and self.info.flip:
                flip = (torch.rand(len(idx), generator=generator) < 0.5).to(self.device)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield self.normalise(x), self.train_y[idx]

    def val_batches(self, batch_size: int = 1024):
        """Yield the validation set in order, normalised, in large batches."""
        yield from self._in_order(self.val_x, self.val_y, batch_size)

    def test_batches(self, batch_size: int = 1024):
        """Yield the test set in order, normalised, in large batches."""
        yield from self._in_order(self.test_x, self.test_y, batch_size)

    def _in_order(self, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        """Yield (x, y) in order, normalised, `batch_size` at a time."""
        for start in range(0, len(y), batch_size):
            yield self.normalise(x[start:start + batch_size]), y[start:start + batch_size]


class FolderBatches:
    """Batches of a folder dataset through a DataLoader (workers, pinned memory), same interface."""

    def __init__(self, data: FolderData, device: torch.device | str = "cpu", *,
                 workers: int = 4, channels_last: bool = False,
                 precision: str = DEFAULT_PRECISION) -> None:
        self.info = data.info
        self.data = data
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device.type)
        self.augment = True  # the train set's transforms crop and flip per sample
        self.workers = workers
        self.channels_last = channels_last

    @property
    def n_train(self) -> int:
        """Number of training images."""
        return len(self.data.train)

    @property
    def n_val(self) -> int:
        """Number of validation images."""
        return len(self.data.val)

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return len(self.data.test)

    def _loader(self, dataset: Any, batch_size: int, generator: torch.Generator | None):
        from torch.utils.data import DataLoader

        return DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None,
                          generator=generator, num_workers=self.workers,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def _move(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, generator: torch.Generator,
                      augment: bool | None = None):
        """Yield one shuffled epoch of batches; without augmentation, through the test transform."""
        from torch.utils.data import Subset

        train = self.data.train
        if not (self.augment if augment is None else augment):  # val's folder: test transform
            train = Subset(self.data.val.dataset, train.indices)
        for x, y in self._loader(train, batch_size, generator):
            yield self._move(x, y)

    def val_batches(self, batch_size: int = 256):
        """Yield the validation set (held out of the train folder) in order."""
        for x, y in self._loader(self.data.val, batch_size, None):
            yield self._move(x, y)

    def test_batches(self, batch_size: int = 256):
        """Yield the test set (the val/ or test/ folder) in order."""
        for x, y in self._loader(self.data.test, batch_size, None):
            yield self._move(x, y)


def batches_for(data: TensorData | FolderData, device: torch.device | str = "cpu", *,
                workers: int = 4, precision: str = DEFAULT_PRECISION) -> DeviceBatches | FolderBatches:
    """The training data path for a dataset: device-resident when it fits, else a DataLoader."""
    cuda = torch.device(device).type == "cuda"
    if isinstance(data, TensorData):
        return DeviceBatches(data, device, channels_last=cuda, precision=precision)
    return FolderBatches(data, device, workers=workers, channels_last=cuda, precision=precision)
