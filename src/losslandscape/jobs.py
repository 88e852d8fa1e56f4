"""Entry points of the pipeline's landscape rules: read files, call the library, write files.

Each function is what one Snakemake rule runs; the rules pass the settings through `params`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from . import data as datasets
from . import directions as dirs
from . import sharpness
from .checkpoints import load_model
from .io import atomic_path
from .surface import Evaluator, compute_shard, gather, make_grid, read_surface, tensor_batches
from .train import resolve_device


def eval_data(recipe: dict, settings: dict, device: torch.device) -> tuple[dict, dict]:
    """Batches of the training and test splits the surfaces are evaluated on, and their provenance.

    The whole training split by default, as in the paper; `train_subset` takes a seeded subset.
    """
    data = datasets.load_dataset(recipe["dataset"], recipe["data_settings"], seed=recipe["seed"])
    train = data.train
    if settings.get("train_subset"):
        train = datasets.subset(train, settings["train_subset"], seed=settings["subset_seed"])
    size = settings["eval_batch_size"]
    splits = {"train": train.to(device), "test": data.test.to(device)}
    batches = {name: tensor_batches(s.images, s.labels, size) for name, s in splits.items()}
    info = {"dataset": recipe["dataset"], "train_points": len(train), "test_points": len(data.test),
            "train_subset_seed": settings["subset_seed"] if settings.get("train_subset") else None}
    return batches, info


def make_directions(checkpoint: str, out: str, plane: dict, seed: int) -> None:
    """Random directions for one plane of one run: x from `seed`, y (2D) from `seed + 1`."""
    model, ckpt = load_model(checkpoint)
    weights = dirs.model_weights(model)
    made = [dirs.random_direction(weights, seed + axis, plane["norm"], plane["ignore_biasbn"])
            for axis in range(plane["dims"])]
    dirs.save_directions(out, made, {
        "run": ckpt["recipe"]["run"], "checkpoint": str(checkpoint), "norm": plane["norm"],
        "ignore_biasbn": plane["ignore_biasbn"], "seeds": [seed + axis for axis in range(plane["dims"])],
    })


def _grid(plane: dict, grid: dict):
    span, n = grid["span"], grid["points_1d"] if plane["dims"] == 1 else grid["points_2d"]
    if plane["dims"] == 1:
        return make_grid(-span, span, n)
    return make_grid(-span, span, n, -span, span, n)


def surface_shard(checkpoint: str, directions: str, out: str, plane: dict, grid: dict, evaluation: dict,
                  shard: int, n_shards: int, device: str = "auto", threads: int | None = None) -> None:
    """Evaluate one shard of a run's random-direction line or plane (resumable)."""
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, dev)
    made, attrs = dirs.load_directions(directions, dirs.model_weights(model))
    batches, data_info = eval_data(ckpt["recipe"], evaluation, dev)
    evaluator = Evaluator(model, made, batches, fold_bn=evaluation["fold_bn"],
                          channels_last=evaluation["channels_last"])
    settings = {"checkpoint": str(checkpoint), "directions": dict(attrs, version=None), "plane": plane,
                "grid": grid, "evaluation": evaluation, "data": data_info}
    compute_shard(evaluator, _grid(plane, grid), shard, n_shards, out, settings,
                  desc=f"surface {ckpt['recipe']['run']} {Path(directions).stem} shard {shard + 1}/{n_shards}")


def surface(shards: list[str], checkpoint: str, directions: str, out: str, plane: dict, grid: dict,
            evaluation: dict, device: str = "auto", threads: int | None = None) -> None:
    """A run's surface in the reference layout: merged from its shards, or computed here when unsharded."""
    points = None
    if not shards:
        points = Path(out).with_name(Path(out).name + ".points")  # resumable, merged into `out` below
        surface_shard(checkpoint, directions, str(points), plane, grid, evaluation, 0, 1, device, threads)
        shards = [str(points)]
    _, attrs = dirs.load_directions(directions)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    gather(shards, _grid(plane, grid), out, {
        "run": ckpt["recipe"]["run"], "checkpoint": str(checkpoint), "epoch": ckpt["epoch"],
        "directions": str(directions), "seeds": attrs["seeds"], "norm": attrs["norm"],
        "ignore_biasbn": attrs["ignore_biasbn"], "train_subset": evaluation.get("train_subset") or 0,
        "subset_seed": evaluation["subset_seed"], "batchnorm": "eval mode, stored running statistics",
    })
    if points:
        points.unlink()


def interpolate(checkpoint_a: str, checkpoint_b: str, out: str, settings: dict, evaluation: dict,
                device: str = "auto", threads: int | None = None) -> None:
    """Fig 2 a/d: loss along (1−α)θ_a + αθ_b, over parameters and BatchNorm running statistics."""
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    model_a, ckpt_a = load_model(checkpoint_a, dev)
    model_b, ckpt_b = load_model(checkpoint_b, dev)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    moving = [n for n, t in state_a.items() if t.is_floating_point()]  # not BN's integer batch counters
    direction = {n: state_b[n] - state_a[n] for n in moving}
    batches, data_info = eval_data(ckpt_a["recipe"], evaluation, dev)
    evaluator = Evaluator(model_a, [direction], batches, fold_bn=evaluation["fold_bn"],
                          channels_last=evaluation["channels_last"])
    grid = make_grid(settings["min"], settings["max"], settings["points"])
    run_a, run_b = ckpt_a["recipe"]["run"], ckpt_b["recipe"]["run"]
    points = Path(out).with_name(Path(out).name + ".points")  # resumable, merged into `out` below
    compute_shard(evaluator, grid, 0, 1, points, {"a": str(checkpoint_a), "b": str(checkpoint_b),
                  "grid": settings, "evaluation": evaluation, "data": data_info},
                  desc=f"interpolate {run_a} -> {run_b}")
    gather([points], grid, out, {"run_a": run_a, "run_b": run_b, "checkpoint_a": str(checkpoint_a),
                              "checkpoint_b": str(checkpoint_b), "interpolated": "parameters and BatchNorm running statistics",
                              "train_subset": evaluation.get("train_subset") or 0})
    points.unlink()


def sharpness_table(surfaces: list[str], histories: list[str], out: str, threshold: float) -> pd.DataFrame:
    """One row per (run, plane): sharpness measures of the train-loss surface next to test error."""
    rows = []
    for path in surfaces:
        surface = read_surface(path)
        attrs = surface["attrs"]
        dims = 1 if "ycoordinates" not in surface else 2
        rows.append({"run": attrs["run"], "norm": attrs["norm"], "dims": dims,
                     **sharpness.summarise(surface, threshold)})
    errors = {}
    for path in histories:
        history = pd.read_csv(path, sep="\t")
        errors[Path(path).parent.name] = 100.0 - float(history.test_acc.iloc[-1])
    table = pd.DataFrame(rows)
    table.insert(3, "test_error", table.run.map(errors))
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return table

