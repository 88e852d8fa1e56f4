"""Entry points of the pipeline's landscape rules: read files, call the library, write files.

Each function is what one Snakemake rule runs; the rules pass the settings through `params`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import data as datasets
from . import directions as dirs
from . import sharpness, trajectory
from .checkpoints import list_checkpoints, load_model, read_checkpoint
from .io import atomic_path, recipe_hash, settings_json, tensor_digest
from .surface import Evaluator, Grid, compute_shard, gather, make_grid, read_surface, shard_points, tensor_batches
from .train import resolve_device


def eval_data(recipe: dict, settings: dict, device: torch.device, channels_last: bool = False) -> tuple[dict, dict]:
    """Batches of the training and test splits the surfaces are evaluated on, and their provenance.

    The whole training split by default, as in the paper; `train_subset` takes a seeded subset.
    """
    data = datasets.load_dataset(recipe["dataset"], recipe["data_settings"], seed=recipe["seed"])
    train = data.train
    if settings.get("train_subset"):
        train = datasets.subset(train, settings["train_subset"], seed=settings["subset_seed"])
    size = settings["eval_batch_size"]
    splits = {"train": train.to(device), "test": data.test.to(device)}
    layout = torch.channels_last if channels_last else torch.contiguous_format  # converted once, not per point
    batches = {name: tensor_batches(s.images.contiguous(memory_format=layout), s.labels, size)
               for name, s in splits.items()}
    info = {"dataset": recipe["dataset"], "train_points": len(train), "test_points": len(data.test),
            "train_subset_seed": settings["subset_seed"] if settings.get("train_subset") else None}
    return batches, info


def _channels_last(evaluation: dict, ckpt: dict) -> bool:
    """NHWC pays on CIFAR-sized images and costs on 8x8 digits (benchmarks/README.md)."""
    if evaluation["channels_last"] == "auto":
        return ckpt["model_info"]["image_size"] >= 16
    return bool(evaluation["channels_last"])


def _evaluator(model, directions: list[dict], batches: dict, evaluation: dict, channels_last: bool) -> Evaluator:
    """The surface evaluator as the config's `landscape` section sets it up (batched points, precision)."""
    if evaluation["precision"] != "float32":
        print(f"evaluating in {evaluation['precision']}, not float32 (its error: benchmarks/README.md)", flush=True)
    return Evaluator(model, directions, batches, fold_bn=evaluation["fold_bn"], channels_last=channels_last,
                     points_per_call=evaluation["points_per_call"], precision=evaluation["precision"])


def _start(device: str, threads: int | None) -> torch.device:
    """A job's device and threads; cuDNN may pick its fastest kernels, as every batch has one of two shapes."""
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def make_directions(checkpoint: str, out: str, norm: str, ignore_biasbn: bool, seed: int) -> None:
    """The two random directions of a run under one normalisation: x from `seed`, y from `seed + 1`.

    A 1D plot uses x alone, so it is the x-axis of the 2D plot with the same normalisation.
    """
    model, ckpt = load_model(checkpoint)
    weights = dirs.model_weights(model)
    made = [dirs.random_direction(weights, seed + axis, norm, ignore_biasbn) for axis in range(2)]
    dirs.save_directions(out, made, {
        "run": ckpt["recipe"]["run"], "checkpoint": str(checkpoint), "norm": norm,
        "ignore_biasbn": ignore_biasbn, "seeds": [seed, seed + 1], "weights_digest": tensor_digest(weights),
    })


def _checked_directions(directions: str, model, ckpt: dict, plane: dict) -> tuple[list[dict], dict, str]:
    """A plane's directions, refused when made for another network, run, checkpoint or plane."""
    weights = dirs.model_weights(model)
    made, attrs = dirs.load_directions(directions, weights)
    digest = tensor_digest(weights)
    dirs.check_directions(directions, made, attrs, plane, ckpt["recipe"]["run"], digest)
    return made, attrs, digest


def _grid(plane: dict, grid: dict, directions_attrs: dict):
    """The preset's square grid, or the grid stored with PCA directions (it covers the optimiser's path)."""
    if "grid" in directions_attrs:
        xmin, xmax, xnum, ymin, ymax, ynum = directions_attrs["grid"]
        return make_grid(xmin, xmax, int(xnum), ymin, ymax, int(ynum))
    span, n = grid["span"], grid["points_1d"] if plane["dims"] == 1 else grid["points_2d"]
    if plane["dims"] == 1:
        return make_grid(-span, span, n)
    return make_grid(-span, span, n, -span, span, n)


def surface_shard(checkpoint: str, directions: str, out: str, plane: dict, grid: dict, evaluation: dict,
                  shard: int, n_shards: int, device: str = "auto", threads: int | None = None) -> None:
    """Evaluate one shard of a run's random-direction line or plane (resumable)."""
    dev = _start(device, threads)
    model, ckpt = load_model(checkpoint, dev)
    made, attrs, digest = _checked_directions(directions, model, ckpt, plane)
    made = made[: plane["dims"]]
    channels_last = _channels_last(evaluation, ckpt)
    batches, data_info = eval_data(ckpt["recipe"], evaluation, dev, channels_last)
    evaluator = _evaluator(model, made, batches, evaluation, channels_last)
    settings = {"checkpoint": str(checkpoint), "directions": dict(attrs, version=None), "plane": plane,
                "grid": grid, "evaluation": evaluation, "data": data_info, "weights_digest": digest,
                "directions_digest": tensor_digest({f"{i}/{n}": t for i, d in enumerate(made) for n, t in d.items()})}
    compute_shard(evaluator, _grid(plane, grid, attrs), shard, n_shards, out, settings,
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
    model, ckpt = load_model(checkpoint)
    expect = {"checkpoint": str(checkpoint), "plane": plane, "grid": grid, "evaluation": evaluation,
              "weights_digest": tensor_digest(dirs.model_weights(model))}
    gather(shards, _grid(plane, grid, attrs), out, {
        "run": ckpt["recipe"]["run"], "checkpoint": str(checkpoint), "epoch": ckpt["epoch"],
        "directions": str(directions), "seeds": attrs["seeds"][: plane["dims"]], "norm": attrs["norm"],
        "ignore_biasbn": attrs["ignore_biasbn"], "train_subset": evaluation.get("train_subset") or 0,
        "subset_seed": evaluation["subset_seed"], "batchnorm": "eval mode, stored running statistics",
        "settings": settings_json({"plane": plane, "grid": grid, "evaluation": evaluation,
                                   "weights_digest": expect["weights_digest"]}),
    }, expect=expect)
    if points:
        points.unlink()


def interpolate(checkpoint_a: str, checkpoint_b: str, out: str, settings: dict, evaluation: dict,
                device: str = "auto", threads: int | None = None) -> None:
    """Fig 2 a/d: loss along (1−α)θ_a + αθ_b, over parameters and BatchNorm running statistics."""
    dev = _start(device, threads)
    model_a, ckpt_a = load_model(checkpoint_a, dev)
    model_b, ckpt_b = load_model(checkpoint_b, dev)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    moving = [n for n, t in state_a.items() if t.is_floating_point()]  # not BN's integer batch counters
    direction = {n: state_b[n] - state_a[n] for n in moving}
    channels_last = _channels_last(evaluation, ckpt_a)
    batches, data_info = eval_data(ckpt_a["recipe"], evaluation, dev, channels_last)
    evaluator = _evaluator(model_a, [direction], batches, evaluation, channels_last)
    grid = make_grid(settings["min"], settings["max"], settings["points"])
    run_a, run_b = ckpt_a["recipe"]["run"], ckpt_b["recipe"]["run"]
    points = Path(out).with_name(Path(out).name + ".points")  # resumable, merged into `out` below
    digests = [tensor_digest(model.state_dict()) for model in (model_a, model_b)]  # before the evaluator moves a
    compute_shard(evaluator, grid, 0, 1, points, {"a": str(checkpoint_a), "b": str(checkpoint_b),
                  "grid": settings, "evaluation": evaluation, "data": data_info, "digests": digests},
                  desc=f"interpolate {run_a} -> {run_b}")
    gather([points], grid, out, {"run_a": run_a, "run_b": run_b, "checkpoint_a": str(checkpoint_a),
                              "checkpoint_b": str(checkpoint_b), "interpolated": "parameters and BatchNorm running statistics",
                              "train_subset": evaluation.get("train_subset") or 0,
                              "subset_seed": evaluation["subset_seed"],
                              "settings": settings_json({"grid": settings, "evaluation": evaluation, "digests": digests})},
           expect={"grid": settings, "evaluation": evaluation, "digests": digests})
    points.unlink()


def _hessian_grid(grid: dict, hessian: dict):
    """The surface's own grid points, every `stride`-th one per axis (1: the same grid)."""
    full = make_grid(-grid["span"], grid["span"], grid["points_2d"], -grid["span"], grid["span"], grid["points_2d"])
    return Grid(full.x[:: hessian["stride"]], full.y[:: hessian["stride"]])


def hessian_shard(checkpoint: str, directions: str, out: str, grid: dict, hessian: dict, shard: int,
                  n_shards: int, device: str = "auto", threads: int | None = None) -> None:
    """Fig 7: extreme Hessian eigenvalues at one shard's points of a run's 2D plane (resumable)."""
    from .hessian import HESSIAN_METRICS, HessianEvaluator

    dev = _start(device, threads)
    model, ckpt = load_model(checkpoint, dev)
    made, attrs, digest = _checked_directions(directions, model, ckpt, {"dims": 2})
    evaluation = {"train_subset": hessian["train_subset"], "subset_seed": hessian["subset_seed"],
                  "eval_batch_size": hessian["batch_size"]}
    batches, data_info = eval_data(ckpt["recipe"], evaluation, dev)
    evaluator = HessianEvaluator(model, made[:2], batches["train"], tol=hessian["tol"],
                                 maxiter=hessian["maxiter"], warm_start=hessian["warm_start"])
    settings = {"checkpoint": str(checkpoint), "directions": dict(attrs, version=None), "grid": grid,
                "hessian": hessian, "data": data_info, "weights_digest": digest}
    points = _hessian_grid(grid, hessian)
    warm = Path(out).with_name(Path(out).name + ".warm.npz")  # warm-start vectors: a resumed map is bit-identical
    evaluator.keep_warm_state(warm, recipe_hash(settings), [points.coords(k) for k in shard_points(points, shard, n_shards)])
    compute_shard(evaluator, points, shard, n_shards, out, settings,
                  desc=f"hessian {ckpt['recipe']['run']} shard {shard + 1}/{n_shards}", metrics=HESSIAN_METRICS)
    warm.unlink(missing_ok=True)


def hessian_map(shards: list[str], checkpoint: str, directions: str, out: str, grid: dict, hessian: dict) -> None:
    """Merge a Hessian map's shards into the surface layout (min_eig, max_eig, ratio, convergence flags)."""
    _, attrs = dirs.load_directions(directions)
    model, ckpt = load_model(checkpoint)
    expect = {"checkpoint": str(checkpoint), "grid": grid, "hessian": hessian,
              "weights_digest": tensor_digest(dirs.model_weights(model))}
    gather(shards, _hessian_grid(grid, hessian), out, {
        "run": ckpt["recipe"]["run"], "checkpoint": str(checkpoint), "directions": str(directions),
        "seeds": attrs["seeds"], "norm": attrs["norm"], "tol": hessian["tol"],
        "maxiter": hessian["maxiter"] or 0, "train_subset": hessian["train_subset"] or 0,
        "subset_seed": hessian["subset_seed"],
        "hessian": "of the mean training loss over the chosen data, w.r.t. weights of 2+ dimensions, "
                   "BatchNorm in eval mode; eigenvalues by ARPACK (implicitly restarted Lanczos)",
        "not_converged": "NaN eigenvalue and max_converged/min_converged = 0",
        "settings": settings_json(expect),
    }, expect=expect)


def trajectory_pca(final: str, directions: str, out: str, margin: float, points: int) -> None:
    """Appendix B: PCA of a run's checkpoints, the path on the PCA plane and on two random directions."""
    model, ckpt = load_model(final)
    names = [n for n, _ in model.named_parameters()]
    checkpoints = list_checkpoints(Path(final).parent)
    if len(checkpoints) < 3:
        raise ValueError(f"{Path(final).parent}: a trajectory needs checkpoints of every epoch; found {len(checkpoints)}. "
                         "Set `trajectory: true` for the run in config.yaml and retrain it.")
    rows, _, epochs = trajectory.path_matrix(checkpoints, names)
    components, shares = trajectory.pca_directions(rows)
    coords = trajectory.project(rows, components)
    random_dirs, _, digest = _checked_directions(directions, model, ckpt, {"dims": 2})
    flat_random = np.stack([trajectory.flatten_weights(d, names) for d in random_dirs[:2]])
    random_coords = trajectory.project(rows, flat_random)
    template = dict(model.named_parameters())
    trajectory.write_pca(out, components, shares, coords, random_coords, epochs,
                         trajectory.plane_range(coords, margin, points), template, names,
                         {"run": ckpt["recipe"]["run"], "checkpoints": len(checkpoints),
                          "random_directions": str(directions), "weights_digest": digest,
                          "settings": settings_json({"margin": margin, "points": points,
                                                     "checkpoint_epochs": epochs})})
    print(f"PCA of {len(checkpoints)} checkpoints: the first two components hold "
          f"{100 * shares[0]:.1f} % and {100 * shares[1]:.1f} % of the variation", flush=True)


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

