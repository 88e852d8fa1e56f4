"""How fast can the landscape engine evaluate grid points, against the reference tool and the floor?

A loss-surface plot evaluates L(θ* + αδ + βη) over the whole evaluation set at thousands of
(α, β) points, so points/second is the number that matters. For each model this script times,
in one process, on the same random data and the same points:

* floor: the bare eager forward pass of the unmodified model, inference mode, at the best of a
  few batch sizes; a point can never cost less than one such data pass;
* ours: the pipeline's ``surface.Evaluator``: θ*+αδ+βη written in place with ``_foreach`` ops,
  ``FoldedNetwork.refresh()``, forward at the floor's batch size, loss summed on the device;
  NCHW and channels-last separately (channels-last data is converted once, as the pipeline does);
* baseline: the reference tool's way (loss-landscape's ``set_weights`` + ``eval_loss``): a
  ``p.data = w + d`` loop over parameters, a ``DataLoader`` over a ``TensorDataset`` at batch
  128 in NCHW (no workers; the reference also decodes PIL images per sample, which is left out,
  so this baseline is kinder than the real tool), ``.item()`` per batch for loss and accuracy.

It asserts that ours and the baseline agree on the loss at every point within 1e-4 relative,
so a speed-up can never come from computing something else.

Usage: python benchmarks/evaluator.py [--images 2000] [--digits-images 1800] [--points 4]
[--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.linalg import vector_norm
from torch.utils.data import DataLoader, TensorDataset

from losslandscape.surface import Evaluator, tensor_batches
from losslandscape.models import build_model

FLOOR_BATCHES = (128, 256, 512, 1024, 2048)
BASELINE_BATCH = 128
TOL = 1e-4

#: (label, spec, dataset): CIFAR-sized ResNets at full width, and the default preset's models.
WORKLOADS: list[tuple[str, dict, str]] = [
    ("ResNet-20", {"model": "resnet", "depth": 20}, "cifar"),
    ("ResNet-56", {"model": "resnet", "depth": 56}, "cifar"),
    ("ResNet-56", {"model": "resnet", "depth": 56, "width_scale": 0.5}, "digits"),
    ("VGG-9", {"model": "vgg9", "width_scale": 0.5}, "digits"),
    ("WRN-56-4", {"model": "resnet", "depth": 56, "width": 4, "width_scale": 0.5}, "digits"),
    ("DenseNet-121", {"model": "densenet121", "width_scale": 0.5}, "digits"),
]
SHAPES = {"cifar": (3, 32), "digits": (1, 8)}


@dataclass
class Row:
    """One model's results; rates in grid points (= data passes for the floor) per second."""

    model: str
    data: str
    params: int
    pairs: int
    floor_batch: int
    floor: float
    baseline: float
    ours_nchw: float
    ours_cl: float
    max_rel_diff: float


def make_model(spec: dict, c: int, hw: int) -> nn.Module:
    """A seeded zoo model whose BN statistics look trained (not identity), in eval mode."""
    torch.manual_seed(0)
    model = build_model(spec, c, hw, 10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def directions(params: list[Tensor]) -> list[list[Tensor]]:
    """Two random filter-normalised directions (each filter scaled to its weight's norm)."""
    out = []
    for _ in range(2):
        ds = []
        for p in params:
            d = torch.randn_like(p)
            dims = tuple(range(1, p.dim())) or None  # per filter; a 1-D tensor as a whole
            d *= vector_norm(p, dim=dims, keepdim=True) / (vector_norm(d, dim=dims, keepdim=True) + 1e-10)
            ds.append(d)
        out.append(ds)
    return out


@torch.inference_mode()
def floor_pass(model: nn.Module, x: Tensor, bs: int) -> None:
    """One bare forward pass over the data: what any evaluator must at least do per point."""
    for s in range(0, len(x), bs):
        model(x[s:s + bs])


def best_batch(model: nn.Module, x: Tensor) -> int:
    """The batch size of the fastest single pass (after a one-batch warm-up at each size)."""
    def seconds(bs: int) -> float:
        floor_pass(model, x[:bs], bs)
        t = time.perf_counter()
        floor_pass(model, x, bs)
        return time.perf_counter() - t
    return min(FLOOR_BATCHES, key=seconds)


class Ours:
    """The pipeline's evaluator itself (losslandscape.surface.Evaluator): in-place weight writes,
    folded BatchNorm, on-device loss sums, data converted to the memory format once."""

    def __init__(self, model: nn.Module, dirs: list[list[Tensor]], channels_last: bool,
                 x: Tensor, y: Tensor, bs: int) -> None:
        names = [n for n, _ in model.named_parameters()]
        planes = [dict(zip(names, ds)) for ds in dirs]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.evaluator = Evaluator(model, planes, {"data": tensor_batches(x, y, bs)}, fold_bn=True,
                                   channels_last=channels_last)
        self.net = self.evaluator.forward

    def loss(self, a: float, b: float) -> tuple[float, float]:
        """Mean loss and accuracy (%) at θ* + aδ + bη."""
        values = self.evaluator((a, b))
        return values["data_loss"], values["data_acc"]


class Baseline:
    """The reference tool's evaluator (net_plotter.set_weights + evaluation.eval_loss)."""

    def __init__(self, model: nn.Module, dirs: list[list[Tensor]], x: Tensor, y: Tensor) -> None:
        self.model = model
        self.weights = [p.data.clone() for p in model.parameters()]
        self.dirs = dirs
        self.loader = DataLoader(TensorDataset(x, y), batch_size=BASELINE_BATCH, shuffle=False)

    def loss(self, a: float, b: float) -> tuple[float, float]:
        changes = [d0 * a + d1 * b for d0, d1 in zip(*self.dirs)]
        for p, w, d in zip(self.model.parameters(), self.weights, changes):
            p.data = w + d
        total, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for inputs, targets in self.loader:
                out = self.model(inputs)
                total += F.cross_entropy(out, targets).item() * len(targets)
                correct += out.argmax(1).eq(targets).sum().item()
                n += len(targets)
        return total / n, 100.0 * correct / n


def bench(label: str, spec: dict, data: str, n_images: int, n_points: int) -> Row:
    """Time floor, baseline and ours (NCHW, channels-last) on one model; check the losses agree.

    The methods take turns point by point, so load from other processes falls on all of them
    alike; each rate is that of its fastest timed point (other processes only ever add time).
    Point 0 is an untimed warm-up (oneDNN builds per-shape primitives once; a long run
    amortises that)."""
    c, hw = SHAPES[data]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n_images, c, hw, hw, generator=g)
    y = torch.randint(0, 10, (n_images,), generator=g)
    model = make_model(spec, c, hw)
    dirs = directions([p.detach() for p in model.parameters()])
    pts = (torch.rand(n_points + 1, 2, generator=g) - 0.5).tolist()
    floor_model = copy.deepcopy(model)
    bs = best_batch(floor_model, x)
    base = Baseline(copy.deepcopy(model), dirs, x, y)
    ours = [Ours(copy.deepcopy(model), dirs, cl, x, y, bs) for cl in (False, True)]
    methods: dict[str, Callable[[float, float], tuple[float, float] | None]] = {
        "floor": lambda a, b: floor_pass(floor_model, x, bs),
        "baseline": base.loss,
        "ours NCHW": ours[0].loss,
        "ours channels_last": ours[1].loss,
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    worst = 0.0
    for i, (a, b) in enumerate(pts):
        res = {}
        for name, fn in methods.items():
            t = time.perf_counter()
            res[name] = fn(a, b)
            if i:
                times[name].append(time.perf_counter() - t)
        ref = res["baseline"][0]
        for name in ("ours NCHW", "ours channels_last"):
            diff = abs(res[name][0] - ref) / abs(ref)
            assert diff < TOL, f"{label}: {name} loss {res[name][0]} != baseline {ref} at {(a, b)}"
            worst = max(worst, diff)
    rate = {k: 1.0 / min(v) for k, v in times.items()}
    print(f"[{label} {data}] batch {bs}: " + ", ".join(f"{k} {v:.3f}/s" for k, v in rate.items()),
          file=sys.stderr, flush=True)
    return Row(label, f"{data} {c}x{hw}x{hw} x{n_images}", sum(p.numel() for p in model.parameters()),
               len(ours[0].net.folded_pairs), bs, rate["floor"], rate["baseline"], rate["ours NCHW"],
               rate["ours channels_last"], worst)


def table(rows: list[Row], header: str) -> str:
    """Markdown table; 'best ours' is the faster memory format."""
    lines = [header, "",
             "| model | data | params | folded | floor batch | floor (passes/s) | baseline (pts/s) "
             "| ours NCHW (pts/s) | ours CL (pts/s) | best ours / baseline | best ours / floor "
             "| max rel. loss diff |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        best = max(r.ours_nchw, r.ours_cl)
        lines.append(f"| {r.model} | {r.data} | {r.params:,} | {r.pairs} | {r.floor_batch} | "
                     f"{r.floor:.3f} | {r.baseline:.3f} | {r.ours_nchw:.3f} | {r.ours_cl:.3f} | "
                     f"{best / r.baseline:.2f}x | {best / r.floor:.2f}x | {r.max_rel_diff:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="CIFAR-sized (3x32x32) images")
    ap.add_argument("--digits-images", type=int, default=1800, help="digits-sized (1x8x8) images")
    ap.add_argument("--points", type=int, default=4, help="timed grid points per method")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    rows = [bench(label, spec, data, args.images if data == "cifar" else args.digits_images, args.points)
            for label, spec, data in WORKLOADS]
    load = os.getloadavg()[0]
    header = (f"torch {torch.__version__}, {args.threads} threads; rates are the fastest of "
              f"{args.points} timed points (or passes) after a warm-up; digits models at width_scale "
              f"0.5; total {time.perf_counter() - t0:.0f} s; 1-min load average {load0:.1f} at start, "
              f"{load:.1f} at end")
    text = table(rows, header)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
