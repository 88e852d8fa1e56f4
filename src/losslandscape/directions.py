"""Random directions in weight space, normalised as in Section 4 of the paper, and their HDF5 files.

A direction is a dict {parameter name: tensor shaped like that parameter}. Filter normalisation
rescales every filter of the direction (a slice along dimension 0: a conv output filter, or one
neuron's row of a linear layer) to the norm of the same filter of the weights, which removes the
scale invariance of networks with BatchNorm from the plots.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import torch
from torch import nn

from . import __version__
from .io import StaleFileError, atomic_path, h5_array, h5_read

NORMALISATIONS = ("filter", "layer", "none")


def model_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters a direction spans (BatchNorm running statistics are held fixed)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def random_direction(
    weights: dict[str, torch.Tensor], seed: int, norm: str = "filter", ignore_biasbn: bool = True
) -> dict[str, torch.Tensor]:
    """A Gaussian direction shaped like `weights`, drawn from `seed`, then normalised.

    One-dimensional tensors (biases, BatchNorm weight and bias) get a zero direction by default
    ("ignore biasbn", the paper's setting); kept, they get the weights themselves, as the
    reference code does. Every tensor draws its noise whatever the options, so a seed gives the
    same noise for the weight tensors under every normalisation.
    """
    if norm not in NORMALISATIONS:
        raise ValueError(f"normalisation {norm!r} is unknown; choose one of {', '.join(NORMALISATIONS)}")
    generator = torch.Generator().manual_seed(seed)
    direction = {}
    for name, w in weights.items():
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.dtype)
        if w.dim() <= 1:
            d = torch.zeros_like(w) if ignore_biasbn else w.detach().cpu().clone()
        else:
            d = normalise(d, w.detach().cpu(), norm)
        direction[name] = d
    return direction


def normalise(d: torch.Tensor, w: torch.Tensor, norm: str) -> torch.Tensor:
    """Rescale direction `d` to the scale of weights `w`, per filter, per layer or not at all."""
    if norm == "filter":
        d_norms = d.flatten(1).norm(dim=1)
        w_norms = w.flatten(1).norm(dim=1)
        return d * (w_norms / (d_norms + 1e-10)).view(-1, *([1] * (d.dim() - 1)))
    if norm == "layer":
        return d * (w.norm() / (d.norm() + 1e-10))
    return d


def save_directions(path: str | Path, directions: list[dict[str, torch.Tensor]], attrs: dict) -> None:
    """Write one or two directions (groups `x`, `y`) with their settings as attributes."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for axis, direction in zip("xy", directions):
            group = f.create_group(axis)
            for name, tensor in direction.items():
                h5_array(group, name, tensor.cpu().numpy())
        f.attrs.update({k: v for k, v in attrs.items() if v is not None})
        f.attrs["dims"] = len(directions)
        f.attrs["version"] = __version__


def load_directions(path: str | Path, weights: dict[str, torch.Tensor] | None = None) -> tuple[list[dict], dict]:
    """The directions in `path` and their attributes; checked against `weights` when given."""
    with h5_read(path, fix=REDO) as f:
        attrs = dict(f.attrs)
        directions = [
            {name: torch.from_numpy(f[axis][name][()]) for name in f[axis]} for axis in "xy" if axis in f
        ]
    if weights is not None:
        for direction in directions:
            _check_shapes(path, direction, weights)
    return directions, attrs


REDO = "Delete it and rerun the pipeline: Snakemake makes it again from the current checkpoint and config."


def _check_shapes(path, direction: dict, weights: dict) -> None:
    if set(direction) != set(weights):
        missing = sorted(set(weights) ^ set(direction))[:3]
        raise StaleFileError(f"{path} was made for another network (tensors {missing} differ). {REDO}")
    for name, w in weights.items():
        if tuple(direction[name].shape) != tuple(w.shape):
            raise StaleFileError(
                f"{path}: direction '{name}' has shape {tuple(direction[name].shape)}, the network's weight "
                f"{tuple(w.shape)}; the file was made for another network. {REDO}"
            )


def check_directions(path, directions: list[dict], attrs: dict, plane: dict | None = None,
                     run: str | None = None, weights_digest: str | None = None) -> None:
    """Refuse a directions file made for another run, checkpoint or plane (the reference reused such files).

    `plane` holds the plane's `dims` and, where known, `norm`, `ignore_biasbn` and `seed`; a file
    without an attribute (one made outside the pipeline) is not checked on it.
    """
    problems = []
    if plane is not None:
        if len(directions) < plane["dims"]:
            problems.append(f"it holds {len(directions)} direction(s) and the plane needs {plane['dims']}")
        for key in ("norm", "ignore_biasbn"):
            if key in plane and key in attrs and _plain(attrs[key]) != _plain(plane[key]):
                problems.append(f"it was made with {key} = {_plain(attrs[key])!r}, the plane needs {plane[key]!r}")
        if "seed" in plane and "seeds" in attrs and int(attrs["seeds"][0]) != int(plane["seed"]):
            problems.append(f"it was drawn from seed {int(attrs['seeds'][0])}, the config says {plane['seed']}")
    if run is not None and "run" in attrs and str(attrs["run"]) != run:
        problems.append(f"it was made for run {attrs['run']!r}, not {run!r}")
    if weights_digest is not None and "weights_digest" in attrs and str(attrs["weights_digest"]) != weights_digest:
        problems.append("it was made from other weights than the current checkpoint (an earlier training?)")
    if problems:
        raise StaleFileError(f"{path} does not fit this job: {'; '.join(problems)}. {REDO}")


def _plain(value):
    """An HDF5 attribute as a plain Python value, for comparison."""
    return value.item() if hasattr(value, "item") else value
