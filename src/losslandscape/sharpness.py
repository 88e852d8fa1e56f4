"""Sharpness and flatness measures read off filter-normalised loss surfaces.

Li et al. (2018) argue that, once directions are filter-normalised, the *width* of a minimiser's
basin is comparable across networks and correlates with generalisation: flatter minimisers
(wider 0.1-level contour, smaller curvature) have lower test error.  This module turns a
computed surface (1D slice or 2D plane, centred on the trained weights at coordinate 0) into
scalar measures that a figure stage can correlate with test error:

* curvature: a least-squares quadratic fit around the centre, so that one noisy grid point does
  not dominate (finite differences would) and non-finite evaluations can simply be left out;
* flat width / area: the extent of the connected region around the centre where the loss stays
  within ``threshold`` of the centre's loss, i.e. the inside of the paper's 0.1-level contour.

Everything is relative to the grid point nearest the origin, *not* to the global minimum of the
surface: the surface is a picture of the neighbourhood of one particular minimiser, and a deeper
basin elsewhere on the plane belongs to some other solution.

Grids may be in any order (they are sorted first); the 2D loss is laid out ``loss[iy, ix]``
(rows follow ``y``), as ``numpy.meshgrid(x, y)`` produces, and a shape that does not match is
rejected rather than silently transposed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = [
    "curvature_1d",
    "curvature_2d",
    "flat_region_1d",
    "flat_width_1d",
    "flat_area_2d",
    "summarise",
]

# Points whose distance from the origin exceeds the radius by only float round-off (e.g. the
# grid point 2*h asked for with radius=2*h) are still taken as inside.
_RADIUS_RTOL = 1e-9

_CURV_2D_KEYS = ("hessian_xx", "hessian_yy", "hessian_xy", "eig_max", "eig_min", "mean_curvature")


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _axis(coords: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted 1D coordinate array and the permutation that sorts it.

    Duplicate coordinates are refused: they make "the grid point nearest 0" and the spacing
    ambiguous.
    """
    c = np.asarray(coords, dtype=float)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{name} must be a non-empty 1D array, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name} contains non-finite coordinates")
    order = np.argsort(c, kind="stable")
    c = c[order]
    if np.any(np.diff(c) <= 0):
        raise ValueError(f"{name} has duplicate coordinates")
    return c, order


def _prepare_1d(x: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs, order = _axis(x, "x")
    L = np.asarray(loss, dtype=float)
    if L.shape != xs.shape:
        raise ValueError(f"loss has shape {L.shape}, expected {xs.shape} to match x")
    return xs, L[order]


def _prepare_2d(x: np.ndarray, y: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ox = _axis(x, "x")
    ys, oy = _axis(y, "y")
    L = np.asarray(loss, dtype=float)
    expected = (ys.size, xs.size)
    if L.shape != expected:
        hint = " (it looks transposed: the layout is loss[iy, ix])" if L.shape == expected[::-1] else ""
        raise ValueError(f"loss has shape {L.shape}, expected (len(y), len(x)) = {expected}{hint}")
    return xs, ys, L[np.ix_(oy, ox)]


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return t


def _centre_index(coords: np.ndarray) -> int:
    """Index of the grid point nearest 0: where the surface's minimiser sits."""
    return int(np.argmin(np.abs(coords)))


def _uniform_spacing(coords: np.ndarray, name: str) -> float:
    """Grid spacing of a uniform axis; a single point has no spacing (nan)."""
    if coords.size < 2:
        return float("nan")
    d = np.diff(coords)
    h = (coords[-1] - coords[0]) / (coords.size - 1)
    if not np.allclose(d, h, rtol=1e-6, atol=0.0):
        raise ValueError(f"{name} is not uniformly spaced; a cell area dx*dy per point needs a uniform grid")
    return float(h)


def _radius_mask(dist: np.ndarray, radius: float) -> np.ndarray:
    r = float(radius)
    if not (math.isfinite(r) and r >= 0):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    return dist <= r * (1 + _RADIUS_RTOL) + 1e-15


# --------------------------------------------------------------------------------------------
# Curvature
# --------------------------------------------------------------------------------------------


def curvature_1d(x: np.ndarray, loss: np.ndarray, radius: float | None = None) -> float:
    """Second derivative of the loss at the centre, from a least-squares quadratic fit.

    Fits ``a + b x + c x**2`` and returns ``2c``.  The fit uses the points with ``|x| <= radius``
    or, by default, the 5 grid points nearest 0 (2 on each side of the centre, fewer at an edge):
    a local fit measures the curvature *of this minimiser*, and least squares tolerates noise in
    individual evaluations.  Non-finite losses (diverged evaluations) are dropped from the fit;
    with fewer than 3 finite points a quadratic is undetermined and the result is ``nan``.
    """
    xs, L = _prepare_1d(x, loss)
    if radius is None:
        i0 = _centre_index(xs)
        sel = np.zeros(xs.size, dtype=bool)
        sel[max(i0 - 2, 0): i0 + 3] = True
    else:
        sel = _radius_mask(np.abs(xs), radius)
    sel &= np.isfinite(L)
    if sel.sum() < 3:
        return float("nan")
    xf = xs[sel]
    A = np.column_stack([np.ones_like(xf), xf, xf**2])
    coef, _, rank, _ = np.linalg.lstsq(A, L[sel], rcond=None)
    if rank < 3:
        return float("nan")
    return float(2.0 * coef[2])


def curvature_2d(x: np.ndarray, y: np.ndarray, loss: np.ndarray, radius: float | None = None) -> dict:
    """Hessian of the loss at the centre of a 2D surface, from a least-squares quadratic fit.

    Fits ``a + b x + c y + (1/2) [x y] H [x y]^T`` (six parameters) to the points within
    Euclidean distance ``radius`` of the origin or, by default, to the 5x5 patch around the grid
    point nearest (0, 0) (clipped at the edges).  ``loss`` is laid out ``loss[iy, ix]``.

    Returns ``hessian_xx``, ``hessian_yy``, ``hessian_xy``, the eigenvalues ``eig_max`` and
    ``eig_min`` (principal curvatures: a negative ``eig_min`` flags a saddle-like direction, which
    the paper shows as non-convexity), and ``mean_curvature`` = trace/2.  Non-finite losses are
    dropped; if the remaining points cannot determine the quadratic, every value is ``nan``.
    """
    xs, ys, L = _prepare_2d(x, y, loss)
    X, Y = np.meshgrid(xs, ys)  # [iy, ix], same layout as L
    if radius is None:
        iy0, ix0 = _centre_index(ys), _centre_index(xs)
        sel = np.zeros(L.shape, dtype=bool)
        sel[max(iy0 - 2, 0): iy0 + 3, max(ix0 - 2, 0): ix0 + 3] = True
    else:
        sel = _radius_mask(np.hypot(X, Y), radius)
    sel &= np.isfinite(L)
    nan = {k: float("nan") for k in _CURV_2D_KEYS}
    if sel.sum() < 6:
        return nan
    xf, yf = X[sel], Y[sel]
    A = np.column_stack([np.ones_like(xf), xf, yf, 0.5 * xf**2, 0.5 * yf**2, xf * yf])
    coef, _, rank, _ = np.linalg.lstsq(A, L[sel], rcond=None)
    if rank < 6:
        return nan
    hxx, hyy, hxy = (float(v) for v in coef[3:6])
    eig_min, eig_max = (float(v) for v in np.linalg.eigvalsh(np.array([[hxx, hxy], [hxy, hyy]])))
    return {
        "hessian_xx": hxx,
        "hessian_yy": hyy,
        "hessian_xy": hxy,
        "eig_max": eig_max,
        "eig_min": eig_min,
        "mean_curvature": 0.5 * (hxx + hyy),
    }


# --------------------------------------------------------------------------------------------
# Flatness
# --------------------------------------------------------------------------------------------


def _crossing(x_in: float, l_in: float, x_out: float, l_out: float, level: float) -> float:
    """Where the loss crosses ``level`` between an inside and an outside grid point.

    Linear interpolation; if the outside value is non-finite nothing is known about the loss
    between the two points, so the region conservatively ends at the last inside point.
    """
    if not math.isfinite(l_out):
        return x_in
    return x_in + (level - l_in) / (l_out - l_in) * (x_out - x_in)


def flat_region_1d(x: np.ndarray, loss: np.ndarray, threshold: float = 0.1) -> tuple[float, float, bool]:
    """Ends of the threshold-level region around the centre: ``(left, right, censored)``.

    The region is the connected run of grid points, starting at the grid point nearest 0, where
    ``loss <= loss_centre + threshold`` (non-finite losses count as outside).  Its ends are placed
    by linear interpolation between the last inside and the first outside point.  If the run
    reaches an end of the grid the end is the grid's edge and ``censored`` is True: the true width
    is then only known to be at least ``right - left``.  A ``nan`` centre gives ``(nan, nan, False)``.
    """
    t = _check_threshold(threshold)
    xs, L = _prepare_1d(x, loss)
    i0 = _centre_index(xs)
    if not math.isfinite(L[i0]):
        return float("nan"), float("nan"), False
    level = L[i0] + t
    inside = np.isfinite(L) & (L <= level)

    censored = False
    j = i0
    while j + 1 < xs.size and inside[j + 1]:
        j += 1
    if j + 1 == xs.size:
        right, censored = float(xs[-1]), True
    else:
        right = _crossing(xs[j], L[j], xs[j + 1], L[j + 1], level)

    j = i0
    while j - 1 >= 0 and inside[j - 1]:
        j -= 1
    if j == 0:
        left, censored = float(xs[0]), True
    else:
        left = _crossing(xs[j], L[j], xs[j - 1], L[j - 1], level)
    return float(left), float(right), censored


def flat_width_1d(x: np.ndarray, loss: np.ndarray, threshold: float = 0.1) -> float:
    """Width of the region around the centre inside the threshold-level contour.

    This is the paper's flatness reading for a 1D filter-normalised slice: how far one can move
    from the minimiser before the loss rises by ``threshold``.  A censored region (one that runs
    into the grid's edge) gives the width up to the edge; see :func:`flat_region_1d`.
    """
    left, right, _ = flat_region_1d(x, loss, threshold)
    return float(right - left)


def flat_area_2d(x: np.ndarray, y: np.ndarray, loss: np.ndarray, threshold: float = 0.1) -> dict:
    """Area of the threshold-level basin around the centre of a 2D surface.

    Counts the grid points of the 4-connected component, containing the point nearest (0, 0), of
    ``{loss <= loss_centre + threshold}`` (non-finite losses are outside), each standing for one
    cell of area ``dx*dy``; a disconnected second basin, however deep, belongs to another
    minimiser and is not counted.  Returns ``flat_area``, the equivalent diameter
    ``flat_diameter = 2*sqrt(area/pi)`` (comparable with a 1D width), ``n_points``, ``censored``
    (the component touches the grid's boundary, so the area is a lower bound) and
    ``centre_loss``.  The grid must be uniformly spaced.
    """
    t = _check_threshold(threshold)
    xs, ys, L = _prepare_2d(x, y, loss)
    dx, dy = _uniform_spacing(xs, "x"), _uniform_spacing(ys, "y")
    iy0, ix0 = _centre_index(ys), _centre_index(xs)
    centre = float(L[iy0, ix0])
    if not math.isfinite(centre):
        return {"flat_area": float("nan"), "flat_diameter": float("nan"), "n_points": 0,
                "censored": False, "centre_loss": centre}
    inside = np.isfinite(L) & (L <= centre + t)
    labels, _ = ndimage.label(inside, structure=ndimage.generate_binary_structure(2, 1))
    component = labels == labels[iy0, ix0]
    n = int(component.sum())
    area = n * dx * dy
    censored = bool(component[0, :].any() or component[-1, :].any()
                    or component[:, 0].any() or component[:, -1].any())
    return {
        "flat_area": float(area),
        "flat_diameter": float(2.0 * math.sqrt(area / math.pi)) if math.isfinite(area) else float("nan"),
        "n_points": n,
        "censored": censored,
        "centre_loss": centre,
    }


# --------------------------------------------------------------------------------------------
# One row per surface
# --------------------------------------------------------------------------------------------


def summarise(surface: dict, threshold: float = 0.1, loss_key: str = "train_loss") -> dict:
    """All sharpness measures of one surface as a flat dict (one row of a correlation table).

    ``surface`` holds ``xcoordinates``, optionally ``ycoordinates``, and ``loss_key`` (default
    ``train_loss``: the paper reads flatness off the training loss) as a 1D array or a 2D array
    laid out ``[iy, ix]``.  The dimension follows the loss array; a missing/empty
    ``ycoordinates`` with a 2D loss, or ``ycoordinates`` with a 1D loss, is an error because the
    surface is then not what it claims to be.

    1D keys: ``curvature``, ``flat_width``, ``flat_left``, ``flat_right``, ``censored``.
    2D keys: ``hessian_xx``, ``hessian_yy``, ``hessian_xy``, ``eig_max``, ``eig_min``,
    ``mean_curvature``, ``flat_area``, ``flat_diameter``, ``censored``.
    Both: ``dim``, ``centre_loss``, ``threshold``.
    """
    t = _check_threshold(threshold)
    if "xcoordinates" not in surface or loss_key not in surface:
        raise KeyError(f"surface needs 'xcoordinates' and {loss_key!r}; has {sorted(surface)}")
    x = np.asarray(surface["xcoordinates"], dtype=float)
    y = surface.get("ycoordinates")
    if y is not None:
        y = np.asarray(y, dtype=float)
        if y.size == 0:
            y = None
    L = np.asarray(surface[loss_key], dtype=float)

    if L.ndim == 1:
        if y is not None:
            raise ValueError("surface has ycoordinates but a 1D loss")
        xs, Ls = _prepare_1d(x, L)
        left, right, censored = flat_region_1d(xs, Ls, t)
        return {
            "dim": 1,
            "curvature": curvature_1d(xs, Ls),
            "flat_width": float(right - left),
            "flat_left": left,
            "flat_right": right,
            "censored": censored,
            "centre_loss": float(Ls[_centre_index(xs)]),
            "threshold": t,
        }
    if L.ndim == 2:
        if y is None:
            raise ValueError("surface has a 2D loss but no ycoordinates")
        out: dict = {"dim": 2}
        out.update(curvature_2d(x, y, L))
        area = flat_area_2d(x, y, L, t)
        out.update({
            "flat_area": area["flat_area"],
            "flat_diameter": area["flat_diameter"],
            "censored": area["censored"],
            "centre_loss": area["centre_loss"],
            "threshold": t,
        })
        return out
    raise ValueError(f"{loss_key} must be 1D or 2D, got shape {L.shape}")
