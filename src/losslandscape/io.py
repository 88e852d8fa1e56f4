"""File helpers shared by every stage: atomic writes, checkpoints, logs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Iterator

import torch


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


def save_torch(obj: object, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by this package, with a clear error if it is damaged."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise RuntimeError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc}). "
            "Delete it and rerun the rule that writes it."
        ) from exc


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def recipe_hash(recipe: dict) -> str:
    """A short stable hash of a JSON-able settings dict (key order does not matter)."""
    blob = json.dumps(recipe, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def log_to(path: str | Path | None) -> Iterator[None]:
    """Send stdout and stderr (progress bars included) to a job's log file.

    The log starts with where the job ran and the GPUs a scheduler gave it (SLURM sets
    CUDA_VISIBLE_DEVICES for a job that asked for a GPU).
    """
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
        print(f"job on {socket.gethostname()}: CUDA_VISIBLE_DEVICES={gpus}", file=fh)
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        try:
            yield
        except BaseException:
            traceback.print_exc(file=fh)
            raise
        finally:
            sys.stdout, sys.stderr = old
