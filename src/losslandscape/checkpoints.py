"""Checkpoints of training runs: what they hold, and how to rebuild the network from one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import __version__
from .io import load_torch, save_torch
from .models import build_model


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch-{epoch:04d}.pt"


def save_checkpoint(path: str | Path, model: nn.Module, epoch: int, metrics: dict, recipe: dict, data_info: dict) -> None:
    """Weights plus everything needed to rebuild the network and say where it came from."""
    save_torch(
        {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "epoch": epoch,
            "metrics": metrics,
            "recipe": recipe,
            "data": data_info,
            "model_info": {
                "in_channels": data_info["in_channels"],
                "image_size": data_info["image_size"],
                "num_classes": data_info["num_classes"],
                "scale": getattr(model, "scale_info", {}),
            },
            "version": __version__,
        },
        path,
    )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The network stored in checkpoint `path`, in eval mode on `device`, and the checkpoint."""
    ckpt = load_torch(path)
    info = ckpt["model_info"]
    model = build_model(ckpt["recipe"]["model"], info["in_channels"], info["image_size"], info["num_classes"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Saved epochs of a run, in training order (epoch 0 is the initialisation)."""
    return sorted((Path(run_dir) / "checkpoints").glob("epoch-*.pt"))
