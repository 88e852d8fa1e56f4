"""Tests for losslandscape.data: loaders, batched augmentation, batching, subsets."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from cifar_fixture import tiny_cifar10_arrays, write_tiny_cifar10  # noqa: E402

from losslandscape.data import (  # noqa: E402
    DATASET_NAMES,
    Augmentation,
    DataError,
    Split,
    augment,
    batches,
    load_dataset,
    subset,
)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_tiny_cifar10(root, n_train_per_batch=20, n_test=30, seed=0)
    return root


def _indexed_split(n: int, c: int = 3, size: int = 8, seed: int = 0) -> Split:
    """A split whose labels are the sample indices, with random (non-symmetric) images."""
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, c, size, size, generator=g), torch.arange(n))


# ------------------------------------------------------------------------------ cifar10


def test_tiny_cifar10_loads_with_shapes_labels_and_pixel_round_trip(cifar_root: Path) -> None:
    ds = load_dataset("cifar10", {"root": str(cifar_root)})
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.test.images.shape == (30, 3, 32, 32)
    assert ds.train.images.dtype == torch.float32 and ds.train.labels.dtype == torch.int64
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (10, 3, 32)
    assert ds.augmentation == Augmentation(pad=4, flip=True)

    written = tiny_cifar10_arrays(20, 30, seed=0)
    train_data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert ds.train.labels.tolist() == train_labels
    assert ds.test.labels.tolist() == written["test_batch"][1]

    mean = torch.tensor(ds.mean).view(3, 1, 1)
    std = torch.tensor(ds.std).view(3, 1, 1)
    for split, data, i in [(ds.train, train_data, 57), (ds.test, written["test_batch"][0], 3)]:
        pixels = split.images[i] * std + mean  # back to [0, 1]
        expected = torch.from_numpy(data[i].astype(np.float32) / 255).view(3, 32, 32)  # R, G, B planes
        torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)
    assert ds.info()["train_size"] == 100 and ds.info()["mean"] == pytest.approx(
        [125.3 / 255, 123.0 / 255, 113.9 / 255]
    )


def test_cifar10_download_true_with_files_present_does_not_download(cifar_root: Path) -> None:
    ds = load_dataset("cifar10", {"root": str(cifar_root), "download": True})  # no network here
    assert len(ds.train) == 100


def test_cifar10_train_and_test_size_take_seeded_subsets(cifar_root: Path) -> None:
    a = load_dataset("cifar10", {"root": str(cifar_root), "train_size": 40, "test_size": 10}, seed=1)
    b = load_dataset("cifar10", {"root": str(cifar_root), "train_size": 40, "test_size": 10}, seed=1)
    assert (len(a.train), len(a.test)) == (40, 10)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)


def test_missing_cifar10_folder_raises_data_error_with_path_and_download_hint(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", {"root": str(root), "download": False})
    msg = str(err.value)
    assert str(root / "cifar-10-batches-py") in msg
    assert "download" in msg and "cifar-10-python.tar.gz" in msg


def test_corrupted_cifar10_batch_raises_data_error_naming_the_file(tmp_path: Path) -> None:
    folder = write_tiny_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", {"root": str(tmp_path)})


def test_unknown_dataset_name_raises_data_error_listing_known_names() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", {})
    assert "imagenet" in str(err.value) and all(n in str(err.value) for n in DATASET_NAMES)


# ------------------------------------------------------------------------------- digits


def _raw_digit_counts() -> Counter[bytes]:
    from sklearn.datasets import load_digits

    return Counter(np.asarray(im, dtype=np.float32).tobytes() for im in load_digits().images)


def _split_counts(split: Split, mean: float, std: float) -> Counter[bytes]:
    raw = torch.round((split.images[:, 0] * std + mean) * 16)  # back to integer pixels 0..16
    return Counter(im.numpy().astype(np.float32).tobytes() for im in raw)


def test_digits_split_is_1500_297_seeded_and_a_partition() -> None:
    a = load_dataset("digits", {}, seed=0)
    assert (len(a.train), len(a.test)) == (1500, 297)
    assert a.train.images.shape[1:] == (1, 8, 8)
    assert (a.in_channels, a.image_size, a.augmentation) == (1, 8, Augmentation(pad=1, flip=False))
    b = load_dataset("digits", {}, seed=0)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    c = load_dataset("digits", {}, seed=1)
    assert not torch.equal(a.test.images, c.test.images)
    # Disjoint and complete: some digit images occur twice in the data, so compare multisets
    # of images: train + test must be exactly the full data set, each image used once.
    train = _split_counts(a.train, a.mean[0], a.std[0])
    test = _split_counts(a.test, a.mean[0], a.std[0])
    assert train + test == _raw_digit_counts()
    assert load_dataset("digits", {"train_size": 1000}).info()["test_size"] == 797


def test_digits_training_split_is_normalised() -> None:
    ds = load_dataset("digits", {}, seed=3)
    x = ds.train.images
    assert abs(x.mean().item()) < 1e-5
    assert abs(x.std(unbiased=False).item() - 1) < 1e-5
    assert 0 < ds.mean[0] < 1 and 0 < ds.std[0] < 1  # in [0, 1] pixel units


def test_digits_rejects_unknown_settings_and_bad_train_size() -> None:
    with pytest.raises(DataError, match="trian_size"):
        load_dataset("digits", {"trian_size": 10})
    with pytest.raises(DataError, match="train_size"):
        load_dataset("digits", {"train_size": 5000})


# ------------------------------------------------------------------------------ augment


def _candidates(image: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    """All crops of the zero-padded image (and of its mirror image when flip)."""
    h, w = image.shape[-2:]
    out = []
    for im in [image, image.flip(-1)] if flip else [image]:
        padded = F.pad(im, (pad, pad, pad, pad))
        out += [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return out


@pytest.mark.parametrize("pad,flip", [(4, True), (4, False), (1, False), (2, True)])
def test_augment_outputs_are_shifted_and_flipped_copies_within_pad(pad: int, flip: bool) -> None:
    x = _indexed_split(64, size=12).images
    y = augment(x, Augmentation(pad=pad, flip=flip), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    matches = []
    for i in range(len(x)):
        hits = [k for k, cand in enumerate(_candidates(x[i], pad, flip)) if torch.equal(y[i], cand)]
        assert hits, f"sample {i} is not a shift (or flip) of its input within {pad} pixels"
        matches.append(hits[0])
    assert len(set(matches)) > 5  # offsets really vary between samples


def test_augment_flip_only_flips_about_half() -> None:
    x = _indexed_split(1000, size=6).images
    y = augment(x, Augmentation(pad=0, flip=True), torch.Generator().manual_seed(0))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all())
    assert 400 < int(flipped.sum()) < 600


def test_augment_is_deterministic_for_a_generator_seed_and_identity_without_aug() -> None:
    x = _indexed_split(32).images
    aug = Augmentation(pad=2, flip=True)
    a = augment(x, aug, torch.Generator().manual_seed(7))
    b = augment(x, aug, torch.Generator().manual_seed(7))
    c = augment(x, aug, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert augment(x, Augmentation(pad=0, flip=False), torch.Generator()) is x


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_augment_on_gpu_matches_cpu_for_a_cpu_generator() -> None:
    x = _indexed_split(64).images
    aug = Augmentation(pad=4, flip=True)
    cpu = augment(x, aug, torch.Generator().manual_seed(0))
    gpu = augment(x.cuda(), aug, torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


# ------------------------------------------------------------------------------ batches


def test_batches_shuffled_epoch_covers_every_sample_once() -> None:
    split = _indexed_split(103)
    g = torch.Generator().manual_seed(0)
    out = list(batches(split, 10, shuffle=True, generator=g))
    assert [len(y) for _, y in out] == [10] * 10 + [3]
    seen = torch.cat([y for _, y in out])
    assert sorted(seen.tolist()) == list(range(103)) and seen.tolist() != list(range(103))
    for x, y in out:  # images stay paired with their labels
        assert torch.equal(x, split.images[y])


def test_batches_drop_last_drops_the_remainder_and_applies_augmentation() -> None:
    split = _indexed_split(103)
    g = torch.Generator().manual_seed(0)
    out = list(batches(split, 10, shuffle=False, generator=g, drop_last=True))
    assert [len(y) for _, y in out] == [10] * 10
    assert torch.cat([y for _, y in out]).tolist() == list(range(100))
    aug = list(batches(split, 10, shuffle=True, generator=g, aug=Augmentation(2, True), drop_last=True))
    assert len(aug) == 10 and all(x.shape == (10, 3, 8, 8) for x, _ in aug)
    assert any(not torch.equal(x, split.images[y]) for x, y in aug)


# ------------------------------------------------------------------------------- subset


def test_subset_is_seeded_sized_without_replacement() -> None:
    split = _indexed_split(100)
    a, b, c = subset(split, 30, seed=0), subset(split, 30, seed=0), subset(split, 30, seed=1)
    assert len(a) == 30 and len(set(a.labels.tolist())) == 30
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert torch.equal(a.images, split.images[a.labels])
    assert subset(split, 100, seed=0) is split and subset(split, 500, seed=0) is split
