"""File helpers shared by every stage: atomic writes, checksummed checkpoints, HDF5 reads, logs.

Every file a job writes appears complete or not at all (`atomic_path`); every file a job reads
is checked (a checksum for checkpoints, HDF5's Fletcher-32 for arrays), and a damaged one is
reported as a `DamagedFileError` naming the path and the fix, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

#: The key under which `save_torch` stores the checksum of a dict's contents.
CHECKSUM_KEY = "checksum"

DAMAGED_FIX = "Delete it and rerun the pipeline: Snakemake rewrites a missing output."


class DamagedFileError(RuntimeError):
    """A file that is truncated, corrupted, or not the kind of file the reader expects."""


class StaleFileError(ValueError):
    """A file made with other settings (another model, plane, grid or checkpoint) than the job's."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    A job killed mid-write leaves a stray temporary file, never a half-written output that a
    later rule could take for a complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def content_digest(obj: Any) -> str:
    """SHA-256 of an object's contents: tensors and arrays by dtype, shape and bytes, the rest by repr.

    Dict keys are visited in sorted order, so the digest does not depend on insertion order.
    """
    digest = hashlib.sha256()

    def visit(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{t.dtype}{tuple(node.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(node, np.ndarray):
            digest.update(f"A{node.dtype}{node.shape}".encode())
            digest.update(np.ascontiguousarray(node).tobytes())
        elif isinstance(node, dict):
            digest.update(b"{")
            for key in sorted(node, key=str):
                digest.update(repr(key).encode())
                visit(node[key])
            digest.update(b"}")
        elif isinstance(node, (list, tuple)):
            digest.update(b"[")
            for item in node:
                visit(item)
            digest.update(b"]")
        else:
            digest.update(repr(node).encode())

    visit(obj)
    return digest.hexdigest()


def save_torch(obj: object, path: str | Path) -> None:
    """`torch.save`, atomically; a dict also gets the checksum of its contents, which `load_torch` checks."""
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
        obj[CHECKSUM_KEY] = content_digest(obj)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu", fix: str = DAMAGED_FIX) -> dict:
    """Load a file written by `save_torch`; a truncated or corrupted one raises `DamagedFileError`.

    `fix` is the advice the error gives (how to get the file rewritten).
    """
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise DamagedFileError(
            f"{path} is not a readable checkpoint, truncated or corrupted ({type(exc).__name__}: {exc}). {fix}"
        ) from exc
    if isinstance(obj, dict) and CHECKSUM_KEY in obj:
        stored = obj.pop(CHECKSUM_KEY)
        if content_digest(obj) != stored:
            raise DamagedFileError(f"{path} is corrupted: its contents do not match the checksum stored in it. {fix}")
    return obj


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A short fingerprint of named tensors (a checkpoint's weights, a directions file's arrays)."""
    return content_digest(tensors)[:16]


def h5_array(group, name: str, data) -> None:
    """An HDF5 dataset with a Fletcher-32 checksum (checked on every read) where HDF5 allows one."""
    data = np.asarray(data)
    group.create_dataset(name, data=data, fletcher32=data.ndim > 0 and data.size > 0)


@contextlib.contextmanager
def h5_read(path: str | Path, fix: str = DAMAGED_FIX) -> Iterator[Any]:
    """An HDF5 file open for reading; a truncated or corrupted file raises `DamagedFileError` naming it."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, KeyError) as exc:  # h5py: truncated file, failed checksum, missing group or dataset
        raise DamagedFileError(f"{path} is unreadable, truncated or corrupted ({exc}). {fix}") from exc


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def recipe_hash(recipe: dict) -> str:
    """A short stable hash of a JSON-able settings dict (key order does not matter)."""
    blob = json.dumps(recipe, sort_keys=True, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def settings_json(settings: dict) -> str:
    """Settings as a JSON string for an HDF5 attribute (numpy values become plain numbers and lists)."""
    return json.dumps(settings, sort_keys=True, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


class Terminated(SystemExit):
    """SIGTERM, as a scheduler sends it before SIGKILL: unwinds like an exception, so temporary files go."""


def _terminate(signum, frame) -> None:
    raise Terminated(128 + signum)


@contextlib.contextmanager
def on_sigterm_exit() -> Iterator[None]:
    """Turn SIGTERM into a `Terminated` exception for the block (Python's default dies without cleanup).

    Finished epochs and grid points are already on disk (resume state, fsync'd journal), and
    `atomic_path` removes its temporary file as the exception passes, so the job stops within
    a moment and a rerun continues where it stopped.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def log_to(path: str | Path | None) -> Iterator[None]:
    """Send stdout and stderr (progress bars included) to a job's log file; stop cleanly on SIGTERM.

    The log starts with where the job ran and the GPUs a scheduler gave it (SLURM sets
    CUDA_VISIBLE_DEVICES for a job that asked for a GPU).
    """
    if path is None:
        with on_sigterm_exit():
            yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh, on_sigterm_exit():
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
        print(f"job on {socket.gethostname()}: CUDA_VISIBLE_DEVICES={gpus}", file=fh)
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        try:
            yield
        except Terminated:
            print("terminated by SIGTERM: finished work is kept; rerun to continue", file=fh, flush=True)
            raise
        except BaseException:
            traceback.print_exc(file=fh)
            raise
        finally:
            sys.stdout, sys.stderr = old
