"""Points per second of the surface evaluator on a GPU (or a CPU): plain, batched over points, and the floor.

For ResNet-20, ResNet-56 and WRN-56-4 at CIFAR size (random data), and for each precision
(float32, tf32 on CUDA, bf16), in one process and on the same data:

* floor: the bare forward pass of the unmodified model over the data, inference mode, at the
  fastest of a few batch sizes and both memory formats; a grid point can never cost less;
* plain: the pipeline's `surface.Evaluator` one point per pass (BatchNorm folded, weights
  moved in place), at the floor's batch size and memory format;
* batched: the same Evaluator with `points_per_call` (K points per pass through
  `torch.func.vmap`; `auto` times K on a GPU), at the floor's batch size and memory format.

Rates are grid points (= passes over the data) per second, over all timed points after a
warm-up. The losses of plain and batched are checked against each other (float32) and against
float32 (other precisions) at the same points; the table gives the largest relative difference.
The last column projects a 51 x 51 surface over 50,000 + 10,000 images from the best rate.

Usage: python benchmarks/gpu.py [--device auto|cuda|cpu] [--quick] [--images N] [--out FILE]
(`benchmarks/gpu.sh` runs it). `--quick` is the CPU smoke test's size (seconds, tiny widths).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from evaluator import directions, make_model  # benchmarks/evaluator.py: trained-looking BN, filter-normalised
from losslandscape.batched import precision_context
from losslandscape.surface import Evaluator, tensor_batches

MODELS = [("ResNet-20", {"model": "resnet", "depth": 20}), ("ResNet-56", {"model": "resnet", "depth": 56}),
          ("WRN-56-4", {"model": "resnet", "depth": 56, "width": 4})]
SURFACE_POINTS, SURFACE_IMAGES = 51 * 51, 50_000 + 10_000


@dataclass
class Setup:
    """How big a measurement is, per device."""

    images: int
    image_size: int
    width_scale: float
    batches: tuple[int, ...]
    points: int  # timed points of the plain evaluator
    calls: int  # timed calls of the batched one
    per_call: int | str


SETUPS = {
    "cuda": Setup(10_000, 32, 1.0, (512, 1024, 2048, 4096, 8192), 3, 2, "auto"),
    "cpu": Setup(256, 32, 1.0, (128, 256), 2, 1, 4),
    "quick": Setup(16, 16, 0.125, (16,), 1, 1, 2),
}


@dataclass
class Row:
    model: str
    precision: str
    params: int
    batch: int
    layout: str
    floor: float
    plain: float
    batched: float
    per_call: int
    max_rel_diff: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device) -> float:
    synchronize(device)
    tic = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - tic


@torch.inference_mode()
def floor(model: nn.Module, x: Tensor, batches: tuple[int, ...], precision: str) -> tuple[float, int, str]:
    """Passes per second of the bare forward at its fastest batch size and memory format."""
    best = (0.0, 0, "")
    for layout, fmt in (("NCHW", torch.contiguous_format), ("CL", torch.channels_last)):
        net, data = copy.deepcopy(model).to(memory_format=fmt), x.contiguous(memory_format=fmt)
        for bs in batches:
            def one_pass() -> None:
                with precision_context(precision, x.device):
                    for s in range(0, len(data), bs):
                        net(data[s : s + bs])
            one_pass()  # warm-up: cuDNN / oneDNN pick their kernels
            rate = 1.0 / seconds(one_pass, x.device)
            best = max(best, (rate, bs, layout))
    return best


def losses(values: list[dict]) -> list[float]:
    return [v["data_loss"] for v in values]


def bench(label: str, spec: dict, precision: str, setup: Setup, x: Tensor, y: Tensor,
          reference: dict[str, list[float]]) -> Row:
    """One model at one precision; `reference` keeps the float32 losses of each model at its points."""
    device = x.device
    model = make_model({**spec, "width_scale": setup.width_scale}, 3, setup.image_size).to(device)
    dirs = directions([p.detach() for p in model.parameters()])
    names = [n for n, _ in model.named_parameters()]
    planes = [dict(zip(names, d)) for d in dirs]
    rate_floor, bs, layout = floor(model, x, setup.batches, precision)
    channels_last = layout == "CL"
    data = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    g = torch.Generator().manual_seed(2)

    def evaluator(per_call):
        return Evaluator(copy.deepcopy(model), planes, {"data": tensor_batches(data, y, bs)},
                         channels_last=channels_last, points_per_call=per_call, precision=precision)

    plain, batched = evaluator(1), evaluator(setup.per_call)
    k = batched.points_per_call  # resolves `auto` (times K on a GPU) before the clock starts
    n = max(setup.points, k * setup.calls)
    pts = [tuple(p) for p in (torch.rand(n + k, 2, generator=g) - 0.5).tolist()]  # the first k: warm-up
    plain(pts[0])
    plain_values, batched_values = [], []
    t_plain = seconds(lambda: plain_values.extend(plain(p) for p in pts[k : k + setup.points]), device)
    batched.many(pts[:k])
    t_batched = seconds(lambda: [batched_values.extend(batched.many(pts[k + i * k : k + (i + 1) * k]))
                                 for i in range(setup.calls)], device)
    common = min(setup.points, k * setup.calls)
    ours = losses(batched_values)[:common]
    if precision == "float32":
        reference[label] = losses(plain_values)[:common]
        check = reference[label]
    else:
        check = reference.get(label, [])[:common]
    diff = max((abs(a - b) / abs(b) for a, b in zip(ours, check)), default=float("nan"))
    if precision == "float32":
        assert diff < 1e-4, f"{label}: batched losses {ours} differ from one-point ones {check}"
    row = Row(label, precision, sum(p.numel() for p in model.parameters()), bs, layout, rate_floor,
              setup.points / t_plain, k * setup.calls / t_batched, k, diff)
    print(f"[{label} {precision}] batch {bs} {layout}: floor {row.floor:.3f}, plain {row.plain:.3f}, "
          f"batched {row.batched:.3f} pts/s (K={k})", file=sys.stderr, flush=True)
    return row


def table(rows: list[Row], images: int, header: str) -> str:
    lines = [header, "",
             "| model | precision | params | batch | floor (pts/s) | plain (pts/s) | batched (pts/s) | K "
             "| batched / floor | max rel. loss diff | 51×51 surface, 60k images (min) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        best = max(r.plain, r.batched)
        minutes = SURFACE_POINTS * SURFACE_IMAGES / (best * images) / 60
        projected = f"{minutes:,.0f}" if minutes >= 10 else f"{minutes:.2g}"
        lines.append(f"| {r.model} | {r.precision} | {r.params:,} | {r.batch} {r.layout} | {r.floor:.3g} | "
                     f"{r.plain:.3g} | {r.batched:.3g} | {r.per_call} | {r.batched / r.floor:.2f} | "
                     f"{r.max_rel_diff:.1e} | {projected} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="tiny widths and data: the CPU smoke test")
    ap.add_argument("--images", type=int, help="random images (default: 10,000 on a GPU, 512 on a CPU)")
    ap.add_argument("--precisions", help="comma-separated (default: float32,tf32,bf16 on a GPU, float32,bf16 on a CPU)")
    ap.add_argument("--models", help="comma-separated labels (default: all of " + ", ".join(m for m, _ in MODELS) + ")")
    ap.add_argument("--threads", type=int, help="CPU threads")
    ap.add_argument("--out", help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the pipeline's jobs do
    setup = SETUPS["quick" if args.quick else device.type]
    images = args.images or setup.images
    precisions = (args.precisions or ("float32,tf32,bf16" if device.type == "cuda" else "float32,bf16")).split(",")
    models = [m for m in MODELS if not args.models or m[0] in args.models.split(",")]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(images, 3, setup.image_size, setup.image_size, generator=g).to(device)
    y = torch.randint(0, 10, (images,), generator=g).to(device)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    reference: dict[str, list[float]] = {}
    rows = [bench(label, spec, precision, setup, x, y, reference) for label, spec in models for precision in precisions]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    header = (f"{datetime.date.today()}, {name}, torch {torch.__version__}; {images:,} random "
              f"3x{setup.image_size}x{setup.image_size} images, width_scale {setup.width_scale}; timed: "
              f"{setup.points} plain points, {setup.calls} batched call(s) of K points, after a warm-up; "
              f"total {time.perf_counter() - t0:.0f} s; 1-min load average {load0:.1f} at start, "
              f"{os.getloadavg()[0]:.1f} at end")
    text = table(rows, images, header)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return text


if __name__ == "__main__":
    main()
