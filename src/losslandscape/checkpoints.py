"""Checkpoints of training runs: what they hold, and how to rebuild the network from one."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import __version__
from .io import DamagedFileError, load_torch, save_torch
from .models import build_model

#: What every checkpoint of this pipeline holds (besides its checksum).
CHECKPOINT_KEYS = ("state_dict", "epoch", "recipe", "model_info")


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


def retrain_fix(path: str | Path) -> str:
    """How to get a damaged checkpoint of run folder `.../train/<run>/...` rewritten."""
    path = Path(path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if path.parent.name == "checkpoints":
        return (f"Delete it and retrain the run: delete {run_dir / 'final.pt'} too (or run snakemake with "
                f"--forcerun train), and Snakemake retrains it.")
    return "Delete it and rerun the pipeline: Snakemake retrains the run (a killed run resumes from its last epoch)."


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint of this pipeline, checked: readable, checksum intact, the keys a checkpoint holds."""
    ckpt = load_torch(path, map_location, fix=retrain_fix(path))
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DamagedFileError(
            f"{path} is not a checkpoint of this pipeline (it lacks {', '.join(missing)}). {retrain_fix(path)}"
        )
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The network stored in checkpoint `path`, in eval mode on `device`, and the checkpoint."""
    ckpt = read_checkpoint(path)
    info = ckpt["model_info"]
    model = build_model(ckpt["recipe"]["model"], info["in_channels"], info["image_size"], info["num_classes"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:  # shapes or names that do not fit the recipe's network
        raise DamagedFileError(f"{path}: its weights do not fit its own recipe's network ({exc}). "
                               f"{retrain_fix(path)}") from exc
    return model.to(device).eval(), ckpt


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Saved epochs of a run, in training order (epoch 0 is the initialisation)."""
    return sorted((Path(run_dir) / "checkpoints").glob("epoch-*.pt"))
