"""Datasets as in-memory tensors, with batched augmentation.

The datasets used here are small (CIFAR-10 train is 50000x3x32x32 floats, ~600 MB),
so they are held as normalised float tensors, on the CPU or the GPU, and augmented a
whole batch at a time with tensor ops. This avoids a per-sample ``DataLoader`` of PIL
images, which is what makes training and the thousands of loss evaluations of a
loss-landscape plot fast.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

DATASET_NAMES = ("cifar10", "digits")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_META_FILE = "batches.meta"
# The per-channel statistics used by the paper's code (in [0, 255] pixel units).
CIFAR10_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR10_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))


class DataError(Exception):
    """A dataset could not be loaded; the message says what to do about it."""


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: normalised float32 images (N, C, H, W), int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        """The same split on ``device`` (so a whole dataset can live on the GPU)."""
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation: random crop of a zero-padded image, random h-flip."""

    pad: int
    flip: bool


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset with what is needed to build models for it and to record provenance."""

    name: str
    train: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    augmentation: Augmentation
    mean: tuple[float, ...]  # per-channel normalisation, in [0, 1] pixel units
    std: tuple[float, ...]
    seed: int = 0  # seed of the train/test split or subsets
    source: str = ""  # where the data came from

    def info(self) -> dict[str, Any]:
        """JSON-able provenance, to store next to results."""
        return {
            "name": self.name,
            "source": self.source,
            "train_size": len(self.train),
            "test_size": len(self.test),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "augmentation": {"pad": self.augmentation.pad, "flip": self.augmentation.flip},
            "seed": self.seed,
        }


def load_dataset(name: str, settings: dict[str, Any] | None, seed: int = 0) -> Dataset:
    """Load dataset ``name`` (one of ``DATASET_NAMES``) configured by ``settings``.

    ``seed`` fixes every random choice made while loading (train/test split, subsets),
    so the same config always gives the same data.
    """
    settings = dict(settings or {})
    if name == "cifar10":
        return _load_cifar10(settings, seed)
    if name == "digits":
        return _load_digits(settings, seed)
    raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")


def augment(images: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Randomly crop (after zero padding) and flip every image of a (N, C, H, W) batch.

    Padding is done on the *normalised* images with 0, i.e. with the dataset's mean
    colour rather than black; this lets augmentation run on the stored normalised
    tensors, and a mean-coloured border is as uninformative as a black one.

    Vectorised: one gather with per-sample row/column indices does crop and flip for the
    whole batch. Random numbers are drawn on the generator's device and then moved to
    the images' device, so a CPU generator gives the same result for CPU and GPU images.
    """
    if aug.pad == 0 and not aug.flip:
        return images
    n, c, h, w = images.shape
    dev, gdev = images.device, generator.device
    p = aug.pad
    rows = torch.arange(h, device=dev).expand(n, h)
    cols = torch.arange(w, device=dev).expand(n, w)
    if p > 0:
        images = F.pad(images, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator, device=gdev).to(dev)
        dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator, device=gdev).to(dev)
        rows, cols = rows + dy, cols + dx
    if aug.flip:
        flip = (torch.rand(n, 1, generator=generator, device=gdev) < 0.5).to(dev)
        cols = torch.where(flip, cols.flip(1), cols)
    idx_n = torch.arange(n, device=dev)[:, None, None, None]
    idx_c = torch.arange(c, device=dev)[None, :, None, None]
    return images[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    aug: Augmentation | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches of ``split`` for one epoch.

    ``shuffle`` draws a permutation from ``generator`` and ``aug`` is applied to each
    batch with it; without a generator, torch's global one is used (seeded by
    ``torch.manual_seed``). Unshuffled batches are views, not copies.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    gen = generator if generator is not None else torch.default_generator
    n = len(split)
    perm = None
    if shuffle:
        perm = torch.randperm(n, generator=gen, device=gen.device).to(split.images.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if perm is None:
            x = split.images[start : start + batch_size]
            y = split.labels[start : start + batch_size]
        else:
            idx = perm[start : start + batch_size]
            x, y = split.images[idx], split.labels[idx]
        if aug is not None:
            x = augment(x, aug, gen)
        yield x, y


def subset(split: Split, size: int, seed: int) -> Split:
    """A random ``size``-sample subset of ``split`` (no replacement), fixed by ``seed``.

    Used for smaller presets and for evaluating losses on part of a split. Indices are
    kept in their original order. ``size >= len(split)`` gives the whole split.
    """
    if size >= len(split):
        return split
    if size < 0:
        raise ValueError(f"subset size must be non-negative, got {size}")
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    idx = perm[:size].sort().values.to(split.images.device)
    return Split(split.images[idx], split.labels[idx])


# --------------------------------------------------------------------------- helpers


def _check_keys(name: str, settings: dict[str, Any], allowed: set[str]) -> None:
    """Reject unknown settings, so a typo in config.yaml is not silently ignored."""
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise DataError(
            f"unknown settings for dataset {name!r}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _size_setting(name: str, settings: dict[str, Any], key: str, default: int | None) -> int | None:
    value = settings.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"datasets.{name}.{key} must be a positive integer, got {value!r}")
    return value


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """In place (x - mean) / std per channel of a (N, C, H, W) float tensor."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def _cifar10_class():
    """torchvision's CIFAR10 loader, imported only when CIFAR-10 is used (it costs a second per job)."""
    import torchvision

    class _CIFAR10(torchvision.datasets.CIFAR10):
        """torchvision's CIFAR10 that only requires its files to exist.

        torchvision md5-checks every file on each load; we keep the md5 check where it
        matters (the downloaded archive) and skip it on load, so that the tiny CIFAR-10
        written by the tests, whose checksums cannot match, loads too.
        """

        meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}

        def _check_integrity(self) -> bool:
            folder = Path(self.root, self.base_folder)
            files = [f for f, _ in self.train_list + self.test_list] + [CIFAR10_META_FILE]
            return all((folder / f).is_file() for f in files)

        def download(self) -> None:
            try:
                super().download()
            except Exception as e:
                raise DataError(
                    f"downloading CIFAR-10 from {self.url} into {self.root} failed: {e}"
                ) from e

    return _CIFAR10


def _load_cifar10(settings: dict[str, Any], seed: int) -> Dataset:
    _check_keys("cifar10", settings, {"root", "download", "train_size", "test_size"})
    if "root" not in settings:
        raise DataError("datasets.cifar10.root (the folder holding cifar-10-batches-py) is required")
    root = Path(os.path.expanduser(str(settings["root"])))
    download = bool(settings.get("download", False))
    train_size = _size_setting("cifar10", settings, "train_size", None)
    test_size = _size_setting("cifar10", settings, "test_size", None)
    folder = root / CIFAR10_FOLDER
    files = (*CIFAR10_TRAIN_FILES, *CIFAR10_TEST_FILES, CIFAR10_META_FILE)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise DataError(
            f"CIFAR-10 not found: expected {folder}/data_batch_1..5, test_batch and "
            f"batches.meta (missing: {', '.join(missing)}). Get "
            f"{CIFAR10_URL} and extract it into {root}, or set "
            f"`datasets.cifar10.download: true` in config.yaml to let the pipeline "
            f"download it."
        )
    splits = []
    for train in (True, False):
        try:
            ds = _cifar10_class()(str(root), train=train, download=download)
        except DataError:
            raise
        except Exception as e:
            names = (*(CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES), CIFAR10_META_FILE)
            raise DataError(_diagnose_cifar10(folder, names, e)) from e
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous().float().div_(255)
        labels = torch.tensor(ds.targets, dtype=torch.int64)
        splits.append(Split(_normalise(images, CIFAR10_MEAN, CIFAR10_STD), labels))
        download = False  # fetched (if at all) with the train split
    train_split, test_split = splits
    if train_size is not None:
        train_split = subset(train_split, train_size, seed)
    if test_size is not None:
        test_split = subset(test_split, test_size, seed)
    return Dataset(
        name="cifar10",
        train=train_split,
        test=test_split,
        num_classes=10,
        in_channels=3,
        image_size=32,
        augmentation=Augmentation(pad=4, flip=True),
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        seed=seed,
        source=str(folder),
    )


def _diagnose_cifar10(folder: Path, names: tuple[str, ...], error: Exception) -> str:
    """Find which CIFAR-10 file made torchvision fail (it does not say), for the message."""
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            key = "label_names" if name == CIFAR10_META_FILE else "data"
            if not isinstance(entry, dict) or key not in entry:
                raise ValueError(f"no {key!r} entry")
            if key == "data" and entry["data"].size % 3072:
                raise ValueError("data is not a whole number of 32x32x3 images")
        except Exception as e:
            return (
                f"CIFAR-10 file {path} is corrupted ({type(e).__name__}: {e}); delete "
                f"{folder} and extract {CIFAR10_URL} again"
            )
    return f"could not load CIFAR-10 from {folder}: {type(error).__name__}: {error}"


def _load_digits(settings: dict[str, Any], seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    _check_keys("digits", settings, {"train_size"})
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    n = len(labels)
    train_size = _size_setting("digits", settings, "train_size", 1500)
    assert train_size is not None
    if train_size >= n:
        raise DataError(f"datasets.digits.train_size must be below {n} (all digits), got {train_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train_idx, test_idx = perm[:train_size].sort().values, perm[train_size:].sort().values
    # Statistics of the training split only, so nothing about the test split leaks in.
    mean = tuple(images[train_idx].mean(dim=(0, 2, 3)).tolist())
    std = tuple(images[train_idx].std(dim=(0, 2, 3), unbiased=False).tolist())
    images = _normalise(images, mean, std)
    return Dataset(
        name="digits",
        train=Split(images[train_idx], labels[train_idx]),
        test=Split(images[test_idx], labels[test_idx]),
        num_classes=10,
        in_channels=1,
        image_size=8,
        # 1 pixel of 8 keeps the paper's 4/32 crop ratio; no flips: digits are not
        # mirror-symmetric.
        augmentation=Augmentation(pad=1, flip=False),
        mean=mean,
        std=std,
        seed=seed,
        source="sklearn.datasets.load_digits",
    )
