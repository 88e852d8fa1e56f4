"""The paper's figures (1-7, A.2, B), each assembled from the stage outputs of its panels' runs.

A figure gets a layout: rows of panels, each `{"run", "built", "files"}` where `files` maps what
the panel draws ("final", a plane name, "hessian", "pca", ...) to a path. A panel whose run was
not built is drawn empty with a note, so a partial selection still gives every figure's frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import plots
from .io import load_torch
from .plots import Style
from .surface import read_surface
from .train import batch_size

NOT_BUILT = "not built (not in `select`)"
NORM_TITLES = {"none": "no normalisation", "layer": "layer-normalised", "filter": "filter-normalised"}


@dataclass(frozen=True)
class RunInfo:
    """What a panel title says about a run, read from its final checkpoint."""

    run: str
    name: str  # the paper's name of the network, e.g. "ResNet-56-noshort"
    test_error: float  # percent
    weight_decay: float
    batch_size: int
    optimizer: str

    @property
    def recipe_label(self) -> str:
        return f"WD={self.weight_decay:g}, BS={self.batch_size}"

    @property
    def error_label(self) -> str:
        return f"test error {self.test_error:.2f} %"


def run_info(final_checkpoint: str | Path) -> RunInfo:
    ckpt = load_torch(final_checkpoint)
    recipe, model = ckpt["recipe"], ckpt["recipe"]["model"]
    if model["model"] == "resnet":
        name = f"ResNet-{model['depth']}" if model["width"] == 1 else f"WRN-{model['depth']}-{model['width']}"
        name += "" if model["shortcut"] else "-noshort"
    else:
        name = {"vgg9": "VGG-9", "densenet121": "DenseNet-121"}.get(model["model"], model["model"])
        if model["model"] == "vgg9" and recipe["optimizer"] != "sgd":
            name += f" ({recipe['optimizer']})"
    return RunInfo(run=recipe["run"], name=name, test_error=100.0 - ckpt["metrics"]["test_acc"],
                   weight_decay=recipe["weight_decay"], batch_size=batch_size(recipe, ckpt["data"]["train_size"]),
                   optimizer=recipe["optimizer"])


def draw(figure: str, layout: list[list[dict]], style: Style, out_png: str | Path) -> None:
    """Draw `figure` (a key of FIGURES) from its layout into out_png and the PDF beside it."""
    fig = FIGURES[figure](layout, style)
    plots.save(fig, out_png)


def _panels(layout):
    return [panel for row in layout for panel in row]


def _grid(layout, width=3.3, height=3.0, projection=None, extra_cols=0):
    """A figure with one axes per panel, rows and columns as in the layout."""
    nrows, ncols = len(layout), max(len(row) for row in layout) + extra_cols
    fig = plt.figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = [[fig.add_subplot(nrows, ncols, r * ncols + c + 1, projection=projection) for c in range(ncols)]
            for r in range(nrows)]
    for r, row in enumerate(layout):
        for c in range(len(row) + extra_cols, ncols):
            axes[r][c].set_visible(False)
    return fig, axes


def _built(layout, axes):
    """(axes, panel, RunInfo) of each built run of a layout; the panels of runs not built get a note."""
    for r, row in enumerate(layout):
        for c, panel in enumerate(row):
            if panel["built"]:
                yield axes[r][c], panel, run_info(panel["files"]["final"])
            else:
                plots.empty_panel(axes[r][c], panel["run"], NOT_BUILT)


def _columns(layout, axes):
    """For a one-row layout drawn as two rows of axes: (column, panel, top, bottom, RunInfo) of each
    built run; the columns of runs not built get an empty note."""
    (runs,) = layout
    for c, panel in enumerate(runs):
        top, bottom = axes[0][c], axes[1][c]
        if not panel["built"]:
            plots.empty_panel(top, panel["run"], NOT_BUILT)
            plots.empty_panel(bottom, panel["run"], NOT_BUILT)
            continue
        yield c, panel, top, bottom, run_info(panel["files"]["final"])


def _contour_of(ax, panel, plane, style, title_extra=""):
    """A panel's 2D contour plot (or its empty note); returns its RunInfo when drawn."""
    if not panel["built"]:
        plots.empty_panel(ax, panel["run"], NOT_BUILT)
        return None
    info = run_info(panel["files"]["final"])
    surface = read_surface(panel["files"][plane])
    plots.contour_panel(ax, surface["xcoordinates"], surface["ycoordinates"], surface["train_loss"], style)
    ax.set_aspect("equal")
    ax.set_title(f"{info.name}{title_extra}\n{info.error_label}", fontsize=9)
    return info


def fig1(layout, style: Style):
    """3D surfaces of the filter-normalised 2D plots (ResNet-56 without and with shortcuts)."""
    fig, axes = _grid(layout, width=4.2, height=3.8, projection="3d")
    for ax, panel, info in _built(layout, axes):
        surface = read_surface(panel["files"]["filter-2d"])
        plots.surface3d_panel(ax, surface["xcoordinates"], surface["ycoordinates"], surface["train_loss"], style)
        ax.set_title(f"({chr(97 + _panels(layout).index(panel))}) {info.name}\n{info.error_label}", fontsize=9)
    fig.suptitle("Filter-normalised 2D loss surfaces (training loss)", fontsize=10)
    return fig


def fig2(layout, style: Style):
    """Small vs large batch: interpolation, weight norm over training, final weight histograms."""
    fig, axes = plt.subplots(len(layout), 3, figsize=(14, 3.6 * len(layout)), layout="constrained", squeeze=False)
    letters = iter("abcdefghijkl")
    for r, (small, large) in enumerate(layout):
        interp_ax, norm_ax, hist_ax = axes[r]
        infos = {p["run"]: run_info(p["files"]["final"]) for p in (small, large) if p["built"]}
        if small["built"] and large["built"]:
            curve = read_surface(small["files"]["interpolation"])
            a, b = infos[small["run"]], infos[large["run"]]
            plots.curve_panel(interp_ax, curve["xcoordinates"], curve, style,
                              xlabel=f"α  (0: BS={a.batch_size}, 1: BS={b.batch_size})")
            interp_ax.legend(fontsize=6, loc="upper center")
            interp_ax.set_title(f"({next(letters)}) WD={a.weight_decay:g}: interpolation", fontsize=9)
        else:
            plots.empty_panel(interp_ax, f"{small['run']} → {large['run']}", NOT_BUILT)
            next(letters)
        for panel, color in ((small, "tab:blue"), (large, "tab:orange")):
            if not panel["built"]:
                continue
            info = infos[panel["run"]]
            label = f"BS={info.batch_size} ({info.error_label})"
            norms = pd.read_csv(panel["files"]["norms"], sep="\t")
            norm_ax.plot(norms.epoch, norms.weight_norm, color=color, label=label)
            hist = pd.read_csv(panel["files"]["histogram"], sep="\t")
            centres = (hist.left + hist.right) / 2
            hist_ax.plot(centres, hist.final, color=color, drawstyle="steps-mid", linewidth=1, label=label)
        norm_ax.set(xlabel="epoch", ylabel="L2 norm of the weights")
        norm_ax.set_title(f"({next(letters)}) weight norm during training", fontsize=9)
        hist_ax.set(xlabel="weight value", ylabel="count")
        hist_ax.set_title(f"({next(letters)}) histogram of the final weights", fontsize=9)
        for ax in (norm_ax, hist_ax):
            ax.tick_params(labelsize=7)
            if ax.lines:
                ax.legend(fontsize=7)
    return fig


def fig3(layout, style: Style):
    """Each VGG-9 minimiser's filter-normalised 1D plot (loss, accuracy) above its 2D contours."""
    fig, axes = plt.subplots(2, len(layout[0]), figsize=(3.6 * len(layout[0]), 6.6), layout="constrained",
                             squeeze=False)
    for c, panel, line_ax, plane_ax, info in _columns(layout, axes):
        curve = read_surface(panel["files"]["filter-1d"])
        plots.curve_panel(line_ax, curve["xcoordinates"], curve, style, xlabel="α (filter-normalised)")
        line_ax.set_title(f"{info.recipe_label}\n{info.error_label}", fontsize=9)
        if c == 0:
            line_ax.legend(fontsize=6, loc="upper center")
        surface = read_surface(panel["files"]["filter-2d"])
        plots.contour_panel(plane_ax, surface["xcoordinates"], surface["ycoordinates"], surface["train_loss"], style)
        plane_ax.set_aspect("equal")
    plots.level_colorbar(fig, axes[1], style)
    return fig


def fig4(layout, style: Style):
    """2D contours (top) and 3D surfaces (bottom) of the figure's runs."""
    (runs,) = layout
    fig = plt.figure(figsize=(4.2 * len(runs), 8), layout="constrained")
    tops = []
    for c, panel in enumerate(runs):
        top = fig.add_subplot(2, len(runs), c + 1)
        bottom = fig.add_subplot(2, len(runs), len(runs) + c + 1, projection="3d")
        tops.append(top)
        info = _contour_of(top, panel, "filter-2d", style)
        if info is None:
            plots.empty_panel(bottom, panel["run"], NOT_BUILT)
            continue
        surface = read_surface(panel["files"]["filter-2d"])
        plots.surface3d_panel(bottom, surface["xcoordinates"], surface["ycoordinates"], surface["train_loss"], style)
    plots.level_colorbar(fig, tops, style)
    return fig


def contour_grid(layout, style: Style):
    """Figs 5 and 6: the filter-normalised 2D contours of a grid of runs, on shared levels."""
    fig, axes = _grid(layout)
    for r, row in enumerate(layout):
        for c, panel in enumerate(row):
            _contour_of(axes[r][c], panel, "filter-2d", style)
    plots.level_colorbar(fig, [ax for row in axes for ax in row], style)
    return fig


def fig7(layout, style: Style):
    """|λ_min / λ_max| of the Hessian over the plane of Fig 5, one shared colour scale."""
    maps = {p["run"]: read_surface(p["files"]["hessian"]) for p in _panels(layout) if p["built"]}
    finite = [m["ratio"][np.isfinite(m["ratio"])] for m in maps.values()]
    finite = np.concatenate(finite) if finite else np.array([])
    vmax = float(min(1.0, finite.max())) if finite.size else 1.0
    fig, axes = _grid(layout)
    mesh = None
    for ax, panel, info in _built(layout, axes):
        hessian = maps[panel["run"]]
        mesh = plots.heatmap_panel(ax, hessian["xcoordinates"], hessian["ycoordinates"], hessian["ratio"], vmax)
        ax.set_title(f"{info.name}\nmedian |λmin/λmax| {np.nanmedian(hessian['ratio']):.3f}", fontsize=9)
    if mesh is not None:
        bar = fig.colorbar(mesh, ax=[ax for row in axes for ax in row], shrink=0.8, pad=0.02)
        bar.set_label("|λmin / λmax|  (blue: locally convex)", fontsize=8)
    return fig


def figA2(layout, style: Style):
    """The VGG-9 minimisers under no, layer and filter normalisation: per row, 1D curves of the
    runs grouped by weight decay (small vs large batch overlaid), then each run's 2D contours."""
    (runs,) = layout
    built = [p for p in runs if p["built"]]
    infos = {p["run"]: run_info(p["files"]["final"]) for p in built}
    decays = sorted({info.weight_decay for info in infos.values()})
    ncols = len(decays) + len(runs)
    fig, axes = plt.subplots(3, ncols, figsize=(3.0 * ncols, 8.4), layout="constrained", squeeze=False)
    for r, norm in enumerate(("none", "layer", "filter")):
        for c, decay in enumerate(decays):
            ax = axes[r][c]
            for panel in built:
                info = infos[panel["run"]]
                if info.weight_decay == decay:
                    curve = read_surface(panel["files"][f"{norm}-1d"])
                    ax.plot(curve["xcoordinates"], plots.masked(curve["train_loss"]),
                            label=f"BS={info.batch_size} ({info.error_label})")
            ax.set_ylim(0, style.loss_max)
            ax.set_title(f"WD={decay:g}, {NORM_TITLES[norm]}", fontsize=8)
            ax.set_xlabel("α", fontsize=8)
            ax.set_ylabel("train loss", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
        for c, panel in enumerate(runs, start=len(decays)):
            ax = axes[r][c]
            if not panel["built"]:
                plots.empty_panel(ax, panel["run"], NOT_BUILT)
                continue
            surface = read_surface(panel["files"][f"{norm}-2d"])
            plots.contour_panel(ax, surface["xcoordinates"], surface["ycoordinates"], surface["train_loss"], style)
            ax.set_title(f"{infos[panel['run']].recipe_label}\n{NORM_TITLES[norm]}", fontsize=8)
    plots.level_colorbar(fig, [row[-1] for row in axes], style)
    return fig


def figB(layout, style: Style):
    """Optimiser paths: on two random directions (top, where they barely move) and on the plane of
    their first two PCA components over its loss contours (bottom)."""
    fig, axes = plt.subplots(2, len(layout[0]), figsize=(3.4 * len(layout[0]), 6.8), layout="constrained",
                             squeeze=False)
    for _, panel, random_ax, pca_ax, info in _columns(layout, axes):
        pca, plane = read_surface(panel["files"]["pca"]), read_surface(panel["files"]["pca-surface"])
        shares = pca["attrs"]["explained_variance_ratio"]
        plots.path_panel(random_ax, pca["random_path_x"], pca["random_path_y"], pca["epochs"])
        extent = 0.6 * max(np.ptp(pca["path_x"]), np.ptp(pca["path_y"]))
        random_ax.set_xlim(-extent, extent)
        random_ax.set_ylim(-extent, extent)
        random_ax.set_title(f"{info.name}, {info.recipe_label}\nrandom directions (same scale)", fontsize=8)
        plots.contour_panel(pca_ax, plane["xcoordinates"], plane["ycoordinates"], plane["train_loss"], style)
        plots.path_panel(pca_ax, pca["path_x"], pca["path_y"], pca["epochs"])
        pca_ax.set_xlabel(f"1st PCA component: {100 * shares[0]:.1f} %", fontsize=8)
        pca_ax.set_ylabel(f"2nd PCA component: {100 * shares[1]:.1f} %", fontsize=8)
        pca_ax.set_title(f"PCA directions ({info.error_label})", fontsize=8)
    plots.level_colorbar(fig, axes[1], style)
    return fig


FIGURES = {"fig1": fig1, "fig2": fig2, "fig3": fig3, "fig4": fig4, "fig5": contour_grid, "fig6": contour_grid,
           "fig7": fig7, "figA2": figA2, "figB": figB}

