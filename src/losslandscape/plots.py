"""Figures drawn from the stage outputs (HDF5 and TSV files), written as PDF and PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: jobs run without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_path  # noqa: E402
from .surface import read_surface  # noqa: E402

CONTOUR_LEVELS = np.arange(0.1, 10.0, 0.5)  # the paper's: 0.1 to 10 in steps of 0.5


def save(fig, out_png: str | Path) -> None:
    """Write `fig` as PNG and, beside it, PDF; each file appears only once complete."""
    out_png = Path(out_png)
    for path in (out_png, out_png.with_suffix(".pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)


def trajectory_figure(pca_path: str | Path, surface_path: str | Path, out_png: str | Path) -> None:
    """Appendix B: the optimiser's path over the loss contours of its PCA plane, and the same path
    projected onto two random filter-normalised directions (where it barely moves)."""
    pca, plane = read_surface(pca_path), read_surface(surface_path)
    shares = pca["attrs"]["explained_variance_ratio"]
    run = pca["attrs"]["run"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    x, y, z = plane["xcoordinates"], plane["ycoordinates"], np.ma.masked_invalid(plane["train_loss"])
    levels = np.unique(np.concatenate([[z.min()], np.quantile(z.compressed(), np.linspace(0.02, 0.98, 15))]))
    contours = left.contour(x, y, z, levels=levels, cmap="viridis", linewidths=0.8)
    left.clabel(contours, fontsize=6, fmt="%.2g")
    _path(left, pca["path_x"], pca["path_y"], pca["epochs"])
    left.set_xlabel(f"1st PCA component: {100 * shares[0]:.1f} %")
    left.set_ylabel(f"2nd PCA component: {100 * shares[1]:.1f} %")
    left.set_title(f"{run}: path on the PCA plane (train loss contours)", fontsize=9)
    _path(right, pca["random_path_x"], pca["random_path_y"], pca["epochs"])
    extent = max(np.ptp(pca["path_x"]), np.ptp(pca["path_y"])) / 2
    right.set_xlim(-extent * 1.2, extent * 1.2)
    right.set_ylim(-extent * 1.2, extent * 1.2)
    right.set_xlabel("random direction 1 (filter-normalised)")
    right.set_ylabel("random direction 2")
    right.set_title("the same path on two random directions (same scale)", fontsize=9)
    save(fig, out_png)


def _path(ax, px: np.ndarray, py: np.ndarray, epochs: np.ndarray) -> None:
    ax.plot(px, py, "-", color="tab:red", linewidth=1.2)
    ax.scatter(px, py, c=epochs, cmap="autumn", s=14, zorder=3)
    ax.plot(px[0], py[0], "ks", markersize=5, label="initialisation")
    ax.plot(px[-1], py[-1], "k*", markersize=10, label="final")
    ax.legend(fontsize=7, loc="best")
