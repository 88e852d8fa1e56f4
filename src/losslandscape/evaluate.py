"""Loss and accuracy of a network over a whole data split, in eval mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) of `model` over `split`.

    BatchNorm uses its stored running statistics (eval mode), as in every plot of the paper.
    The sums stay on the device until the end, so a GPU never waits on the host per batch.
    """
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=split.images.device)
    correct = torch.zeros((), dtype=torch.int64, device=split.images.device)
    for start in range(0, len(split), batch_size):
        x = split.images[start : start + batch_size]
        y = split.labels[start : start + batch_size]
        out = model(x)
        loss += F.cross_entropy(out, y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    n = len(split)
    return loss.item() / n, 100.0 * correct.item() / n
