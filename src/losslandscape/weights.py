"""Weight statistics of a run for Fig 2 (b, c, e, f): norm over training, histograms of the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checkpoints import retrain_fix
from .io import atomic_path, load_torch


def flat_weights(state_dict: dict[str, torch.Tensor]) -> np.ndarray:
    """All conv and linear weights (tensors of 2+ dimensions) as one vector.

    Biases and BatchNorm parameters are left out: they are not what weight decay and batch size
    rescale, and the paper's filter normalisation ignores them too.
    """
    parts = [v.detach().float().reshape(-1).numpy() for v in state_dict.values() if v.dim() > 1 and v.is_floating_point()]
    return np.concatenate(parts)


def weight_histograms(initial: np.ndarray, final: np.ndarray, bins: int = 200) -> pd.DataFrame:
    """Counts of initial and final weights over shared bins, symmetric about zero."""
    edge = float(max(np.abs(initial).max(), np.abs(final).max()))
    edges = np.linspace(-edge, edge, bins + 1)
    return pd.DataFrame({
        "left": edges[:-1],
        "right": edges[1:],
        "initial": np.histogram(initial, edges)[0],
        "final": np.histogram(final, edges)[0],
    })


def summarise(history_path, initial_ckpt, final_ckpt, norms_out, histogram_out, bins: int = 200) -> None:
    """Write the per-epoch weight norms and the weight histograms of one run."""
    history = pd.read_csv(history_path, sep="\t")
    with atomic_path(norms_out) as tmp:
        history[["epoch", "weight_norm", "param_norm"]].to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    initial = flat_weights(load_torch(initial_ckpt, fix=retrain_fix(initial_ckpt))["state_dict"])
    final = flat_weights(load_torch(final_ckpt, fix=retrain_fix(final_ckpt))["state_dict"])
    with atomic_path(histogram_out) as tmp:
        weight_histograms(initial, final, bins).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
