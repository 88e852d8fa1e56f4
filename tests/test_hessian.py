"""Hessian eigenvalues against independent results: a dense autograd Hessian, finite differences, convexity."""

from __future__ import annotations

import copy
import math

import h5py
import numpy as np
import pytest
import torch
from scipy.sparse.linalg import aslinearoperator
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from losslandscape.hessian import (
    HESSIAN_METRICS, HessianEvaluator, extreme_eigenvalues, hessian_weights, hvp_operator,
)
from losslandscape.surface import compute_shard, make_grid, tensor_batches

TIGHT = 1e-8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny products: threads only add overhead, and other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_net(seed: int = 0) -> nn.Module:
    """conv(1→4) + BN + ReLU + linear(64→3): 228 weights, with non-trivial BN statistics, eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64, 3))
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(40, 1, 4, 4, generator=g), torch.randint(0, 3, (40,), generator=g)


def batches(data, size: int = 16):
    """40 samples in batches of 16, 16, 8: the mean must weight the short batch correctly."""
    return tensor_batches(*data, size)


def dense_hessian(net: nn.Module, data) -> np.ndarray:
    """The Hessian of the mean loss over all the data in one batch, in float64, by torch.autograd.functional."""
    net64 = copy.deepcopy(net).double()
    state = {**dict(net64.named_parameters()), **dict(net64.named_buffers())}
    names = [n for n, _ in hessian_weights(net64)]
    shapes = [state[n].shape for n in names]
    x, y = data

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = flat.split([s.numel() for s in shapes])
        weights = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return F.cross_entropy(functional_call(net64, {**state, **weights}, (x.double(),)), y)

    flat = torch.cat([state[n].detach().reshape(-1) for n in names])
    return torch.autograd.functional.hessian(loss, flat).numpy()


def test_hessian_weights_are_the_parameters_with_more_than_one_dimension():
    assert [n for n, _ in hessian_weights(small_net())] == ["0.weight", "4.weight"]


def test_hvp_equals_the_dense_hessian_of_the_mean_loss_over_unequal_batches(data):
    net = small_net()
    h = dense_hessian(net, data)
    op = hvp_operator(net, batches(data))
    assert op.shape == h.shape == (228, 228)
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.standard_normal(228)
        hv = op.matvec(v)
        assert hv.dtype == np.float64
        np.testing.assert_allclose(hv, h @ v, rtol=0, atol=1e-5 * np.abs(h @ v).max())
    assert op.products == 3


def test_cached_graph_gives_the_same_products_and_follows_weight_changes(data):
    net = small_net()
    plain, cached = hvp_operator(net, batches(data)), hvp_operator(net, batches(data), cache_graph=True)
    v = np.random.default_rng(1).standard_normal(228)
    for _ in range(2):
        np.testing.assert_allclose(cached.matvec(v), plain.matvec(v), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        net[0].weight.mul_(1.5)  # an in-place move: the cached graph must be rebuilt
    np.testing.assert_allclose(cached.matvec(v), plain.matvec(v), rtol=1e-5, atol=1e-7)


def test_hvp_matches_central_differences_of_gradients(data):
    net = small_net()
    op = hvp_operator(net, batches(data))
    net64 = copy.deepcopy(net).double()
    weights = [p for _, p in hessian_weights(net64)]
    x, y = data

    def grad() -> np.ndarray:
        g = torch.autograd.grad(F.cross_entropy(net64(x.double()), y), weights)
        return torch.cat([t.reshape(-1) for t in g]).numpy()

    v = np.random.default_rng(2).standard_normal(228)
    v /= np.linalg.norm(v)
    eps = 1e-4
    sizes = [w.numel() for w in weights]

    def shift(sign: float) -> None:
        with torch.no_grad():
            for w, d in zip(weights, torch.from_numpy(v).split(sizes)):
                w.add_(d.view_as(w), alpha=sign * eps)

    shift(+1)
    g_plus = grad()
    shift(-2)
    g_minus = grad()
    fd = (g_plus - g_minus) / (2 * eps)
    np.testing.assert_allclose(op.matvec(v), fd, rtol=0, atol=1e-3 * np.abs(fd).max())


def test_extreme_eigenvalues_equal_the_dense_spectrum(data):
    net = small_net()
    eigs = np.linalg.eigvalsh(dense_hessian(net, data))
    assert eigs[0] < 0 < eigs[-1]  # a non-convex point: both ends matter
    r = extreme_eigenvalues(hvp_operator(net, batches(data)), tol=TIGHT)
    assert r["max_eig"] == pytest.approx(eigs[-1], rel=1e-4)
    assert r["min_eig"] == pytest.approx(eigs[0], rel=1e-4)
    assert r["ratio"] == pytest.approx(abs(eigs[0] / eigs[-1]), rel=2e-4)
    assert r["max_converged"] == r["min_converged"] == 1.0
    assert r["max_vec"].shape == r["min_vec"].shape == (228,)


def test_positive_definite_spectrum_falls_back_to_smallest_algebraic():
    """All eigenvalues above 0.02·λ_max: the shifted largest-magnitude one is the top end, not λ_min."""
    op = aslinearoperator(np.diag(np.linspace(1.0, 2.0, 50)))
    r = extreme_eigenvalues(op, tol=TIGHT)
    assert r["max_eig"] == pytest.approx(2.0, rel=1e-8) and r["min_eig"] == pytest.approx(1.0, rel=1e-8)


def test_softmax_regression_is_convex(data):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    r = extreme_eigenvalues(hvp_operator(net, batches(data)))
    assert r["max_eig"] > 0
    assert r["min_eig"] >= -1e-6 * r["max_eig"]
    assert r["min_eig"] <= 1e-6 * r["max_eig"]  # softmax is invariant to a common shift of the logits


def test_a_point_that_does_not_converge_gives_nan_not_a_number(data):
    r = extreme_eigenvalues(hvp_operator(small_net(), batches(data)), tol=1e-14, maxiter=1)
    assert math.isnan(r["max_eig"]) and math.isnan(r["min_eig"]) and math.isnan(r["ratio"])
    assert r["max_converged"] == r["min_converged"] == 0.0
    assert r["max_vec"] is None and r["min_vec"] is None


def directions_for(net: nn.Module, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{n: torch.randn(p.shape, generator=g) * 0.1 for n, p in net.named_parameters()} for _ in range(2)]


def test_evaluator_at_origin_and_moved_equals_direct_computation_and_restores(data):
    net = small_net()
    origin = {n: p.detach().clone() for n, p in net.named_parameters()}
    dirs = directions_for(net, 4)
    ev = HessianEvaluator(net, dirs, batches(data), tol=TIGHT)

    at_origin = ev((0.0, 0.0))
    direct = extreme_eigenvalues(hvp_operator(small_net(), batches(data)), tol=TIGHT)
    assert set(at_origin) == set(HESSIAN_METRICS)
    for m in ("max_eig", "min_eig"):
        assert at_origin[m] == pytest.approx(direct[m], rel=1e-5)

    a, b = 0.7, -0.4
    moved = ev((a, b))
    by_hand = small_net()
    with torch.no_grad():
        for n, p in by_hand.named_parameters():
            p.copy_(origin[n] + a * dirs[0][n] + b * dirs[1][n])
    expected = extreme_eigenvalues(hvp_operator(by_hand, batches(data)), tol=TIGHT)
    for m in ("max_eig", "min_eig"):
        assert moved[m] == pytest.approx(expected[m], rel=1e-5)
    assert moved["max_converged"] == moved["min_converged"] == 1.0
    assert not torch.equal(net[0].weight, origin["0.weight"])  # left at the point

    ev.restore()
    for n, p in net.named_parameters():
        assert torch.equal(p, origin[n])


def test_evaluator_works_with_compute_shard(data, tmp_path):
    net = small_net()
    ev = HessianEvaluator(net, directions_for(net, 5), batches(data), cache_graph=True)
    grid = make_grid(-0.5, 0.5, 3, -0.5, 0.5, 2)
    out = tmp_path / "hessian.shard0.h5"
    compute_shard(ev, grid, 0, 1, out, {"test": 1}, desc="hessian", metrics=HESSIAN_METRICS)
    with h5py.File(out, "r") as f:
        assert list(f["indices"][()]) == list(range(6))
        assert set(HESSIAN_METRICS) <= set(f)
        values = {m: f[m][()] for m in HESSIAN_METRICS}
    assert np.all(values["max_converged"] == 1.0) and np.all(values["min_converged"] == 1.0)
    assert np.all(values["max_eig"] > 0) and np.all(values["min_eig"] <= values["max_eig"])
    np.testing.assert_allclose(values["ratio"], np.abs(values["min_eig"] / values["max_eig"]))
    # the cached graph followed every move: each point matches a fresh, uncached evaluation there
    fresh = HessianEvaluator(small_net(), directions_for(net, 5), batches(data), warm_start=False)
    for k in (0, 5):
        assert fresh(grid.coords(k))["max_eig"] == pytest.approx(values["max_eig"][k], rel=1e-3)


def test_cold_start_is_reproducible():
    """ARPACK starts from a seeded vector, so the same point gives the same numbers twice."""
    from scipy.sparse.linalg import aslinearoperator

    rng = np.random.default_rng(5)
    a = rng.normal(size=(60, 60))
    op = aslinearoperator(a + a.T)
    first, second = extreme_eigenvalues(op, tol=1e-3), extreme_eigenvalues(op, tol=1e-3)
    assert first["max_eig"] == second["max_eig"] and first["min_eig"] == second["min_eig"]
