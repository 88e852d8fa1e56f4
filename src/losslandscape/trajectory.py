"""Optimiser trajectories (appendix B): PCA of the path θ_0 … θ_n and its projections.

Two random directions are nearly orthogonal to the path in high dimensions, so the path
projected onto them barely moves; the first two principal components of {θ_i − θ_n} capture
most of its variation (the paper reports 40 % to 90 %).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from . import __version__
from .checkpoints import retrain_fix
from .io import atomic_path, h5_array, load_torch


def flatten_weights(state: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
    """The parameters `names` as one vector, with one-dimensional tensors (bias, BN) zeroed."""
    parts = [state[n].detach().double().reshape(-1) * (1.0 if state[n].dim() > 1 else 0.0) for n in names]
    return torch.cat(parts).numpy()


def path_matrix(checkpoints: list[str | Path], names: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Rows θ_i − θ_n over the checkpoints, the final weights θ_n, and the epochs."""
    states = [load_torch(path, fix=retrain_fix(path)) for path in checkpoints]
    final = flatten_weights(states[-1]["state_dict"], names)
    rows = np.stack([flatten_weights(s["state_dict"], names) - final for s in states])
    return rows, final, [int(s["epoch"]) for s in states]


def pca_directions(rows: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The first `k` principal components (unit rows) of the centred `rows`, and their shares of variance."""
    centred = rows - rows.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    return components[:k], variance[:k] / variance.sum()


def project(rows: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Coordinates ⟨θ_i − θ_n, d⟩ / ‖d‖ of every checkpoint on every direction (the reference's projection)."""
    norms = np.linalg.norm(directions, axis=1)
    return rows @ directions.T / norms


def unflatten(vector: np.ndarray, template: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """A flat vector as a direction dict shaped like the parameters `names`."""
    out, start = {}, 0
    for n in names:
        size = template[n].numel()
        out[n] = torch.from_numpy(vector[start : start + size].copy()).float().reshape(template[n].shape)
        start += size
    return out


def plane_range(coords: np.ndarray, margin: float = 0.2, points: int = 21) -> dict:
    """A grid that covers the projected path with a margin (a fraction of its extent) on every side."""
    low, high = coords.min(axis=0), coords.max(axis=0)
    pad = margin * np.maximum(high - low, 1e-12)
    return {"xmin": float(low[0] - pad[0]), "xmax": float(high[0] + pad[0]), "xnum": points,
            "ymin": float(low[1] - pad[1]), "ymax": float(high[1] + pad[1]), "ynum": points}


def write_pca(path, components, shares, coords, random_coords, epochs, grid, template, names, attrs) -> None:
    """PCA directions in the layout of a directions file (groups x, y), with the path and its grid."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for axis, vector in zip("xy", components):
            group = f.create_group(axis)
            for name, tensor in unflatten(vector, template, names).items():
                h5_array(group, name, tensor.numpy())
        h5_array(f, "epochs", np.array(epochs))
        h5_array(f, "path_x", coords[:, 0])
        h5_array(f, "path_y", coords[:, 1])
        h5_array(f, "random_path_x", random_coords[:, 0])
        h5_array(f, "random_path_y", random_coords[:, 1])
        f.attrs.update(attrs)
        f.attrs["explained_variance_ratio"] = shares
        f.attrs["grid"] = [grid[k] for k in ("xmin", "xmax", "xnum", "ymin", "ymax", "ynum")]
        f.attrs["norm"] = "pca"
        f.attrs["ignore_biasbn"] = True
        f.attrs["seeds"] = [-1, -1]
        f.attrs["dims"] = 2
        f.attrs["version"] = __version__
