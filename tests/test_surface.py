"""Surfaces and interpolations against independent results: closed forms, invariances, direct evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losslandscape.data import load_dataset
from losslandscape.directions import model_weights, random_direction
from losslandscape.evaluate import evaluate
from losslandscape.models import build_model
from losslandscape.surface import (
    METRICS, Evaluator, compute_shard, compute_surface, gather, make_grid, read_surface, tensor_batches, write_surface,
)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", {"train_size": 300}, seed=0)
    return data


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A network with non-trivial weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return model.eval()


def batches_of(data, size=128):
    return {"train": tensor_batches(data.train.images, data.train.labels, size),
            "test": tensor_batches(data.test.images, data.test.labels, size)}


def resnet(width_scale=0.25, depth=20, seed=0):
    torch.manual_seed(seed)
    return trained_like(build_model({"model": "resnet", "depth": depth, "width_scale": width_scale}, 1, 8, 10), seed)


@pytest.mark.parametrize("fold_bn", [False, True])
def test_surface_centre_is_the_checkpoints_own_loss(digits, fold_bn):
    model = resnet()
    train_loss, train_acc = evaluate(model, digits.train)
    test_loss, test_acc = evaluate(model, digits.test)
    d = random_direction(model_weights(model), seed=1)
    values = Evaluator(model, [d], batches_of(digits), fold_bn=fold_bn)((0.0,))
    assert values["train_loss"] == pytest.approx(train_loss, rel=1e-5)
    assert values["test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert values["train_acc"] == pytest.approx(train_acc) and values["test_acc"] == pytest.approx(test_acc)


def test_folding_batchnorm_changes_no_loss_value(digits):
    model = resnet()
    d = random_direction(model_weights(model), seed=1)
    grid = make_grid(-1, 1, 5)
    plain = compute_surface(Evaluator(model, [d], batches_of(digits), fold_bn=False), grid)
    folded = compute_surface(Evaluator(model, [d], batches_of(digits), fold_bn=True), grid)
    for m in METRICS:
        np.testing.assert_allclose(folded[m], plain[m], rtol=1e-4)


def test_evaluation_moves_the_model_and_restores_it(digits):
    model = resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = random_direction(model_weights(model), seed=1)
    compute_surface(Evaluator(model, [d], batches_of(digits)), make_grid(-1, 1, 3))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_quadratic_model_surface_matches_its_closed_form():
    """Least squares: L(θ + αδ + βη) = ‖X(θ + αδ + βη) − y‖² / n exactly."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randn(64, 3)
    model = torch.nn.Linear(5, 3, bias=False)
    theta = model.weight.detach().clone()
    dx, dy = {"weight": torch.randn(3, 5)}, {"weight": torch.randn(3, 5)}
    grid = make_grid(-1, 1, 5, -2, 2, 4)
    mse = lambda out, target: F.mse_loss(out, target, reduction="mean")
    surface = compute_surface(Evaluator(model, [dx, dy], {"train": tensor_batches(x, y, 16)}, loss_fn=mse,
                                        fold_bn=False), grid)
    for iy, b in enumerate(grid.y):
        for ix, a in enumerate(grid.x):
            w = theta + a * dx["weight"] + b * dy["weight"]
            expected = ((x @ w.T - y) ** 2).mean().item()
            assert surface["train_loss"][iy, ix] == pytest.approx(expected, rel=1e-5)
    assert np.isnan(surface["train_acc"]).all(), "no accuracy for a regression"


def _scale_conv_before_bn(model, factor: float) -> None:
    """Multiply the stem conv (which feeds a BatchNorm) by `factor`, keeping the network's function."""
    with torch.no_grad():
        conv, bn = model.stem[0], model.stem[1]
        conv.weight.mul_(factor)
        bn.running_mean.mul_(factor)
        bn.running_var.mul_(factor**2)


@pytest.mark.parametrize("norm,invariant", [("filter", True), ("none", False)])
def test_filter_normalised_plot_is_invariant_to_weight_scale(digits, norm, invariant):
    """The paper's central argument (Section 4): rescaling a layer before BatchNorm changes nothing
    about the network, and nothing about the filter-normalised plot; un-normalised plots change."""
    grid = make_grid(-1, 1, 7)
    curves = []
    for factor in (1.0, 10.0):
        model = resnet()
        assert isinstance(model.stem[0], torch.nn.Conv2d) and isinstance(model.stem[1], torch.nn.BatchNorm2d)
        _scale_conv_before_bn(model, factor)
        d = random_direction(model_weights(model), seed=5, norm=norm)
        curves.append(compute_surface(Evaluator(model, [d], batches_of(digits)), grid)["train_loss"])
    assert curves[0][3] == pytest.approx(curves[1][3], rel=1e-4), "the network's function is unchanged"
    if invariant:
        np.testing.assert_allclose(curves[1], curves[0], rtol=1e-3)
    else:
        assert np.max(np.abs(curves[1] - curves[0]) / curves[0]) > 0.05


def test_sharded_equals_unsharded_and_non_square_grid_keeps_z_iy_ix(digits, tmp_path):
    model = resnet()
    weights = model_weights(model)
    plane = [random_direction(weights, seed=1), random_direction(weights, seed=2)]
    grid = make_grid(-1, 1, 4, -0.5, 0.5, 3)  # 3 rows (y) x 4 columns (x)
    evaluator = Evaluator(model, plane, batches_of(digits))
    whole = compute_surface(evaluator, grid)
    shards = [tmp_path / f"shard-{i}-of-3.h5" for i in range(3)]
    for i, path in enumerate(shards):
        compute_shard(evaluator, grid, i, 3, path, {"case": "test"})
    gather(shards, grid, tmp_path / "surface.h5", {"run": "test"})
    surface = read_surface(tmp_path / "surface.h5")
    assert surface["train_loss"].shape == (3, 4) and "iy, ix" in surface["attrs"]["layout"]
    for m in METRICS:
        np.testing.assert_array_equal(surface[m], whole[m])
    # Z[iy, ix] is the loss at (x[ix], y[iy]), checked point by point
    evaluator_values = evaluator((surface["xcoordinates"][1], surface["ycoordinates"][2]))
    assert surface["train_loss"][2, 1] == evaluator_values["train_loss"]


class Killed(Exception):
    pass


def test_killed_shard_resumes_only_unfinished_points_and_matches(digits, tmp_path):
    model = resnet()
    d = random_direction(model_weights(model), seed=1)
    evaluator = Evaluator(model, [d], batches_of(digits))
    grid = make_grid(-1, 1, 9)
    compute_shard(evaluator, grid, 0, 1, tmp_path / "whole.h5", {"case": 1})

    calls = []

    def dies_after_four(coords):
        if len(calls) == 4:
            raise Killed
        calls.append(coords)
        return evaluator(coords)

    with pytest.raises(Killed):
        compute_shard(dies_after_four, grid, 0, 1, tmp_path / "resumed.h5", {"case": 1})
    assert not (tmp_path / "resumed.h5").exists(), "no output that looks complete"
    # a torn last line, as a kill during the write leaves, is ignored
    with open(tmp_path / "resumed.h5.journal", "a") as fh:
        fh.write("7\t0.1\t")
    calls.clear()
    counted = lambda coords: calls.append(coords) or evaluator(coords)
    compute_shard(counted, grid, 0, 1, tmp_path / "resumed.h5", {"case": 1})
    assert len(calls) == 5, "only the five unfinished points are computed again"
    whole, resumed = read_surface(tmp_path / "whole.h5"), read_surface(tmp_path / "resumed.h5")
    for m in METRICS:
        np.testing.assert_array_equal(whole[m], resumed[m])


def test_journal_of_other_settings_is_not_reused(digits, tmp_path):
    grid = make_grid(-1, 1, 3)
    fake = lambda coords: {m: coords[0] for m in METRICS}
    with pytest.raises(Killed):
        compute_shard(lambda c: (_ for _ in ()).throw(Killed) if c[0] > 0 else fake(c), grid, 0, 1,
                      tmp_path / "s.h5", {"seed": 1})
    calls = []
    compute_shard(lambda c: calls.append(c) or fake(c), grid, 0, 1, tmp_path / "s.h5", {"seed": 2})
    assert len(calls) == 3


def test_overflowing_point_is_kept_flagged_and_the_grid_goes_on(tmp_path):
    grid = make_grid(-1, 1, 5)

    def loss_at(coords):
        value = np.inf if coords[0] == 1.0 else (np.nan if coords[0] == -1.0 else coords[0] ** 2)
        return {"train_loss": value, "train_acc": 10.0, "test_loss": value, "test_acc": 10.0}

    compute_shard(loss_at, grid, 0, 1, tmp_path / "p.h5", {})
    gather([tmp_path / "p.h5"], grid, tmp_path / "s.h5", {"run": "x"})
    surface = read_surface(tmp_path / "s.h5")
    assert np.isinf(surface["train_loss"][4]) and np.isnan(surface["train_loss"][0])
    assert surface["nonfinite"].tolist() == [True, False, False, False, True]
    assert surface["attrs"]["nonfinite_points"] == 2
    assert surface["train_loss"][2] == 0.0


def test_missing_shard_points_are_refused(tmp_path):
    grid = make_grid(-1, 1, 4)
    fake = lambda coords: {m: 1.0 for m in METRICS}
    compute_shard(fake, grid, 0, 2, tmp_path / "a.h5", {})
    with pytest.raises(ValueError, match="2 grid points are missing"):
        gather([tmp_path / "a.h5"], grid, tmp_path / "s.h5", {})


def test_grid_needs_two_points_and_a_range():
    with pytest.raises(ValueError, match="at least 2 points"):
        make_grid(-1, 1, 1)
    with pytest.raises(ValueError, match="below its maximum"):
        make_grid(1, -1, 5)


def test_interpolation_endpoints_are_each_models_own_loss(digits, tmp_path):
    """(1−α)θ_a + αθ_b over parameters and BatchNorm statistics: α = 0 is model a, α = 1 model b."""
    a, b = resnet(), resnet(seed=7)
    state_a, state_b = a.state_dict(), b.state_dict()
    direction = {n: state_b[n] - state_a[n] for n, t in state_a.items() if t.is_floating_point()}
    expected_b = evaluate(b, digits.test)
    expected_a = evaluate(a, digits.test)
    curve = compute_surface(Evaluator(a, [direction], batches_of(digits)), make_grid(0, 1, 3))
    assert curve["test_loss"][0] == pytest.approx(expected_a[0], rel=1e-5)
    assert curve["test_loss"][2] == pytest.approx(expected_b[0], rel=1e-4)
    assert curve["test_acc"][2] == pytest.approx(expected_b[1])
