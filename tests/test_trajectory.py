"""Trajectory PCA (appendix B) against constructions whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losslandscape.trajectory import pca_directions, path_matrix, plane_range, project


def _save_path(tmp_path, points: list[np.ndarray]) -> list:
    """Checkpoints whose weight tensor `w` (2D) follows `points`; the bias `b` moves too but is ignored."""
    paths = []
    for epoch, p in enumerate(points):
        state = {"w": torch.from_numpy(p.reshape(4, -1)).float(), "b": torch.full((3,), float(epoch))}
        path = tmp_path / f"epoch-{epoch:04d}.pt"
        torch.save({"state_dict": state, "epoch": epoch}, path)
        paths.append(path)
    return paths


def test_path_matrix_is_relative_to_the_final_weights_with_biases_zeroed(tmp_path):
    rng = np.random.default_rng(0)
    points = [rng.normal(size=40) for _ in range(4)]
    rows, final, epochs = path_matrix(_save_path(tmp_path, points), ["w", "b"])
    assert epochs == [0, 1, 2, 3]
    np.testing.assert_allclose(rows[:, :40], np.stack(points) - points[-1], atol=1e-6)
    assert np.all(rows[:, 40:] == 0), "bias and BN entries are zeroed"


def test_pca_of_a_path_in_a_plane_recovers_the_plane_and_its_variance():
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(500, 2)))
    t = np.linspace(0, 1, 30)
    coeffs = np.stack([3 * np.cos(2 * t), 0.5 * np.sin(3 * t)], axis=1)  # a curved path in a 2D plane
    rows = coeffs @ basis.T
    rows -= rows[-1]
    components, shares = pca_directions(rows)
    assert shares.sum() == pytest.approx(1.0, abs=1e-9), "a planar path is fully explained by two components"
    assert shares[0] > shares[1]
    # the components span the plane: projecting the basis onto them loses nothing
    np.testing.assert_allclose(np.linalg.norm(components @ basis, axis=0), [1, 1], atol=1e-8)
    coords = project(rows, components)
    np.testing.assert_allclose(np.linalg.norm(coords, axis=1), np.linalg.norm(rows, axis=1), rtol=1e-8)


def test_random_directions_barely_see_a_path_that_pca_captures():
    """The paper's point: in high dimensions a random direction is nearly orthogonal to the path."""
    rng = np.random.default_rng(2)
    dim = 20000
    drift = rng.normal(size=dim)
    rows = np.stack([(1 - t) * drift + 0.05 * rng.normal(size=dim) for t in np.linspace(0, 1, 20)])
    rows -= rows[-1]
    components, shares = pca_directions(rows)
    pca_extent = np.ptp(project(rows, components)[:, 0])
    random_extent = np.ptp(project(rows, rng.normal(size=(2, dim)))[:, 0])
    assert shares[0] > 0.9
    assert random_extent < 0.05 * pca_extent


def test_plane_range_covers_the_path_with_a_margin():
    coords = np.array([[0.0, 0.0], [2.0, -1.0], [1.0, 3.0]])
    grid = plane_range(coords, margin=0.1, points=7)
    assert grid["xmin"] == pytest.approx(-0.2) and grid["xmax"] == pytest.approx(2.2)
    assert grid["ymin"] == pytest.approx(-1.4) and grid["ymax"] == pytest.approx(3.4)
    assert grid["xnum"] == grid["ynum"] == 7


def test_pca_agrees_with_scikit_learn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    rows = rng.normal(size=(12, 300)) * np.linspace(5, 0.1, 300)
    rows -= rows[-1]
    components, shares = pca_directions(rows)
    reference = PCA(n_components=2).fit(rows)
    np.testing.assert_allclose(shares, reference.explained_variance_ratio_, rtol=1e-8)
    for ours, theirs in zip(components, reference.components_):
        assert abs(abs(ours @ theirs) - 1) < 1e-8, "the same axis up to sign"
