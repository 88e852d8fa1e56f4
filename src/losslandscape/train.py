"""Training of one run with the paper's recipe: resumable, with a progress bar and history.

Files in a run's folder:
- `checkpoints/epoch-XXXX.pt`: epoch 0 (the initialisation), every `save_epoch` epochs, the last;
- `checkpoints/resume.pt`: model, optimiser, scheduler and history after the last finished
  epoch, so a killed job continues where it stopped; removed once training is complete;
- `history.tsv` and `final.pt`: written last, and only when every epoch finished.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import data as datasets
from .checkpoints import checkpoint_path, save_checkpoint
from .evaluate import evaluate
from .io import DamagedFileError, atomic_path, load_torch, recipe_hash, save_torch
from .models import build_model
from .progress import Progress

HISTORY_COLUMNS = [
    "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "weight_norm", "param_norm", "seconds",
]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when there is a GPU, else the CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU; set device: auto or cpu.")
    return torch.device(name)


def weight_norms(model: nn.Module) -> tuple[float, float]:
    """L2 norm of the weights (tensors of 2+ dimensions: conv and linear) and of all parameters."""
    with torch.no_grad():
        weights = sum(p.pow(2).sum() for p in model.parameters() if p.dim() > 1)
        params = sum(p.pow(2).sum() for p in model.parameters())
    return math.sqrt(float(weights)), math.sqrt(float(params))


def make_optimizer(model: nn.Module, recipe: dict) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or Adam, weight decay on every parameter (the paper's recipe)."""
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
            nesterov=recipe["nesterov"], weight_decay=recipe["weight_decay"],
        )
    return torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])


def lr_milestones(recipe: dict) -> list[int]:
    """Epochs at which the learning rate drops: 150, 225, 275 for the paper's 300 epochs."""
    return sorted({max(1, round(f * recipe["epochs"])) for f in recipe["lr_milestones"]})


def lr_factor(recipe: dict, done: int) -> float:
    """Learning-rate multiplier for the epoch after `done` finished ones.

    ×gamma at each milestone; ×0.1 during `warmup_epochs` first epochs (He et al.'s warm-up for
    deep ResNets, which short CPU presets need; the paper preset has none).
    """
    factor = recipe["lr_gamma"] ** sum(done >= m for m in lr_milestones(recipe))
    return factor * (0.1 if done < recipe.get("warmup_epochs", 0) else 1.0)


def batch_size(recipe: dict, n_train: int) -> int:
    """The run's batch size, a fraction of the training set for the large-batch runs."""
    if recipe.get("batch_fraction"):
        return max(1, round(recipe["batch_fraction"] * n_train))
    return int(recipe["batch_size"])


def train_one_epoch(model, optimizer, train: datasets.Split, aug, size: int, generator,
                    forward: nn.Module | None = None) -> tuple[float, float]:
    """One pass over shuffled, augmented batches; returns the running mean loss and accuracy (%).

    The data stays on its device and the sums on the device, so nothing waits for the host until
    the epoch ends. `forward` (e.g. a compiled `model`) computes the outputs, else `model` does.
    """
    model.train()
    forward = model if forward is None else forward
    device = train.images.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in datasets.batches(train, size, shuffle=True, generator=generator, aug=aug):
        out = forward(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
    return loss_sum.item() / len(train), 100.0 * correct.item() / len(train)


def _epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """Shuffling and augmentation depend on (seed, epoch) only, so a resumed run matches a whole one."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def train(
    recipe: dict,
    run_dir: str | Path,
    final_path: str | Path,
    history_path: str | Path,
    device: str = "auto",
    threads: int | None = None,
    compile_model: bool = False,
) -> pd.DataFrame:
    """Train the run described by `recipe` (see config.run_recipe); return its history.

    `compile_model` runs the training forward and backward through `torch.compile` (the model saved
    and evaluated is the eager one, sharing its weights); it changes results only by rounding.
    """
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick its fastest kernels
    run_dir = Path(run_dir)
    name = recipe["run"]
    data = datasets.load_dataset(recipe["dataset"], recipe["data_settings"], seed=recipe["seed"])
    train_split, test_split = data.train.to(dev), data.test.to(dev)
    data_info = {**data.info(), "in_channels": data.in_channels, "image_size": data.image_size,
                 "num_classes": data.num_classes}
    size = batch_size(recipe, len(train_split))

    torch.manual_seed(recipe["seed"])
    model = build_model(recipe["model"], data.in_channels, data.image_size, data.num_classes).to(dev)
    optimizer = make_optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: lr_factor(recipe, done))
    history, start = _resume_or_start(recipe, run_dir, model, optimizer, scheduler, test_split, data_info)
    forward = torch.compile(model) if compile_model else model

    epochs = recipe["epochs"]
    print(f"run {name}: {recipe['model']}, {len(train_split)} training images, batch {size}, "
          f"{epochs} epochs on {dev}" + (", compiled" if compile_model else ""), flush=True)
    progress = Progress(epochs, f"train {name}", "epochs", initial=start - 1, interval=0)
    for epoch in range(start, epochs + 1):
        tic = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        generator = _epoch_generator(recipe["seed"], epoch, dev)
        train_loss, train_acc = train_one_epoch(model, optimizer, train_split, data.augmentation, size, generator, forward)
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"run {name}: the training loss became {train_loss} at epoch {epoch} (lr {lr}). Deep networks "
                "without shortcuts can diverge: lower this run's lr in config.yaml (the paper uses 0.01 for them)."
            )
        scheduler.step()
        test_loss, test_acc = evaluate(model, test_split)
        row = _history_row(model, epoch, lr, train_loss, train_acc, test_loss, test_acc, time.perf_counter() - tic)
        history.append(row)
        if epoch % recipe["save_epoch"] == 0 or epoch == epochs:
            save_checkpoint(checkpoint_path(run_dir, epoch), model, epoch, row, recipe, data_info)
        _save_resume_state(run_dir, recipe, epoch, model, optimizer, scheduler, history)
        progress.update(lr=f"{lr:.4g}", train_loss=f"{train_loss:.4f}", train_acc=f"{train_acc:.2f}",
                        test_loss=f"{test_loss:.4f}", test_acc=f"{test_acc:.2f}", weight_norm=f"{row['weight_norm']:.3f}")
    return _finish(run_dir, history, final_path, history_path, recipe["epochs"])


def _history_row(model, epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds) -> dict:
    weight_norm, param_norm = weight_norms(model)
    return dict(epoch=epoch, lr=lr, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                test_acc=test_acc, weight_norm=weight_norm, param_norm=param_norm, seconds=seconds)


def _resume_or_start(recipe, run_dir, model, optimizer, scheduler, test_split, data_info) -> tuple[list[dict], int]:
    """Continue from `resume.pt` when it belongs to this exact recipe; otherwise start afresh."""
    state_path = run_dir / "checkpoints" / "resume.pt"
    if state_path.exists():
        try:
            state = load_torch(state_path)
        except DamagedFileError:  # a cache of finished epochs: retraining them is the fix
            print(f"{state_path} is truncated or corrupted: starting run {recipe['run']} afresh", flush=True)
            state = {}
        if state and state.get("recipe_hash") == recipe_hash(recipe):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            print(f"resuming run {recipe['run']} after epoch {state['epoch']}", flush=True)
            return state["history"], state["epoch"] + 1
        if state:
            print(f"{state_path} belongs to another recipe: starting run {recipe['run']} afresh", flush=True)
    for stale in (run_dir / "checkpoints").glob("*.pt"):
        stale.unlink()
    test_loss, test_acc = evaluate(model, test_split)
    row = _history_row(model, 0, 0.0, math.nan, math.nan, test_loss, test_acc, 0.0)
    save_checkpoint(checkpoint_path(run_dir, 0), model, 0, row, recipe, data_info)
    return [row], 1


def _save_resume_state(run_dir, recipe, epoch, model, optimizer, scheduler, history) -> None:
    save_torch(
        {"recipe_hash": recipe_hash(recipe), "epoch": epoch, "model": model.state_dict(),
         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history},
        run_dir / "checkpoints" / "resume.pt",
    )


def _finish(run_dir: Path, history: list[dict], final_path, history_path, epochs: int) -> pd.DataFrame:
    """Write the history, then the final checkpoint (the job's completion mark), then tidy up."""
    table = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    with atomic_path(history_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    last = checkpoint_path(run_dir, epochs)
    with atomic_path(final_path) as tmp:
        tmp.write_bytes(last.read_bytes())
    (run_dir / "checkpoints" / "resume.pt").unlink(missing_ok=True)
    return table
