"""Panel primitives for the paper's figures: contours, 3D surfaces, 1D curves, Hessian heat maps.

Every primitive masks non-finite values (a point whose loss overflowed is grey or a gap, never a
number) and takes its levels and limits from one `Style`, so panels of a figure compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: jobs run without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize  # noqa: E402

from .io import atomic_path  # noqa: E402

CMAP = "viridis"
MASKED_GREY = "0.82"
LOSS_COLOR, ACC_COLOR = "tab:blue", "tab:red"


@dataclass(frozen=True)
class Style:
    """What every panel of a figure shares: contour levels (start, stop, step) and axis limits."""

    contour_levels: tuple[float, float, float] = (0.1, 10.0, 0.5)  # the paper's
    loss_max: float = 5.0  # top of a 1D plot's loss axis
    zmax: float = 10.0  # 3D surfaces are clipped here

    @property
    def levels(self) -> np.ndarray:
        start, stop, step = self.contour_levels
        return np.arange(start, stop, step)

    @property
    def norm(self) -> Normalize:
        return Normalize(self.levels[0], self.levels[-1])


def save(fig, out_png: str | Path) -> None:
    """Write `fig` as PNG and, beside it, PDF; each file appears only once complete."""
    out_png = Path(out_png)
    for path in (out_png, out_png.with_suffix(".pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)


def masked(values) -> np.ma.MaskedArray:
    """`values` with inf and NaN masked: drawn as gaps or grey, never as numbers."""
    return np.ma.masked_invalid(np.asarray(values, dtype=float))


def contour_panel(ax, x, y, z, style: Style, linewidths: float = 0.9):
    """Loss contours at the style's levels over a plane; non-finite points shaded grey."""
    z = masked(z)
    _shade_masked(ax, x, y, z)
    contours = None
    levels = style.levels
    if z.count() and z.min() < levels[-1] and z.max() > levels[0]:
        # a faint fill shows where the loss leaves the levels (above the top one: yellow)
        ax.contourf(x, y, z, levels=levels, cmap=CMAP, norm=style.norm, alpha=0.22, extend="both")
        contours = ax.contour(x, y, z, levels=levels, cmap=CMAP, norm=style.norm, linewidths=linewidths)
        ax.clabel(contours, contours.levels[:3], fontsize=6, fmt="%.1f")
    elif z.count():
        ax.text(0.5, 0.06, f"loss {z.min():.2g} to {z.max():.2g}: outside the levels",
                transform=ax.transAxes, ha="center", fontsize=6)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.tick_params(labelsize=7)
    _note_nonfinite(ax, z)
    return contours


def surface3d_panel(ax, x, y, z, style: Style):
    """A 3D loss surface clipped at `style.zmax` (non-finite points drawn at the clip).

    The axes must come from `fig.add_subplot(projection="3d")`: the reference tool's
    `Axes3D(fig)` is no longer attached to the figure on matplotlib >= 3.4, hence its blank plots.
    """
    grid_x, grid_y = np.meshgrid(x, y)
    z = np.asarray(z, dtype=float)
    clipped = np.where(np.isfinite(z), np.minimum(z, style.zmax), style.zmax)
    ax.plot_surface(grid_x, grid_y, clipped, cmap=CMAP, norm=Normalize(0, style.zmax), rstride=1, cstride=1,
                    linewidth=0.15, edgecolor=(0, 0, 0, 0.25), antialiased=True)
    ax.set_zlim(0, style.zmax)
    ax.view_init(elev=35, azim=-55)
    ax.tick_params(labelsize=6)
    ax.set_zlabel("loss", fontsize=7)


def curve_panel(ax, x, curves: dict, style: Style, xlabel: str):
    """Train (solid) and test (dashed) loss on the left axis, accuracy on a second axis."""
    ax.plot(x, masked(curves["train_loss"]), "-", color=LOSS_COLOR, label="train loss")
    ax.plot(x, masked(curves["test_loss"]), "--", color=LOSS_COLOR, label="test loss")
    ax.set_ylim(0, style.loss_max)
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("loss", color=LOSS_COLOR, fontsize=8)
    acc = ax.twinx()
    acc.plot(x, masked(curves["train_acc"]), "-", color=ACC_COLOR, label="train accuracy")
    acc.plot(x, masked(curves["test_acc"]), "--", color=ACC_COLOR, label="test accuracy")
    acc.set_ylim(0, 100)
    acc.set_ylabel("accuracy (%)", color=ACC_COLOR, fontsize=8)
    for axis in (ax, acc):
        axis.tick_params(labelsize=7)
    _note_nonfinite(ax, masked(curves["train_loss"]))
    return acc


def heatmap_panel(ax, x, y, values, vmax: float):
    """A map on the grid's points (non-converged / NaN points grey)."""
    cmap = plt.get_cmap(CMAP).with_extremes(bad=MASKED_GREY)
    mesh = ax.pcolormesh(x, y, masked(values), cmap=cmap, vmin=0, vmax=vmax, shading="nearest")
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    _note_nonfinite(ax, masked(values), what="not converged")
    return mesh


def empty_panel(ax, run: str, reason: str) -> None:
    """A panel whose data the pipeline did not build, saying why."""
    text = getattr(ax, "text2D", ax.text)  # 3D axes place 2D text with text2D
    text(0.5, 0.5, f"{run}\n{reason}", ha="center", va="center", fontsize=8, color="0.4",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def level_colorbar(fig, axes, style: Style, label: str = "loss (contour level)") -> None:
    """One colour bar for the contour levels every panel shares."""
    mappable = plt.cm.ScalarMappable(norm=style.norm, cmap=CMAP)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def path_panel(ax, px: np.ndarray, py: np.ndarray, epochs: np.ndarray) -> None:
    """An optimiser path: coloured by epoch, from the initialisation (square) to the end (star)."""
    ax.plot(px, py, "-", color="tab:red", linewidth=1.2)
    ax.scatter(px, py, c=epochs, cmap="autumn", s=12, zorder=3)
    ax.plot(px[0], py[0], "ks", markersize=5, label="initialisation")
    ax.plot(px[-1], py[-1], "k*", markersize=9, label="final")
    ax.legend(fontsize=6, loc="best")
    ax.tick_params(labelsize=7)


def _shade_masked(ax, x, y, z: np.ma.MaskedArray) -> None:
    mask = np.ma.getmaskarray(z)
    if mask.any():
        ax.pcolormesh(x, y, np.ma.masked_where(~mask, np.ones(z.shape)), cmap=ListedColormap([MASKED_GREY]),
                      shading="nearest")


def _note_nonfinite(ax, z: np.ma.MaskedArray, what: str = "inf/NaN") -> None:
    n = int(np.ma.getmaskarray(z).sum())
    if n:
        ax.text(0.02, 0.02, f"{n} points {what} (masked)", transform=ax.transAxes, va="bottom", fontsize=6,
                color="0.3", bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0})
