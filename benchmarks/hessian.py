"""How fast are Hessian eigenvalues per grid point, against the reference tool's way of computing them?

The paper's non-convexity maps (|λ_min / λ_max| over a plane) cost two Lanczos runs per grid
point, each tens of Hessian-vector products, each a double backward pass over the data. In one
process, on the same model, data and grid points (a row-major patch of a filter-normalised
plane, walked as a shard walks it), this script times:

* ours: ``HessianEvaluator``: the HVP of the mean loss over large batches (the fastest of a few
  sizes), the gradient's graph kept between the products at a point (``cache_graph``), Lanczos
  warm-started from the previous point's eigenvectors with a smaller Krylov space (``ncv``), so
  that a good start vector can stop the run early (ARPACK only tests convergence after filling
  the space: with its default of 20, no start vector can save a product);
* ours, cold: the same without the warm start, which isolates what the warm start saves;
* baseline: loss-landscape's ``hess_vec_prod.min_max_hessian_eigs``: ``p.data = w + d`` moves, a
  ``DataLoader`` at batch 128, per batch a double backward of the batch's *mean* loss with <g, v>
  summed on the CPU and the product moved to numpy and summed there, ``eigsh(which="LM")`` from a
  random start, then the same on H − 0.51·λ_max·I. Its HVP is that of the sum of the per-batch
  mean losses, so its eigenvalues are (number of batches) times ours when the batches are equal,
  hence 1,536 = 12 × 128 images by default (1,500 would leave a short last batch and no exact
  factor).

All use the same ARPACK tolerance. The script asserts that ours and the baseline (divided by the
number of batches) agree on λ_max and λ_min within 1e-2·λ_max at every point: λ_min is found as an
eigenvalue of H − 0.51·λ_max·I, so ARPACK bounds its error by tol·|λ_min − 0.51·λ_max|, a
fraction of λ_max, not of λ_min (at tol 1e-3 two correct runs can differ by ~1% of a small λ_min);
the largest difference relative to each eigenvalue itself is printed with the table. The methods take
turns point by point, so load from other processes falls on all of them alike; seconds and
products are means over the points (the products a point needs vary from point to point).

Usage: python benchmarks/hessian.py [--model resnet20|resnet56] [--images 1536] [--points 4]
[--spacing 0.2] [--tol 1e-3] [--ncv 10] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from losslandscape.directions import model_weights, random_direction
from losslandscape.hessian import SHIFT, HessianEvaluator, hvp_operator
from losslandscape.models import build_model
from losslandscape.surface import tensor_batches

BASELINE_BATCH = 128
OUR_BATCHES = (256, 512, None)  # None: all the data in one batch
AGREE = 1e-2


@dataclass
class Method:
    """Per-point results of one method: seconds, products, (λ_max, λ_min)."""

    name: str
    seconds: list[float] = field(default_factory=list)
    products: list[int] = field(default_factory=list)
    eigs: list[tuple[float, float]] = field(default_factory=list)


def make_model(name: str, x: torch.Tensor) -> nn.Module:
    """The default preset's network (width_scale 0.25), with BatchNorm statistics of the data, in eval mode."""
    torch.manual_seed(0)
    depth = {"resnet20": 20, "resnet56": 56}[name]
    model = build_model({"model": "resnet", "depth": depth, "width_scale": 0.25}, x.shape[1], x.shape[-1], 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: one pass gives the data's statistics
            m.reset_running_stats()
    with torch.no_grad():
        model.train()(x)
    return model.eval()


class Baseline:
    """loss-landscape's hess_vec_prod.py: eval_hess_vec_prod + min_max_hessian_eigs."""

    def __init__(self, model: nn.Module, directions: list[dict], x: torch.Tensor, y: torch.Tensor, tol: float):
        self.model = model.eval()
        self.all = list(model.parameters())
        self.weights0 = [p.data.clone() for p in self.all]
        self.dirs = [[d[n] for n, _ in model.named_parameters()] for d in directions]
        self.params = [p for p in self.all if p.dim() > 1]
        self.n = sum(p.numel() for p in self.params)
        self.loader = DataLoader(TensorDataset(x, y), batch_size=BASELINE_BATCH, shuffle=False)
        self.tol, self.products = tol, 0

    def hvp(self, vec: np.ndarray) -> np.ndarray:
        self.products += 1
        vs, i = [], 0
        for p in self.params:  # npvec_to_tensorlist
            vs.append(torch.tensor(vec[i:i + p.numel()], dtype=p.dtype).view(p.shape))
            i += p.numel()
        total = np.zeros(self.n)
        for inputs, targets in self.loader:
            loss = F.cross_entropy(self.model(inputs), targets)
            grads = torch.autograd.grad(loss, self.params, create_graph=True)
            prod = torch.zeros(1)
            for g, v in zip(grads, vs):
                prod = prod + (g * v).cpu().sum()
            hv = torch.autograd.grad(prod, self.params)
            total += np.concatenate([h.cpu().numpy().ravel() for h in hv])
        return total

    def __call__(self, a: float, b: float) -> tuple[float, float]:
        for p, w, d0, d1 in zip(self.all, self.weights0, *self.dirs):  # set_weights
            p.data = w + d0 * a + d1 * b
        op = LinearOperator((self.n, self.n), matvec=self.hvp, dtype=np.float64)
        max_eig = float(eigsh(op, k=1, tol=self.tol)[0][0])
        shift = SHIFT * max_eig
        shifted = LinearOperator((self.n, self.n), matvec=lambda v: self.hvp(v) - shift * v.ravel(), dtype=np.float64)
        min_eig = float(eigsh(shifted, k=1, tol=self.tol)[0][0]) + shift
        return max_eig, min_eig


def best_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """The batch size of the fastest full product (after one untimed product at each size)."""
    def seconds(bs: int) -> float:
        op = hvp_operator(model, tensor_batches(x, y, bs))
        v = np.random.default_rng(0).standard_normal(op.shape[0])
        op.matvec(v)
        t = time.perf_counter()
        op.matvec(v)
        return time.perf_counter() - t
    return min((bs or len(y) for bs in OUR_BATCHES), key=seconds)


def patch(points: int, spacing: float) -> list[tuple[float, float]]:
    """The first `points` of a row-major k×k patch of the plane at the origin, as a shard walks a grid."""
    k = math.ceil(math.sqrt(points))
    return [(spacing * (i % k), spacing * (i // k)) for i in range(points)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("resnet20", "resnet56"), default="resnet20")
    ap.add_argument("--images", type=int, default=1536, help="1x8x8 digits-shaped random images, 10 classes")
    ap.add_argument("--points", type=int, default=4, help="grid points per method")
    ap.add_argument("--spacing", type=float, default=0.2, help="grid step (the default preset's: 11 points on [-1, 1])")
    ap.add_argument("--tol", type=float, default=1e-3, help="ARPACK tolerance, the same for every method")
    ap.add_argument("--ncv", type=int, default=10, help="our Lanczos vectors (ARPACK's default is 20)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]

    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.images, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (args.images,), generator=g)
    model = make_model(args.model, x)
    weights = model_weights(model)
    dirs = [random_direction(weights, 1), random_direction(weights, 2)]
    bs = best_batch(copy.deepcopy(model), x, y)
    n_batches = math.ceil(args.images / BASELINE_BATCH)
    if args.images % BASELINE_BATCH:
        print(f"warning: {args.images} images leave a short last batch; the baseline's scale is not exactly "
              f"{n_batches} and the agreement check may fail")

    ours = {warm: HessianEvaluator(copy.deepcopy(model), dirs, tensor_batches(x, y, bs), tol=args.tol,
                                   warm_start=warm, ncv=args.ncv, cache_graph=True) for warm in (True, False)}
    baseline = Baseline(copy.deepcopy(model), dirs, x, y, args.tol)
    methods = {"ours (warm start)": Method("ours"), "ours, cold start": Method("cold"),
               f"baseline (reference, batch {BASELINE_BATCH})": Method("baseline")}

    def run(name: str, a: float, b: float) -> tuple[tuple[float, float], int]:
        if name.startswith("baseline"):
            before = baseline.products
            max_eig, min_eig = baseline(a, b)
            return (max_eig / n_batches, min_eig / n_batches), baseline.products - before
        ev = ours[name.startswith("ours (warm")]
        before = ev.op.products
        r = ev((a, b))
        assert r["max_converged"] and r["min_converged"], f"{name} did not converge at {(a, b)}"
        return (r["max_eig"], r["min_eig"]), ev.op.products - before

    worst = 0.0  # largest difference from ours, relative to the eigenvalue itself
    for a, b in patch(args.points, args.spacing):
        for name, m in methods.items():
            t = time.perf_counter()
            eigs, products = run(name, a, b)
            m.seconds.append(time.perf_counter() - t)
            m.products.append(products)
            m.eigs.append(eigs)
        ref = methods[next(iter(methods))].eigs[-1]
        for name, m in methods.items():
            for got, want in zip(m.eigs[-1], ref):
                assert abs(got - want) <= AGREE * abs(ref[0]), f"{name}: {m.eigs[-1]} vs ours {ref} at {(a, b)}"
                worst = max(worst, abs(got - want) / abs(want))
        print(f"point {(a, b)}: " + ", ".join(f"{m.name} {m.seconds[-1]:.1f} s / {m.products[-1]} products"
                                               for m in methods.values()), flush=True)

    lines = [f"{args.model} at width_scale 0.25 ({sum(p.numel() for p in baseline.params):,} weights), "
             f"{args.images} random 1x8x8 images, {args.points} points of a {args.spacing}-spaced patch, "
             f"tol {args.tol}, our batch {bs}, ncv {args.ncv}; torch {torch.__version__}, {args.threads} threads; "
             f"eigenvalues of the mean loss (baseline's / {n_batches}) at the last point, largest difference from "
             f"ours over all points {worst:.1e} relative; total "
             f"{time.perf_counter() - t0:.0f} s; 1-min load average {load0:.1f} at start, "
             f"{os.getloadavg()[0]:.1f} at end", "",
             "| method | s / point | products / point | products / point after the first | s / product "
             "| λ_max | λ_min | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in methods.items():
        lmax, lmin = m.eigs[-1]
        later = np.mean(m.products[1:]) if len(m.products) > 1 else math.nan  # a warm start needs a previous point
        lines.append(f"| {name} | {np.mean(m.seconds):.1f} | {np.mean(m.products):.1f} | {later:.1f} | "
                     f"{sum(m.seconds) / sum(m.products):.3f} | {lmax:.4g} | {lmin:.4g} | {abs(lmin / lmax):.4f} |")
    sec = {m.name: np.mean(m.seconds) for m in methods.values()}
    lines += ["", f"speed-up of ours over the baseline: {sec['baseline'] / sec['ours']:.2f}x per point "
              f"(cold start: {sec['baseline'] / sec['cold']:.2f}x); warm over cold start: "
              f"{sec['cold'] / sec['ours']:.2f}x"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
