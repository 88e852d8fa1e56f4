"""Write a tiny CIFAR-10 in the real on-disk format, so the loader is tested without a download.

The real ``cifar-10-python.tar.gz`` holds Python 2 pickles of dicts whose keys are
Python 2 ``str``: loaded with ``encoding="bytes"`` (the CIFAR website's recipe) they read
as ``b"data"``, ``b"labels"``, ...; loaded with ``encoding="latin1"`` (torchvision) as
``"data"``, ``"labels"``, .... A Python 3 pickle of ``bytes`` keys would not satisfy
torchvision, so strings are written with the Python 2 ``BINSTRING`` opcodes.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

LABEL_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


class Py2Str(bytes):
    """A byte string to be pickled as a Python 2 ``str``."""


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]  # pure-Python pickler
    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2str(self, obj: Py2Str) -> None:
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    dispatch[Py2Str] = save_py2str


def _py2(obj: Any) -> Any:
    """Turn the ``str`` keys and values of ``obj`` into Python 2 strings."""
    if isinstance(obj, str):
        return Py2Str(obj.encode("latin1"))
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    return obj


def _dump(path: Path, obj: dict[str, Any]) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(_py2(obj))
    path.write_bytes(buf.getvalue())


def tiny_cifar10_arrays(
    n_train_per_batch: int = 20, n_test: int = 30, seed: int = 0
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """The (data, labels) that ``write_tiny_cifar10`` writes per file; data is uint8 (N, 3072).

    Rows are channel-major as in CIFAR-10: 1024 red, then 1024 green, then 1024 blue
    values, each plane row by row.
    """
    rng = np.random.RandomState(seed)
    out = {}
    for name, n in [(f"data_batch_{i}", n_train_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.randint(0, 10, size=n)]
        out[name] = (data, labels)
    return out


def write_tiny_cifar10(root: Path, n_train_per_batch: int = 20, n_test: int = 30, seed: int = 0) -> Path:
    """Write ``<root>/cifar-10-batches-py/`` with images that are a function of ``seed``.

    Returns the ``cifar-10-batches-py`` folder.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, (data, labels)) in enumerate(tiny_cifar10_arrays(n_train_per_batch, n_test, seed).items()):
        batch_label = f"training batch {i + 1} of 5" if name != "test_batch" else "testing batch 1 of 1"
        _dump(
            folder / name,
            {
                "batch_label": batch_label,
                "labels": labels,
                "data": data,
                "filenames": [f"tiny_{name}_{j:05d}.png" for j in range(len(labels))],
            },
        )
    _dump(
        folder / "batches.meta",
        {"num_cases_per_batch": n_train_per_batch, "label_names": LABEL_NAMES, "num_vis": 3072},
    )
    return folder
