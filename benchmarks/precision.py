"""How far a surface computed in reduced precision is from the float32 one, on a trained network.

Loads a pipeline checkpoint and its directions file, evaluates the same 2D grid over the run's
training and test data in float32 and in each other precision (one point per call, the
pipeline's evaluator otherwise), and prints per precision: the largest and the median relative
difference of the losses, the largest absolute difference of the accuracies (percentage
points), and how many grid points change side of the 0.1 loss contour the paper reads
flatness from.

Usage: python benchmarks/precision.py CHECKPOINT DIRECTIONS [--points 11] [--precisions bf16]
[--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np
import torch

from losslandscape import directions as dirs
from losslandscape.checkpoints import load_model
from losslandscape.jobs import eval_data
from losslandscape.surface import Evaluator, compute_surface, make_grid


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("directions")
    ap.add_argument("--points", type=int, default=11, help="per axis, over [-1, 1]")
    ap.add_argument("--precisions", default="bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    made, _ = dirs.load_directions(args.directions, dirs.model_weights(model))
    settings = {"train_subset": 0, "subset_seed": 0, "eval_batch_size": 1024}
    batches, info = eval_data(ckpt["recipe"], settings, device)
    grid = make_grid(-1, 1, args.points, -1, 1, args.points)
    t0 = time.perf_counter()
    exact = compute_surface(Evaluator(model, made[:2], batches), grid)
    print(f"{datetime.date.today()}, run {ckpt['recipe']['run']} ({info['dataset']}, {info['train_points']} train + "
          f"{info['test_points']} test images), {args.points}x{args.points} grid on [-1, 1]^2, {device}, "
          f"torch {torch.__version__}; float32 train loss {exact['train_loss'].min():.4g} to "
          f"{exact['train_loss'].max():.4g}")
    print("\n| precision | max rel. loss diff | median rel. loss diff | max acc diff (points) "
          "| points crossing the 0.1 contour |\n|---|---:|---:|---:|---:|")
    for precision in args.precisions.split(","):
        other = compute_surface(Evaluator(model, made[:2], batches, precision=precision), grid)
        rel = np.concatenate([np.abs(other[m] - exact[m]).ravel() / np.abs(exact[m]).ravel()
                              for m in ("train_loss", "test_loss")])
        acc = max(np.abs(other[m] - exact[m]).max() for m in ("train_acc", "test_acc"))
        crossed = int(((other["train_loss"] < 0.1) != (exact["train_loss"] < 0.1)).sum())
        print(f"| {precision} | {rel.max():.2e} | {np.median(rel):.2e} | {acc:.2f} | {crossed} of {grid.size} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
