"""Extreme eigenvalues of the loss Hessian over a plane in weight space (Section 7 of the paper).

The paper measures non-convexity by |λ_min / λ_max| of the Hessian at every grid point of a
random-direction plot: a convex-looking surface should have a negligible negative curvature
there. The Hessian is never formed: ARPACK's Lanczos (``scipy.sparse.linalg.eigsh``) only needs
Hessian-vector products, each one a double backward pass over the data.

Conventions, and where they differ from the reference tool (loss-landscape's ``hess_vec_prod.py``):

* the Hessian is that of the *mean* loss over all the data, whatever the batching; the reference
  sums per-batch mean losses, so its eigenvalues are about (number of batches) times larger and
  depend on the batch size;
* "weights" are the parameters with more than one dimension, as in the reference (conv and
  linear weights; no biases, no BatchNorm affine parameters), and BatchNorm uses its running
  statistics (eval mode);
* an eigenvalue whose Lanczos iteration does not converge is NaN with a ``*_converged`` flag of
  0, never the unconverged Ritz value, so a plot shows a hole rather than a wrong number.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor, nn

from .io import atomic_path
from .surface import Batches, PlaneMover

HESSIAN_METRICS = ("max_eig", "min_eig", "ratio", "max_converged", "min_converged")

#: The reference's shift for λ_min: every eigenvalue of H − sI below −0.49·λ_max outweighs the top one.
SHIFT = 0.51


def hessian_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Parameters with more than one dimension: the paper's (and the reference's) "weights"."""
    return [(name, p) for name, p in model.named_parameters() if p.dim() > 1]


class HVPOperator(LinearOperator):
    """v ↦ H v for the mean loss over `batches`, as a float64 operator for ARPACK.

    Each product is a double backward pass over the data: per batch, the gradient g of the batch's
    summed loss with ``create_graph=True``, then the gradient of <g, v>; the per-batch products are
    summed on the model's device and divided by the number of samples once. The vector crosses to
    the device once per product (in the weights' dtype, float32 for a normal model) and back once.

    With `cache_graph`, the graphs of g are built once and kept until the model's parameters or
    buffers change (their version counters move), so Lanczos' next products at the same point
    skip the forward pass and first backward (about a third of a product's time on a CPU); it
    holds every batch's double-backward graph in memory, so it is for data that fits.
    ``products`` counts the products, for benchmarks.
    """

    def __init__(
        self, model: nn.Module, batches: Batches, loss_fn: Callable = F.cross_entropy, cache_graph: bool = False
    ):
        self.model = model.eval()
        self.names, self.weights = (list(t) for t in zip(*hessian_weights(model)))
        self.sizes = [p.numel() for p in self.weights]
        self.batches, self.loss_fn, self.cache_graph = batches, loss_fn, cache_graph
        self.state = [*model.parameters(), *model.buffers()]
        self.cached: tuple[tuple[int, ...], list[tuple[tuple[Tensor, ...], int]]] | None = None
        self.products = 0
        n = sum(self.sizes)
        super().__init__(dtype=np.dtype(np.float64), shape=(n, n))

    def _gradients(self) -> Iterable[tuple[tuple[Tensor, ...], int]]:
        """Per batch: the gradient of its summed loss, differentiable, and its sample count."""
        for x, y in self.batches():
            loss = self.loss_fn(self.model(x), y) * len(y)  # the batch's sum: batches may differ in size
            yield torch.autograd.grad(loss, self.weights, create_graph=True), len(y)

    def _matvec(self, v: np.ndarray) -> np.ndarray:
        self.products += 1
        w0 = self.weights[0]
        flat = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1)).to(w0.device, w0.dtype)
        vs = [u.view_as(p) for u, p in zip(flat.split(self.sizes), self.weights)]
        total: list[Tensor] | None = None
        count = 0
        with torch.enable_grad():
            for grads, n in self._cached_gradients() if self.cache_graph else self._gradients():
                dot = torch.stack([(g * u).sum() for g, u in zip(grads, vs)]).sum()
                hv = torch.autograd.grad(dot, self.weights, retain_graph=self.cache_graph)
                if total is None:
                    total = list(hv)
                else:
                    torch._foreach_add_(total, hv)
                count += n
        if total is None:
            raise ValueError("the Hessian needs data: `batches()` yielded no batch")
        out = torch.cat([t.reshape(-1) for t in total]).div_(count)
        return out.to("cpu", torch.float64).numpy()

    def _cached_gradients(self) -> list[tuple[tuple[Tensor, ...], int]]:
        versions = tuple(t._version for t in self.state)
        if self.cached is None or self.cached[0] != versions:
            self.cached = None  # free the old graphs before building the new ones
            self.cached = (versions, list(self._gradients()))
        return self.cached[1]

    def _rmatvec(self, v: np.ndarray) -> np.ndarray:
        return self._matvec(v)  # the Hessian is symmetric


def hvp_operator(
    model: nn.Module, batches: Batches, loss_fn: Callable = F.cross_entropy, cache_graph: bool = False
) -> HVPOperator:
    """The Hessian of the mean loss w.r.t. `hessian_weights(model)`, at the model's current weights."""
    return HVPOperator(model, batches, loss_fn, cache_graph)


def _lanczos(op: LinearOperator, which: str, tol: float, maxiter: int | None, v0, ncv: int | None
             ) -> tuple[float, np.ndarray | None]:
    """One extreme eigenpair, or (NaN, None) when ARPACK does not converge."""
    if v0 is None:  # ARPACK's own start is random: a seeded one makes every map reproducible
        v0 = np.random.default_rng(0).standard_normal(op.shape[0])
    try:
        ncv = None if ncv is None else min(ncv, op.shape[0])
        vals, vecs = eigsh(op, k=1, which=which, tol=tol, maxiter=maxiter, v0=v0, ncv=ncv)
    except ArpackNoConvergence:
        return math.nan, None
    return float(vals[0]), vecs[:, 0]


def extreme_eigenvalues(
    op: LinearOperator,
    tol: float = 1e-3,
    maxiter: int | None = None,
    v0: np.ndarray | tuple[np.ndarray | None, np.ndarray | None] | None = None,
    ncv: int | None = None,
) -> dict:
    """λ_max and λ_min of a symmetric operator by Lanczos, and |λ_min / λ_max|.

    λ_max uses ``which="LA"`` rather than the reference's "LM": the two converge alike when the
    positive end dominates the spectrum (near a minimiser), but far from it a negative eigenvalue
    can be the largest in magnitude, and "LM" would then report it as λ_max and make the shift
    below negative. λ_min is the reference's: largest magnitude of H − sI with s = 0.51·λ_max,
    plus s; Lanczos finds extreme eigenvalues of the *largest* magnitude fastest, and after the
    shift the negative end is the larger whenever λ_min < 0.02·λ_max. If instead the shifted
    result comes out positive (all eigenvalues above 0.02·λ_max) or λ_max is not positive, λ_min
    comes from ``which="SA"`` on H itself.

    `v0` is a start vector for λ_max, or a pair (for λ_max, for λ_min), e.g. the previous grid
    point's eigenvectors; one vector is never reused for λ_min, since a Krylov space grown from
    (nearly) the top eigenvector barely reaches the bottom one. `ncv` is ARPACK's Krylov space size
    (None: scipy's default, 20; see ``HessianEvaluator`` for why smaller pays with a warm start).
    """
    v_max, v_min = v0 if isinstance(v0, tuple) else (v0, None)
    lam_max, vec_max = _lanczos(op, "LA", tol, maxiter, v_max, ncv)
    val, lam_min, vec_min = math.nan, math.nan, None
    if lam_max > 0:
        s = SHIFT * lam_max
        shifted = LinearOperator(op.shape, matvec=lambda v: _shifted(op, v, s), dtype=np.float64)
        val, vec_min = _lanczos(shifted, "LM", tol, maxiter, v_min, ncv)
        lam_min = val + s
    if not lam_max > 0 or val > 0:  # no usable shift, or LM found the top end of the spectrum
        lam_min, vec_min = _lanczos(op, "SA", tol, maxiter, v_min, ncv)
    both = not (math.isnan(lam_min) or math.isnan(lam_max))
    ratio = abs(lam_min / lam_max) if both and lam_max != 0 else math.nan
    return {"max_eig": lam_max, "min_eig": lam_min, "ratio": ratio,
            "max_converged": float(not math.isnan(lam_max)), "min_converged": float(not math.isnan(lam_min)),
            "max_vec": vec_max, "min_vec": vec_min}


def _shifted(op: LinearOperator, v: np.ndarray, s: float) -> np.ndarray:
    """(H − sI) v, with v in ARPACK's shape."""
    hv = op.matvec(v)
    return hv - s * np.asarray(v).reshape(hv.shape)


class HessianEvaluator(PlaneMover):
    """Eigenvalues of the Hessian at points θ* + αδ + βη of a plane, for ``compute_shard``.

    Like ``surface.Evaluator``, the model's own tensors are overwritten in place at each point (no
    copy per point) and stay there; ``restore()`` puts the origin back. With `warm_start`, Lanczos
    starts from the previous point's eigenvectors: neighbouring grid points have similar Hessians,
    so the start vector already lies close to the wanted eigenvector. ARPACK tests convergence only
    once its Krylov space (`ncv` vectors) is full, so with its default of 20 no start vector can
    save a product; 10 (the default here) took about 25% fewer products per point cold and 35%
    fewer warm than 20 on the benchmark's ResNet-20 (benchmarks/hessian.py). `cache_graph` is
    ``hvp_operator``'s: faster when every batch's graph fits in memory.
    """

    def __init__(
        self,
        model: nn.Module,
        directions: Sequence[dict[str, Tensor]],
        batches: Batches,
        tol: float = 1e-3,
        maxiter: int | None = None,
        warm_start: bool = True,
        loss_fn: Callable = F.cross_entropy,
        ncv: int | None = 10,
        cache_graph: bool = False,
    ):
        super().__init__(model, directions)
        self.op = hvp_operator(model, batches, loss_fn, cache_graph)
        self.tol, self.maxiter, self.warm_start, self.ncv = tol, maxiter, warm_start, ncv
        self.vectors: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        self.state_path: Path | None = None
        self.saved: dict | None = None

    def keep_warm_state(self, path: str | Path, key: str, order: Sequence[Sequence[float]]) -> None:
        """Save the warm-start vectors after every point to `path`, and pick them up again after a kill.

        A shard killed and rerun then starts its first unfinished point from the same vectors as an
        uninterrupted run would (the last finished point's, or, when the kill fell between saving
        this state and journaling the point, the ones that point itself started from), so the map
        is bit-identical to an uninterrupted one. `order` is the shard's points in computing order;
        `key` the shard's settings hash (a state of other settings is ignored).
        """
        self.state_path, self.key, self.order = Path(path), key, [tuple(map(float, c)) for c in order]
        if self.warm_start and self.state_path.exists():
            with np.load(self.state_path) as saved:
                if str(saved["key"]) == key:
                    self.saved = {name: saved[name] for name in saved.files}

    def _resume_vectors(self, coords: tuple[float, ...]) -> None:
        """On the first point after a restart: the vectors an uninterrupted run would start it from."""
        saved, self.saved = self.saved, None
        here = self.order.index(coords) if coords in self.order else -1
        at = tuple(saved["coords"].tolist())
        if at == coords:
            pick = ("before_max", "before_min")
        elif here > 0 and self.order[here - 1] == at:
            pick = ("after_max", "after_min")
        else:
            return
        self.vectors = tuple(saved[name] if saved[name].size else None for name in pick)

    def __call__(self, coords: Sequence[float]) -> dict[str, float]:
        """``HESSIAN_METRICS`` at the point `coords` (the model is left there)."""
        coords = tuple(map(float, coords))
        if self.saved is not None:
            self._resume_vectors(coords)
        self.move_to(coords)
        before = self.vectors
        v0 = self.vectors if self.warm_start else None
        result = extreme_eigenvalues(self.op, self.tol, self.maxiter, v0, self.ncv)
        if self.warm_start:  # keep the last converged vector when this point's did not converge
            self.vectors = (_first(result["max_vec"], self.vectors[0]), _first(result["min_vec"], self.vectors[1]))
            if self.state_path is not None:
                self._save_state(coords, before)
        return {m: float(result[m]) for m in HESSIAN_METRICS}

    def _save_state(self, coords: tuple[float, ...], before) -> None:
        empty = np.zeros(0)
        arrays = {"before_max": before[0], "before_min": before[1], "after_max": self.vectors[0],
                  "after_min": self.vectors[1]}
        with atomic_path(self.state_path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(self.key), coords=np.array(coords),
                     **{k: empty if v is None else v for k, v in arrays.items()})


def _first(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return a if a is not None else b
