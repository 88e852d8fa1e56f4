"""Several grid points per call (batched.StackedPoints through Evaluator.many) against one point at a time."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losslandscape.data import load_dataset, subset
from losslandscape.directions import model_weights, random_direction
from losslandscape.models import build_model
from losslandscape.surface import METRICS, Evaluator, compute_shard, compute_surface, gather, make_grid, read_surface

from test_surface import Killed, batches_of, trained_like

#: bf16 autocast against float32: the largest relative difference of a loss allowed on a tiny net
#: (bfloat16 keeps 8 significant bits, a relative step of 0.4 %; see benchmarks/README.md).
BF16_RTOL = 0.02


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", {"train_size": 300}, seed=0)
    return type(data)(**{**data.__dict__, "train": subset(data.train, 96, seed=0), "test": subset(data.test, 64, seed=0)})


SPECS = {
    "resnet": {"model": "resnet", "depth": 8, "width_scale": 0.25},
    "resnet-noshort": {"model": "resnet", "depth": 8, "width_scale": 0.25, "shortcut": False},
    "vgg9": {"model": "vgg9", "width_scale": 0.125},
    "densenet": {"model": "densenet121", "width_scale": 0.03},
}


def model_of(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return trained_like(build_model(SPECS[name], 1, 8, 10), seed)


def plane_of(model):
    weights = model_weights(model)
    return [random_direction(weights, seed=1), random_direction(weights, seed=2)]


def close(a: dict, b: dict, rtol: float) -> None:
    for m in a:
        np.testing.assert_allclose(a[m], b[m], rtol=rtol, atol=1e-7, err_msg=m)


@pytest.mark.parametrize("name", list(SPECS))
def test_batched_points_equal_point_by_point(digits, name):
    model = model_of(name)
    grid = make_grid(-1, 1, 3, -0.5, 0.5, 2)  # 6 points: K = 4 leaves a chunk of 2
    one = compute_surface(Evaluator(model, plane_of(model), batches_of(digits, 40)), grid)
    batched = Evaluator(model, plane_of(model), batches_of(digits, 40), points_per_call=4)
    assert batched.points_per_call == 4 and batched._stacked is not None
    close(compute_surface(batched, grid), one, rtol=1e-5)


def test_batched_without_folding_equals_point_by_point(digits):
    model = model_of("resnet")
    grid = make_grid(-1, 1, 4)
    one = compute_surface(Evaluator(model, plane_of(model)[:1], batches_of(digits), fold_bn=False), grid)
    batched = Evaluator(model, plane_of(model)[:1], batches_of(digits), fold_bn=False, points_per_call=3)
    close(compute_surface(batched, grid), one, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet", "densenet"])
def test_batched_interpolation_moves_batchnorm_statistics_too(digits, name):
    """Interpolation moves running means and variances: folded (ResNet) and unfolded (DenseNet) BNs."""
    a, b = model_of(name), model_of(name, seed=7)
    state_a, state_b = a.state_dict(), b.state_dict()
    direction = {n: state_b[n] - state_a[n] for n, t in state_a.items() if t.is_floating_point()}
    grid = make_grid(-0.5, 1.5, 5)
    one = compute_surface(Evaluator(a, [direction], batches_of(digits)), grid)
    close(compute_surface(Evaluator(a, [direction], batches_of(digits), points_per_call=5), grid), one, rtol=1e-5)


def test_batched_regression_loss_has_no_accuracy():
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randn(32, 3)
    model = torch.nn.Linear(5, 3)
    dirs = [{"weight": torch.randn(3, 5), "bias": torch.zeros(3)}, {"weight": torch.randn(3, 5), "bias": torch.randn(3)}]
    data = {"train": lambda: [(x[:20], y[:20]), (x[20:], y[20:])]}
    grid = make_grid(-1, 1, 3, -1, 1, 3)
    one = compute_surface(Evaluator(model, dirs, data, loss_fn=F.mse_loss, fold_bn=False), grid)
    batched = compute_surface(Evaluator(model, dirs, data, loss_fn=F.mse_loss, fold_bn=False, points_per_call=4), grid)
    close(batched, one, rtol=1e-6)
    assert np.isnan(batched["train_acc"]).all()


def test_shards_with_k_not_dividing_their_points_match_the_unbatched_surface(digits, tmp_path):
    model = model_of("resnet")
    grid = make_grid(-1, 1, 4, -1, 1, 3)  # 12 points, 5 shards: 3, 3, 2, 2, 2 points, K = 2 and 3
    whole = compute_surface(Evaluator(model, plane_of(model), batches_of(digits)), grid)
    paths = []
    for i in range(5):
        evaluator = Evaluator(model, plane_of(model), batches_of(digits), points_per_call=2 + i % 2)
        paths.append(tmp_path / f"shard-{i}.h5")
        compute_shard(evaluator, grid, i, 5, paths[-1], {"case": "k"})
    surface = gather(paths, grid, tmp_path / "s.h5", {"run": "test"})
    close(surface, whole, rtol=1e-5)


def test_killed_batched_shard_keeps_finished_chunks_and_resumes(digits, tmp_path):
    model = model_of("resnet")
    grid = make_grid(-1, 1, 7)
    evaluator = Evaluator(model, plane_of(model)[:1], batches_of(digits), points_per_call=3)
    compute_shard(evaluator, grid, 0, 1, tmp_path / "whole.h5", {"case": 1})

    class Dying:
        """Evaluator that dies on its second batched call, then counts the points it is asked for."""

        points_per_call = 3

        def __init__(self):
            self.calls, self.asked, self.die = 0, [], True

        def many(self, points):
            self.calls += 1
            if self.die and self.calls == 2:
                raise Killed
            self.asked += points
            return evaluator.many(points)

        def __call__(self, coords):
            self.asked.append(coords)
            return evaluator(coords)

    dying = Dying()
    with pytest.raises(Killed):
        compute_shard(dying, grid, 0, 1, tmp_path / "resumed.h5", {"case": 1})
    lines = (tmp_path / "resumed.h5.journal").read_text().splitlines()
    assert len(lines) == 1 + 3, "the first chunk's three points are in the journal"
    dying.die, dying.asked = False, []
    compute_shard(dying, grid, 0, 1, tmp_path / "resumed.h5", {"case": 1})
    assert len(dying.asked) == 4, "only the four unfinished points are computed again"
    whole, resumed = read_surface(tmp_path / "whole.h5"), read_surface(tmp_path / "resumed.h5")
    for m in METRICS:
        np.testing.assert_array_equal(whole[m], resumed[m])


def test_auto_points_per_call_is_one_on_a_cpu(digits):
    model = model_of("resnet")
    assert Evaluator(model, plane_of(model), batches_of(digits), points_per_call="auto").points_per_call == 1


class DataDependent(torch.nn.Module):
    """A network whose forward branches on a value (neither traceable by fx nor batchable by vmap)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if out.sum().item() > -1e9 else -out


def test_model_that_cannot_be_batched_falls_back_to_one_point_with_a_warning(digits):
    model = DataDependent().eval()
    dirs = [{"fc.weight": torch.randn(10, 64), "fc.bias": torch.zeros(10)}]
    grid = make_grid(-1, 1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fx cannot trace it either
        one = compute_surface(Evaluator(model, dirs, batches_of(digits)), grid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = Evaluator(model, dirs, batches_of(digits), points_per_call=3)
    with pytest.warns(UserWarning, match="one grid point at a time"):
        assert evaluator.points_per_call == 1
    close(compute_surface(evaluator, grid), one, rtol=0)


def test_bad_settings_are_refused(digits):
    model = model_of("resnet")
    with pytest.raises(ValueError, match="precision"):
        Evaluator(model, plane_of(model), batches_of(digits), precision="fp16")
    with pytest.raises(ValueError, match="points_per_call"):
        Evaluator(model, plane_of(model), batches_of(digits), points_per_call=0)


@pytest.mark.parametrize("per_call", [1, 3])
def test_bf16_surface_stays_within_its_stated_tolerance(digits, per_call):
    model = model_of("resnet")
    grid = make_grid(-1, 1, 3, -1, 1, 2)
    exact = compute_surface(Evaluator(model, plane_of(model), batches_of(digits)), grid)
    bf16 = compute_surface(Evaluator(model, plane_of(model), batches_of(digits), points_per_call=per_call,
                                     precision="bf16"), grid)
    for split in ("train", "test"):
        loss = f"{split}_loss"
        np.testing.assert_allclose(bf16[loss], exact[loss], rtol=BF16_RTOL)
        assert not np.array_equal(bf16[loss], exact[loss]), "bf16 is in effect"


class FakeGPU:
    """The CUDA calls of choose_points_per_call, with `per_point` bytes per point and a clock that
    advances by `cost(k)` seconds per call of k points (or runs out of memory above `oom_at`)."""

    def __init__(self, monkeypatch, cost, per_point=1 << 30, free=10 << 30, oom_at=None):
        import losslandscape.batched as batched

        self.now, self.cost, self.oom_at, self.peak = 0.0, cost, oom_at, 0
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(cuda, "memory_allocated", lambda device=None: 0)
        monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda device=None: None)
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(cuda, "mem_get_info", lambda device=None: (free, 2 * free))
        monkeypatch.setattr(cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(batched.time, "perf_counter", lambda: self.now)
        self.per_point = per_point

    def run(self, k):
        if self.oom_at is not None and k >= self.oom_at:
            raise torch.OutOfMemoryError("fake")
        self.peak = max(self.peak, k * self.per_point)
        self.now += self.cost(k)


@pytest.mark.parametrize("cost,oom_at,expected", [
    (lambda k: 0.01 + 0.001 * k, None, 4),  # batching pays: the largest K memory allows (10 GB / 2 / 1 GB -> 4)
    (lambda k: 0.01 * k, None, 1),          # it does not: the smallest K at the best rate
    (lambda k: 0.01 + 0.001 * k, 4, 2),     # out of memory at K = 4: the largest K that ran
])
def test_auto_points_per_call_takes_the_fastest_k_that_fits_in_memory(monkeypatch, cost, oom_at, expected):
    from losslandscape.batched import choose_points_per_call

    gpu = FakeGPU(monkeypatch, cost, oom_at=oom_at)
    lines = []
    assert choose_points_per_call(gpu.run, torch.device("cuda"), log=lines.append) == expected
    assert lines and "points per call" in lines[0]
