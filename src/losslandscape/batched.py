"""Several grid points of a line or plane in one call, and the arithmetic precision of an evaluation.

A CIFAR-sized network at one grid point leaves most of a large GPU idle. `StackedPoints`
evaluates K points at once: their weights θ_k = θ₀ + Σ_j c_kj d_j are stacked along a new
leading dimension (one matrix product), and the network, a pure function of its weights once
BatchNorm is folded into the convolutions (eval mode), runs under `torch.func.vmap` over the
K weight sets with the same input batch. vmap turns each convolution into one grouped
convolution over the K copies, so the GPU sees K times the work per kernel. The model's own
tensors are never written. Memory: K copies of the moved weights, and K activations per batch.

`precision_context` fixes how float32 work is done: `float32` (IEEE float32 everywhere, the
reference), `tf32` (TensorFloat-32 convolutions and matrix products on CUDA; plain float32
on a CPU) or `bf16` (bfloat16 autocast; the loss itself is still summed in float32).
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

PRECISIONS = ("float32", "tf32", "bf16")

#: Largest K tried by the automatic choice on a GPU; the shard's own point count also caps it.
MAX_AUTO_POINTS = 64


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed evaluation at `precision` (see the module docstring); restores the flags."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if device.type != "cuda":
        with torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext():
            yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    mode = "tf32" if precision == "tf32" else "ieee"
    conv.fp32_precision = matmul.fp32_precision = mode
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext():
            yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def _fused(layer: nn.Module, bn: nn.Module, value: Callable[[Tensor | None], Tensor | None]) -> tuple[Tensor, Tensor]:
    """A Conv2d/Linear + BatchNorm pair's fused weight and bias, with a leading K dimension wherever
    a source tensor has one (`value` gives each source's stacked or live tensor). The arithmetic is
    that of torch.nn.utils.fusion, so K = 1 matches FoldedNetwork.refresh()."""
    w, b = value(layer.weight), value(layer.bias)
    rm, rv = value(bn.running_mean), value(bn.running_var)
    bn_w, bn_b = value(bn.weight), value(bn.bias)
    if b is None:
        b = torch.zeros_like(rm)
    if bn_w is None:
        bn_w = torch.ones_like(rm)
    if bn_b is None:
        bn_b = torch.zeros_like(rm)
    if isinstance(layer, nn.Conv2d):
        rsqrt = torch.rsqrt(rv + bn.eps)
        fused_w = w * (bn_w * rsqrt)[..., None, None, None]
        fused_b = (b - rm) * rsqrt * bn_w + bn_b
    else:
        scale = bn_w * torch.rsqrt(rv + bn.eps)
        fused_w = w * scale.unsqueeze(-1)
        fused_b = (b - rm) * scale + bn_b
    return fused_w, fused_b


class StackedPoints:
    """The network at K points θ₀ + Σ_j c_kj d_j in one vmapped call, without touching the model.

    `module` is what runs: the model, or a FoldedNetwork's graph module whose fused layers
    (`triples` of (layer, bn, fused)) are recomputed here per point from the stacked weights.
    `tensors` are the model's tensors that the directions move, `origin` θ₀ and `directions`
    d_j (lists parallel to `tensors`). Raises ValueError when the moved tensors do not share
    one dtype and device (they are stacked into one matrix).
    """

    def __init__(self, module: nn.Module, tensors: Sequence[Tensor], origin: Sequence[Tensor],
                 directions: Sequence[Sequence[Tensor]], triples: Sequence[tuple[nn.Module, nn.Module, nn.Module]] = ()):
        if len({(t.dtype, t.device) for t in origin}) != 1 or not origin[0].is_floating_point():
            raise ValueError("the moved tensors must share one floating dtype and device to be stacked")
        self.module = module
        self.shapes = [t.shape for t in origin]
        self.sizes = [t.numel() for t in origin]
        self.origin = torch.cat([t.reshape(-1) for t in origin])
        self.directions = torch.stack([torch.cat([d.reshape(-1) for d in ds]) for ds in directions])
        self._index = {id(t): i for i, t in enumerate(tensors)}
        fused_of = {}
        for layer, bn, fused in triples:
            fused_of[id(fused.weight)] = (layer, bn, 0)
            fused_of[id(fused.bias)] = (layer, bn, 1)
        # (name in `module`, index into the stacked tensors) or (name, (layer, bn, 0 weight | 1 bias))
        self._moved: list[tuple[str, int]] = []
        self._fused: list[tuple[str, tuple[nn.Module, nn.Module, int]]] = []
        named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
        for name, t in named:
            if id(t) in fused_of:
                self._fused.append((name, fused_of[id(t)]))
            elif id(t) in self._index:
                self._moved.append((name, self._index[id(t)]))

    def weights(self, coeffs: Tensor) -> dict[str, Tensor]:
        """The module's tensors that differ between the K points `coeffs` (K, directions), each (K, ...)."""
        k = coeffs.shape[0]
        flat = torch.addmm(self.origin, coeffs.to(self.origin), self.directions)
        stacked = [part.view(k, *shape) for part, shape in zip(flat.split(self.sizes, 1), self.shapes)]
        out = {name: stacked[i] for name, i in self._moved}

        def value(t: Tensor | None) -> Tensor | None:
            return stacked[self._index[id(t)]] if t is not None and id(t) in self._index else t

        cache: dict[int, tuple[Tensor, Tensor]] = {}
        for name, (layer, bn, which) in self._fused:
            if id(layer) not in cache:
                cache[id(layer)] = _fused(layer, bn, value)
            t = cache[id(layer)][which]
            out[name] = t if t.dim() > (layer.weight.dim() if which == 0 else 1) else t.expand(k, *t.shape)
        return out

    def sums(self, weights: dict[str, Tensor], x: Tensor, y: Tensor, loss_fn: Callable, correct: Callable) -> Tensor:
        """(K, 2) float64: loss × batch size and correct predictions per point, for one batch."""
        def one(w: dict[str, Tensor]) -> Tensor:
            out = functional_call(self.module, w, (x,))
            return torch.stack([loss_fn(out, y).double() * len(y), correct(out, y)])
        return vmap(one)(weights)


def choose_points_per_call(run: Callable[[int], None], device: torch.device, limit: int = MAX_AUTO_POINTS,
                           log: Callable[[str], None] = print) -> int:
    """K for a GPU: the fastest of 1, 2, 4, ... points per call on one batch, within half the free memory.

    `run(k)` evaluates one batch at k points. The memory of one point is measured at k = 1 and
    bounds k; then each k is timed once after a warm-up (which also lets cuDNN pick its kernels).
    The smallest k within 3 % of the best rate wins (less memory, shorter resumable steps).
    """
    if device.type != "cuda" or limit <= 1:
        return 1
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run(1)
    torch.cuda.synchronize(device)
    per_point = max(torch.cuda.max_memory_allocated(device) - base, 1)
    free, _ = torch.cuda.mem_get_info(device)
    cap = max(1, min(limit, int(0.5 * free // per_point)))
    rates: dict[int, float] = {}
    k = 1
    while k <= cap:
        try:
            run(k)
            torch.cuda.synchronize(device)
            tic = time.perf_counter()
            run(k)
            torch.cuda.synchronize(device)
        except torch.OutOfMemoryError:  # the estimate was short (cuDNN workspaces): keep the K that fitted
            torch.cuda.empty_cache()
            break
        rates[k] = k / (time.perf_counter() - tic)
        k *= 2
    if not rates:
        log("points per call: 1 (out of memory at one point per call)")
        return 1
    best = max(rates.values())
    chosen = min(k for k, r in rates.items() if r >= 0.97 * best)
    log(f"points per call: {chosen} (timed on one batch: " + ", ".join(f"K={k} {r:.1f} pts/s" for k, r in rates.items())
        + f"; memory allows up to {cap})")
    return chosen
