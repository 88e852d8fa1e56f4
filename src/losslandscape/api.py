"""Loss surfaces of your own model in a few lines.

    from losslandscape.api import loss_surface
    surface = loss_surface(model, {"train": train_loader, "test": test_loader}, dims=2, points=21)
    surface["train_loss"]          # array [iy, ix] over surface["xcoordinates"], surface["ycoordinates"]

Any `torch.nn.Module`, any loss function `loss_fn(outputs, targets)` returning a batch mean, and data
as a DataLoader (or any iterable of (inputs, targets) batches) or a pair of tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .directions import model_weights, random_direction
from .surface import Evaluator, compute_surface, make_grid, tensor_batches, write_surface

Data = Iterable | tuple[torch.Tensor, torch.Tensor]


def _batches(data: Data, device: torch.device, batch_size: int):
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return tensor_batches(data[0].to(device), data[1].to(device), batch_size)
    return lambda: ((x.to(device), y.to(device)) for x, y in data)


def loss_surface(
    model: nn.Module,
    data: Data | dict[str, Data],
    *,
    loss_fn: Callable = F.cross_entropy,
    dims: int = 2,
    span: float = 1.0,
    points: int = 21,
    norm: str = "filter",
    seed: int = 0,
    ignore_biasbn: bool = True,
    batch_size: int = 512,
    fold_bn: bool = True,
    out: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """The loss of `model` along one (dims=1) or two random filter-normalised directions.

    The model is evaluated in eval mode (BatchNorm with its running statistics) at every point
    of [-span, span]^dims, and restored afterwards. `data` may name several splits, e.g.
    {"train": ..., "test": ...}; the result has `<split>_loss` and `<split>_acc` (percent, NaN
    when the targets are not class labels) for each. With `out`, the surface is also written
    to HDF5 in the pipeline's layout.
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, not {dims}")
    device = next(model.parameters()).device
    splits = data if isinstance(data, dict) else {"train": data}
    weights = model_weights(model)
    directions = [random_direction(weights, seed + axis, norm, ignore_biasbn) for axis in range(dims)]
    evaluator = Evaluator(model, directions, {k: _batches(v, device, batch_size) for k, v in splits.items()},
                          loss_fn=loss_fn, fold_bn=fold_bn)
    grid = make_grid(-span, span, points) if dims == 1 else make_grid(-span, span, points, -span, span, points)
    values = compute_surface(evaluator, grid)
    if out is not None:
        write_surface(out, grid, values, {"norm": norm, "seeds": [seed + a for a in range(dims)],
                                          "ignore_biasbn": ignore_biasbn})
    result = {"xcoordinates": grid.x, **values}
    if grid.y is not None:
        result["ycoordinates"] = grid.y
    return result
