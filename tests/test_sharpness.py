"""Sharpness measures against closed forms on synthetic surfaces.

Every expected value below is computed independently of the module: curvatures of exact
quadratics, threshold crossings of parabolas and V-shapes solved by hand, ellipse areas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from losslandscape.sharpness import (
    curvature_1d,
    curvature_2d,
    flat_area_2d,
    flat_region_1d,
    flat_width_1d,
    summarise,
)

X = np.linspace(-1.0, 1.0, 51)  # spacing h = 0.04, contains 0
H = 0.04
KS = [0.1, 0.5, 2.0, 5.0]


def parabola(x, k, offset=3.0):
    return offset + 2.0 * k * x**2


def interp_bound(half_width: float, h: float) -> float:
    """Bound on the width lost to linear interpolation of a convex parabola's crossings.

    For L = L0 + 2k x^2 the chord between neighbouring grid points lies above L by at most
    h^2/8 * L'' = k h^2 / 2, so the interpolated crossing sits inside the true one (width is
    under-estimated) by at most (k h^2/2) / L'(x*-h) = h^2 / (8 (x* - h)) on each side.
    """
    assert half_width > h
    return 2 * h**2 / (8 * (half_width - h))


# ------------------------------------------------------------------------------ 1D curvature


@pytest.mark.parametrize("k", KS)
def test_curvature_1d_of_parabola_is_4k(k):
    assert curvature_1d(X, parabola(X, k)) == pytest.approx(4 * k, abs=1e-8)


def test_curvature_1d_default_fit_uses_only_5_points_nearest_zero():
    # quadratic on the 5 central points (|x| <= 2h), garbage beyond: only those 5 may be used
    L = np.where(np.abs(X) <= 2 * H + 1e-12, parabola(X, 1.5), 100.0 * np.sin(7 * X) + 50)
    assert curvature_1d(X, L) == pytest.approx(6.0, abs=1e-8)


def test_curvature_1d_radius_selects_points_with_abs_x_within_radius():
    L = np.where(np.abs(X) <= 0.2 + 1e-12, parabola(X, 0.7), 0.0)
    assert curvature_1d(X, L, radius=0.2) == pytest.approx(2.8, abs=1e-8)
    assert abs(curvature_1d(X, L, radius=0.6) - 2.8) > 0.1  # wider radius sees the drop


def test_curvature_1d_excludes_nonfinite_points_from_fit():
    L = parabola(X, 2.0)
    i0 = 25
    L[i0 + 1] = np.nan
    L[i0 - 2] = np.inf
    assert curvature_1d(X, L) == pytest.approx(8.0, abs=1e-8)


def test_curvature_1d_is_nan_with_fewer_than_3_finite_points():
    L = parabola(X, 2.0)
    L[[23, 24, 26]] = [np.nan, -np.inf, np.inf]
    assert math.isnan(curvature_1d(X, L))


def test_curvature_1d_at_grid_edge_uses_clipped_window():
    x = np.linspace(0.0, 1.0, 21)  # 0 is the first point: window is 3 points, one side
    assert curvature_1d(x, 1 + 0.5 * (x - 0.3) ** 2) == pytest.approx(1.0, abs=1e-8)


# ------------------------------------------------------------------------------ 1D flat width


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("t", [0.1, 0.05])
def test_flat_width_of_parabola_is_2_sqrt_t_over_2k_within_interpolation_bound(k, t):
    half = math.sqrt(t / (2 * k))
    true = 2 * half
    w = flat_width_1d(X, parabola(X, k), threshold=t)
    # chords of a convex function lie above it, so interpolation can only under-estimate
    assert -1e-12 <= true - w <= interp_bound(half, H) + 1e-12
    left, right, censored = flat_region_1d(X, parabola(X, k), threshold=t)
    assert not censored
    assert left == pytest.approx(-right, abs=1e-12)  # symmetric parabola, symmetric grid


def test_wider_parabola_has_larger_width_and_smaller_curvature():
    ks = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.15]  # increasingly flat
    widths = [flat_width_1d(X, parabola(X, k)) for k in ks]
    curvs = [curvature_1d(X, parabola(X, k)) for k in ks]
    assert all(np.diff(widths) > 0)
    assert all(np.diff(curvs) < 0)


def test_flat_region_of_asymmetric_v_is_exact():
    # L = -a x (x<0), b x (x>0): crossings at -t/a and t/b, linear so interpolation is exact
    a, b, t = 0.4, 1.3, 0.1
    L = np.where(X < 0, -a * X, b * X)
    left, right, censored = flat_region_1d(X, L, threshold=t)
    assert left == pytest.approx(-t / a, abs=1e-12)
    assert right == pytest.approx(t / b, abs=1e-12)
    assert not censored
    assert flat_width_1d(X, L, threshold=t) == pytest.approx(t / a + t / b, abs=1e-12)


def test_flat_region_of_shifted_parabola_is_relative_to_centre_not_minimum():
    # minimum at s; the centre is x=0, where L = 2k s^2; region |x - s| <= sqrt(s^2 + t/(2k))
    k, s, t = 1.0, 0.13, 0.1
    L = 2 * k * (X - s) ** 2
    r = math.sqrt(s**2 + t / (2 * k))
    left, right, censored = flat_region_1d(X, L, threshold=t)
    assert not censored
    assert 0 <= left - (s - r) <= interp_bound(r, H) / 2 + 1e-12
    assert 0 <= (s + r) - right <= interp_bound(r, H) / 2 + 1e-12
    assert curvature_1d(X, L) == pytest.approx(4 * k, abs=1e-8)
    assert summarise({"xcoordinates": X, "train_loss": L})["centre_loss"] == pytest.approx(2 * k * s**2, abs=1e-12)


def test_centre_is_grid_point_nearest_zero_when_zero_is_off_grid():
    x = np.linspace(-0.99, 1.01, 51)  # ..., -0.03, 0.01, 0.05, ...: centre is 0.01
    L = np.abs(x - 0.3)  # global minimum near 0.3, centre loss 0.29
    t = 0.1
    left, right, censored = flat_region_1d(x, L, threshold=t)
    # |x - 0.3| <= 0.29 + 0.1: linear segments on both sides of the crossings, so exact
    assert left == pytest.approx(0.3 - 0.39, abs=1e-12)
    assert right == pytest.approx(0.3 + 0.39, abs=1e-12)
    assert not censored
    assert summarise({"xcoordinates": x, "train_loss": L})["centre_loss"] == pytest.approx(0.29, abs=1e-12)


def test_flat_region_accepts_unsorted_coordinates():
    perm = np.random.default_rng(0).permutation(X.size)
    L = parabola(X, 0.5)
    assert flat_region_1d(X[perm], L[perm]) == flat_region_1d(X, L)
    assert curvature_1d(X[perm], L[perm]) == pytest.approx(2.0, abs=1e-8)


def test_flat_region_1d_censored_when_region_reaches_edge():
    L = parabola(X, 0.01)  # rises only 0.02 over the whole grid
    assert flat_region_1d(X, L, threshold=0.1) == (-1.0, 1.0, True)
    assert flat_width_1d(X, L, threshold=0.1) == pytest.approx(2.0)
    # one-sided: shallow to the right only
    L = np.where(X < 0, -1.0 * X, 0.05 * X)
    left, right, censored = flat_region_1d(X, L, threshold=0.1)
    assert censored and right == 1.0
    assert left == pytest.approx(-0.1, abs=1e-12)


def test_flat_region_1d_nonfinite_points_count_as_outside():
    L = parabola(X, 0.5)  # true half-width sqrt(0.1) ~ 0.316
    L[25 + 3] = np.nan  # x = 0.12, inside the contour
    L[25 - 4] = -np.inf  # x = -0.16, inside the contour, and "low" but not finite
    left, right, censored = flat_region_1d(X, L, threshold=0.1)
    assert right == pytest.approx(0.08, abs=1e-12)  # last finite inside point
    assert left == pytest.approx(-0.12, abs=1e-12)
    assert not censored


def test_flat_region_1d_excludes_disconnected_second_basin():
    # basin around 0, barrier at 0.4 (L=0.44 > 0.1), deeper basin at 0.8 with L=-0.2
    L = np.where(X < 0.4, 4 * X**2, 4 * (X - 0.8) ** 2 - 0.2)
    single = 4 * X**2
    assert flat_region_1d(X, L) == flat_region_1d(X, single)
    half = math.sqrt(0.1 / 4)
    assert 0 <= 2 * half - flat_width_1d(X, L) <= interp_bound(half, H) + 1e-12


def test_flat_region_1d_rejects_negative_threshold_and_mismatched_shapes():
    with pytest.raises(ValueError):
        flat_region_1d(X, parabola(X, 1.0), threshold=-0.1)
    with pytest.raises(ValueError):
        flat_width_1d(X, parabola(X, 1.0)[:-1])


# ------------------------------------------------------------------------------ 2D

A2, B2, C2 = 0.7, 2.3, 0.9  # a != b, c != 0: the axes are distinguishable and coupled
X2 = np.linspace(-1.5, 1.5, 41)  # 41 points, spacing 0.075
Y2 = np.linspace(-0.6, 0.9, 31)  # 31 points, spacing 0.05, different range


def quad2d(x, y, a=A2, b=B2, c=C2):
    XX, YY = np.meshgrid(x, y)  # [iy, ix]
    return 1 + a * XX**2 + b * YY**2 + c * XX * YY


def expected_hessian(a=A2, b=B2, c=C2):
    return np.array([[2 * a, c], [c, 2 * b]])


def test_curvature_2d_recovers_hessian_on_nonsquare_grid():
    L = quad2d(X2, Y2)
    assert L.shape == (31, 41)
    h = curvature_2d(X2, Y2, L)
    Hx = expected_hessian()
    assert h["hessian_xx"] == pytest.approx(Hx[0, 0], abs=1e-8)
    assert h["hessian_yy"] == pytest.approx(Hx[1, 1], abs=1e-8)
    assert h["hessian_xy"] == pytest.approx(Hx[0, 1], abs=1e-8)
    assert h["mean_curvature"] == pytest.approx(np.trace(Hx) / 2, abs=1e-8)


def test_curvature_2d_eigenvalues_match_eigvalsh():
    for a, b, c in [(A2, B2, C2), (1.0, -0.5, 0.3), (0.2, 0.2, 1.5)]:  # incl. saddles
        h = curvature_2d(X2, Y2, quad2d(X2, Y2, a, b, c))
        lo, hi = np.linalg.eigvalsh(expected_hessian(a, b, c))
        assert h["eig_min"] == pytest.approx(lo, abs=1e-8)
        assert h["eig_max"] == pytest.approx(hi, abs=1e-8)


def test_curvature_2d_rejects_transposed_layout():
    with pytest.raises(ValueError, match="transposed"):
        curvature_2d(X2, Y2, quad2d(X2, Y2).T)
    with pytest.raises(ValueError):
        flat_area_2d(X2, Y2, quad2d(X2, Y2).T)


def test_curvature_2d_reads_rows_as_y_on_square_grid():
    # on a square grid a transposed array has the right shape; only the values can tell
    g = np.linspace(-1, 1, 41)
    L = quad2d(g, g)
    assert curvature_2d(g, g, L)["hessian_xx"] == pytest.approx(2 * A2, abs=1e-8)
    assert curvature_2d(g, g, L.T)["hessian_xx"] == pytest.approx(2 * B2, abs=1e-8)


def test_curvature_2d_radius_and_nonfinite_points():
    XX, YY = np.meshgrid(X2, Y2)
    L = quad2d(X2, Y2)
    L = np.where(np.hypot(XX, YY) <= 0.3 + 1e-12, L, -5.0)  # quadratic only inside r=0.3
    L[12, 21] = np.nan  # a neighbour of the centre (iy=12 -> y=0, ix=20 -> x=0)
    L[13, 20] = np.inf
    h = curvature_2d(X2, Y2, L, radius=0.3)
    assert h["hessian_xx"] == pytest.approx(2 * A2, abs=1e-8)
    assert h["hessian_yy"] == pytest.approx(2 * B2, abs=1e-8)
    assert h["hessian_xy"] == pytest.approx(C2, abs=1e-8)
    assert abs(curvature_2d(X2, Y2, L, radius=1.0)["hessian_xx"] - 2 * A2) > 0.1


def test_curvature_2d_is_nan_when_underdetermined():
    L = quad2d(X2, Y2)
    L[10:15, 18:23] = np.nan  # the whole default 5x5 patch
    assert all(math.isnan(v) for v in curvature_2d(X2, Y2, L).values())


def test_flat_area_2d_matches_ellipse_area_on_fine_nonsquare_grid():
    # {a x^2 + b y^2 + c x y <= t} is an ellipse of area pi t / sqrt(det(H/2)) = 2 pi t / sqrt(det H)
    x = np.linspace(-0.8, 0.8, 321)
    y = np.linspace(-0.45, 0.55, 201)
    t = 0.1
    res = flat_area_2d(x, y, quad2d(x, y), threshold=t)
    area = 2 * math.pi * t / math.sqrt(np.linalg.det(expected_hessian()))
    assert res["flat_area"] == pytest.approx(area, rel=0.02)
    assert res["flat_diameter"] == pytest.approx(2 * math.sqrt(area / math.pi), rel=0.01)
    assert not res["censored"]
    assert res["centre_loss"] == pytest.approx(1.0)


def test_flat_area_2d_counts_cells_of_dx_dy():
    x = np.linspace(-1, 1, 11)  # dx = 0.2
    y = np.linspace(-1, 1, 21)  # dy = 0.1
    L = np.ones((21, 11))
    L[8:13, 4:7] = 0.0  # 5 x 3 block around the centre (iy=10, ix=5)
    res = flat_area_2d(x, y, L, threshold=0.1)
    assert res["n_points"] == 15
    assert res["flat_area"] == pytest.approx(15 * 0.2 * 0.1)
    assert not res["censored"]


def test_flat_area_2d_uses_4_connectivity():
    x = y = np.linspace(-1, 1, 11)
    L = np.ones((11, 11))
    L[5, 5] = 0.0
    L[6, 6] = 0.0  # touches the centre only diagonally
    assert flat_area_2d(x, y, L)["n_points"] == 1


def test_flat_area_2d_censored_when_touching_boundary():
    x = np.linspace(-0.3, 0.3, 31)
    y = np.linspace(-0.2, 0.2, 21)
    res = flat_area_2d(x, y, quad2d(x, y), threshold=0.1)  # ellipse extends beyond the grid
    assert res["censored"]
    assert not flat_area_2d(X2, Y2, quad2d(X2, Y2), threshold=0.1)["censored"]


def test_flat_area_2d_excludes_disconnected_second_basin():
    x = np.linspace(-1, 1, 201)
    y = np.linspace(-0.5, 0.5, 101)
    XX, YY = np.meshgrid(x, y)
    one = quad2d(x, y)
    second = 0.5 + 3 * ((XX - 0.7) ** 2 + YY**2)  # deeper basin (0.5 < 1) at (0.7, 0)
    # the first basin for x < 0.45, the second from x = 0.45 on; along x = 0.44 the first one's
    # minimum over y is 1 + (0.7 - 0.9^2/(4*2.3)) 0.44^2 = 1.118 > 1 + t: a barrier column
    L = np.where(XX < 0.445, one, second)
    assert (L[:, 144] > 1.1).all()
    assert L[50, 170] == pytest.approx(0.5) and L[50, 170] < L[50, 100]  # deeper than the centre
    assert (L[:, 145:] <= 1.1).sum() > 1000  # and a large region inside the level
    assert flat_area_2d(x, y, L)["flat_area"] == pytest.approx(flat_area_2d(x, y, one)["flat_area"])


def test_flat_area_2d_nonfinite_points_count_as_outside():
    x = np.linspace(-0.8, 0.8, 81)
    y = np.linspace(-0.5, 0.5, 51)
    L = quad2d(x, y)
    base = flat_area_2d(x, y, L)
    L[25, 22] = np.nan  # y=0, x=-0.36: inside (0.7*0.36^2 = 0.091 <= 0.1)
    L[27, 40] = -np.inf  # x=0, y=0.04: inside
    inside_before = quad2d(x, y)[[25, 27], [22, 40]] <= 1.1
    assert inside_before.all()
    res = flat_area_2d(x, y, L)
    dxdy = 0.02 * 0.02
    assert res["n_points"] == base["n_points"] - 2
    assert res["flat_area"] == pytest.approx(base["flat_area"] - 2 * dxdy)


# ------------------------------------------------------------------------------ summarise


def test_summarise_1d_surface():
    k = 0.5
    row = summarise({"xcoordinates": X, "train_loss": parabola(X, k)}, threshold=0.1)
    assert row["dim"] == 1
    assert row["curvature"] == pytest.approx(4 * k, abs=1e-8)
    assert row["flat_width"] == pytest.approx(flat_width_1d(X, parabola(X, k)))
    assert row["censored"] is False
    assert row["centre_loss"] == pytest.approx(3.0)
    assert row["threshold"] == 0.1
    assert {"curvature", "flat_width", "censored", "centre_loss", "threshold"} <= set(row)


def test_summarise_2d_surface():
    L = quad2d(X2, Y2)
    row = summarise({"xcoordinates": X2, "ycoordinates": Y2, "train_loss": L})
    assert row["dim"] == 2
    for key, val in curvature_2d(X2, Y2, L).items():
        assert row[key] == pytest.approx(val)
    area = flat_area_2d(X2, Y2, L)
    assert row["flat_area"] == pytest.approx(area["flat_area"])
    assert row["flat_diameter"] == pytest.approx(area["flat_diameter"])
    assert row["censored"] is False
    assert row["centre_loss"] == pytest.approx(1.0)
    assert row["threshold"] == 0.1


def test_summarise_rejects_inconsistent_dimensions():
    with pytest.raises(ValueError):
        summarise({"xcoordinates": X2, "train_loss": quad2d(X2, Y2)})
    with pytest.raises(ValueError):
        summarise({"xcoordinates": X, "ycoordinates": X, "train_loss": parabola(X, 1.0)})
    # ycoordinates stored as None / empty for a 1D surface is fine
    assert summarise({"xcoordinates": X, "ycoordinates": None, "train_loss": parabola(X, 1.0)})["dim"] == 1
