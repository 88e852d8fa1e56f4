"""Every figure of the paper, drawn from small synthetic stage outputs: real images with content."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import h5py
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from losslandscape import config as cfg
from losslandscape import figures, plots
from losslandscape.io import save_torch
from losslandscape.plots import Style
from losslandscape.surface import make_grid, write_surface
from losslandscape.vtp import write_vtp

STYLE = Style()
VGG = ["vgg_small", "vgg_large", "vgg_small_wd", "vgg_large_wd"]


def bowl(grid, sharpness: float, offset: float = 0.01) -> np.ndarray:
    """A quadratic bowl on the grid (1D or 2D, laid out [iy, ix])."""
    if grid.y is None:
        return offset + sharpness * grid.x**2
    xx, yy = np.meshgrid(grid.x, grid.y)
    return offset + sharpness * (xx**2 + 0.7 * yy**2)


def write_plane(path, grid, sharpness, nan_corner=False):
    loss = bowl(grid, sharpness)
    if nan_corner and grid.y is not None:
        loss[-1, -1] = np.inf  # an overflowed point: must be masked, not drawn
    acc = 100 * np.exp(-loss)
    write_surface(path, grid, {"train_loss": loss, "test_loss": 1.1 * loss, "train_acc": acc, "test_acc": 0.97 * acc},
                  {"run": path.parent.name})


def write_final(path, run, model, test_acc=95.0, weight_decay=5e-4, batch_size=32, batch_fraction=None):
    recipe = {"run": run, "model": model, "optimizer": "sgd", "weight_decay": weight_decay, "batch_size": batch_size,
              "batch_fraction": batch_fraction}
    save_torch({"recipe": recipe, "metrics": {"test_acc": test_acc}, "data": {"train_size": 1500}}, path)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """Stage outputs of a handful of runs: checkpoints, planes, Hessian maps, interpolations, PCA."""
    out = tmp_path_factory.mktemp("stage")
    resnets = {"r20": (20, True), "r56": (56, True), "r20n": (20, False), "r56n": (56, False)}
    runs = {name: {"model": "resnet", "depth": d, "width": 1, "shortcut": s} for name, (d, s) in resnets.items()}
    runs.update({name: {"model": "vgg9"} for name in VGG})
    line, plane = make_grid(-1, 1, 21), make_grid(-1, 1, 9, -1, 1, 7)  # non-square on purpose
    for i, (run, model) in enumerate(runs.items()):
        (out / run).mkdir()
        large = "large" in run
        write_final(out / run / "final.pt", run, model, test_acc=90.0 - i, weight_decay=5e-4 if "wd" in run else 0.0,
                    batch_fraction=0.16384 if large else None)
        for norm, scale in (("filter", 1.0), ("layer", 2.0), ("none", 300.0)):
            write_plane(out / run / f"{norm}-1d.h5", line, scale * (1 + i))
            write_plane(out / run / f"{norm}-2d.h5", plane, scale * (1 + i), nan_corner=True)
        ratio = np.abs(np.sin(np.add.outer(plane.y, plane.x) * (i + 1)))
        ratio[0, 0] = np.nan  # a point whose Lanczos did not converge
        write_surface(out / run / "hessian.h5", plane, {"ratio": ratio, "max_eig": 1 + ratio, "min_eig": -ratio}, {})
        epochs = np.arange(6)
        with h5py.File(out / run / "pca.h5", "w") as f:
            for name, values in {"epochs": epochs, "path_x": 3.0 - 0.6 * epochs, "path_y": np.sin(epochs),
                                 "random_path_x": 0.01 * epochs, "random_path_y": -0.01 * epochs}.items():
                f.create_dataset(name, data=values)
            f.attrs["explained_variance_ratio"] = [0.7, 0.2]
        write_plane(out / run / "pca-surface.h5", make_grid(-1, 4, 8, -2, 2, 6), 0.5)
        pd.DataFrame({"epoch": epochs, "weight_norm": 10 + epochs * (2 if large else 1)}).to_csv(
            out / run / "norms.tsv", sep="\t", index=False)
        edges = np.linspace(-1, 1, 41)
        pd.DataFrame({"left": edges[:-1], "right": edges[1:], "initial": 5, "final": np.exp(-edges[:-1] ** 2 * 9) * 100}
                     ).to_csv(out / run / "histogram.tsv", sep="\t", index=False)
    for a, b in (("vgg_small", "vgg_large"), ("vgg_small_wd", "vgg_large_wd")):
        alpha = make_grid(-0.5, 1.5, 41)
        loss = 0.05 + 3 * np.sin(np.pi * np.clip(alpha.x, 0, 1)) ** 2
        loss[alpha.x > 1.2] = np.nan  # negative BatchNorm variance when extrapolating: masked
        write_surface(out / a / "interpolation.h5", alpha, {"train_loss": loss, "test_loss": loss + 0.1,
                      "train_acc": 100 - 20 * loss, "test_acc": 95 - 20 * loss}, {})
    return out


def panel(stage, run, fig, built=True, row=None):
    if not built:
        return {"run": run, "built": False, "files": {}}
    files = {"final": stage / run / "final.pt", "norms": stage / run / "norms.tsv",
             "histogram": stage / run / "histogram.tsv", "hessian": stage / run / "hessian.h5",
             "pca": stage / run / "pca.h5", "pca-surface": stage / run / "pca-surface.h5"}
    files.update({p: stage / run / f"{p}.h5" for p in cfg.FIGURE_PLANES.get(fig, [])})
    if fig == "fig2" and row:
        files["interpolation"] = stage / row[0] / "interpolation.h5"
    return {"run": run, "built": True, "files": {k: str(v) for k, v in files.items()}}


LAYOUTS = {
    "fig1": [["r56n", "r56"]],
    "fig2": [["vgg_small", "vgg_large"], ["vgg_small_wd", "vgg_large_wd"]],
    "fig3": [VGG],
    "fig4": [["r56n", "r20"]],
    "fig5": [["r20", "r56"], ["r20n", "r56n"]],
    "fig6": [["r20", "r56"], ["r20n", "r56n"]],
    "fig7": [["r20", "r56"], ["r20n", "r56n"]],
    "figA2": [VGG],
    "figB": [VGG],
}


def drawn_fraction(png) -> float:
    """Share of pixels that are not (near) white: a blank figure scores ~0."""
    image = matplotlib.image.imread(png)[..., :3]
    return float((image.min(axis=-1) < 0.9).mean())


def panel_ink(png, box) -> float:
    """Ink inside a fractional box (x0, y0, x1, y1) of the image, from the top-left corner."""
    image = matplotlib.image.imread(png)[..., :3]
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    crop = image[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]
    return float((crop.min(axis=-1) < 0.9).mean())


@pytest.mark.parametrize("fig", list(LAYOUTS))
def test_every_figure_is_a_real_image_with_drawn_content(stage, tmp_path, fig):
    layout = [[panel(stage, run, fig, row=row) for run in row] for row in LAYOUTS[fig]]
    out = tmp_path / f"{fig}.png"
    figures.draw(fig, layout, STYLE, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert not list(tmp_path.glob(".*.part")), "no temporary file left behind"
    # the same frame with no run built (axes, titles, notes only) is the blank baseline
    frame = tmp_path / "frame.png"
    figures.draw(fig, [[panel(stage, run, fig, built=False) for run in row] for row in LAYOUTS[fig]], STYLE, frame)
    assert drawn_fraction(out) > 1.5 * drawn_fraction(frame) + 0.01, f"{fig} holds little beyond its frame"


def test_figures_cover_every_figure_of_the_paper():
    assert set(figures.FIGURES) == set(cfg.FIGURES_ALL) == {"fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7",
                                                           "figA2", "figB"}


def test_a_run_that_was_not_built_leaves_its_panel_empty_with_a_note(stage, tmp_path):
    layout = [[panel(stage, "r20", "fig5"), panel(stage, "r56", "fig5", built=False)]]
    out = tmp_path / "fig5.png"
    figures.draw("fig5", layout, STYLE, out)
    assert drawn_fraction(out) > 0.03


def test_both_3d_panels_of_figure_1_render_a_surface(stage, tmp_path):
    """The reference tool's 3D plots came out blank on newer matplotlib: each half must hold ink."""
    layout = [[panel(stage, "r56n", "fig1"), panel(stage, "r56", "fig1")]]
    out = tmp_path / "fig1.png"
    figures.draw("fig1", layout, STYLE, out)
    assert panel_ink(out, (0.05, 0.2, 0.45, 0.9)) > 0.1
    assert panel_ink(out, (0.55, 0.2, 0.95, 0.9)) > 0.1


def test_run_info_reads_the_papers_name_recipe_and_test_error(stage):
    info = figures.run_info(stage / "r56n" / "final.pt")
    assert info.name == "ResNet-56-noshort"
    large = figures.run_info(stage / "vgg_large" / "final.pt")
    assert large.name == "VGG-9" and large.batch_size == round(0.16384 * 1500)
    assert large.recipe_label == f"WD=0, BS={round(0.16384 * 1500)}"


def test_nonfinite_points_are_masked_and_counted_on_the_panel():
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    z = np.add.outer(y**2, x**2) + 0.05
    z[0, 0], z[1, 2] = np.inf, np.nan
    fig, ax = plt.subplots()
    plots.contour_panel(ax, x, y, z, STYLE)
    notes = [t.get_text() for t in ax.texts]
    plt.close(fig)
    assert "2 points inf/NaN (masked)" in notes
    assert plots.masked(z).count() == z.size - 2


def test_contour_levels_are_the_papers_and_shared_by_panels():
    assert STYLE.levels[0] == pytest.approx(0.1)
    assert np.diff(STYLE.levels) == pytest.approx(0.5)
    assert STYLE.levels[-1] < 10 <= STYLE.levels[-1] + 0.5


def test_vtp_export_of_a_non_square_surface(tmp_path):
    grid = make_grid(-1, 1, 5, -0.5, 0.5, 3)
    loss = bowl(grid, 20.0)
    loss[2, 4] = np.nan
    write_surface(tmp_path / "s.h5", grid, {"train_loss": loss}, {})
    write_vtp(tmp_path / "s.h5", tmp_path / "s.vtp", zmax=10.0)
    piece = ET.parse(tmp_path / "s.vtp").getroot().find("PolyData/Piece")
    assert piece.get("NumberOfPoints") == "15" and piece.get("NumberOfPolys") == str(4 * 2)
    points = np.array(piece.find("Points/DataArray").text.split(), dtype=float).reshape(-1, 3)
    xx, yy = np.meshgrid(grid.x, grid.y)
    assert points[:, 0] == pytest.approx(xx.ravel()) and points[:, 1] == pytest.approx(yy.ravel())
    expected = np.log(np.where(np.isfinite(loss), np.minimum(loss, 10.0), 10.0) + 0.1)
    assert points[:, 2] == pytest.approx(expected.ravel(), rel=1e-7)
    arrays = {a.get("Name"): a.text.split() for a in piece.iter("DataArray") if a.get("Name")}
    quads = np.array(arrays["connectivity"], dtype=int).reshape(-1, 4)
    for quad in quads:  # each quad is one grid cell: corners one step apart in x and y
        corners = points[quad, :2]
        assert np.ptp(corners[:, 0]) == pytest.approx(0.5) and np.ptp(corners[:, 1]) == pytest.approx(0.5)
    assert np.array(arrays["finite"], dtype=float).sum() == 14
    assert np.array(arrays["offsets"], dtype=int).tolist() == [4, 8, 12, 16, 20, 24, 28, 32]


def test_vtp_export_refuses_a_1d_surface(tmp_path):
    grid = make_grid(-1, 1, 5)
    write_surface(tmp_path / "line.h5", grid, {"train_loss": bowl(grid, 1.0)}, {})
    with pytest.raises(ValueError, match="1D surface"):
        write_vtp(tmp_path / "line.h5", tmp_path / "line.vtp")


def test_vtp_command_line_exports_a_surface_and_explains_a_1d_one(tmp_path, capsys):
    from losslandscape.cli import main

    grid = make_grid(-1, 1, 4, -1, 1, 3)
    write_surface(tmp_path / "s.h5", grid, {"train_loss": bowl(grid, 3.0)}, {})
    assert main(["vtp", str(tmp_path / "s.h5"), str(tmp_path / "s.vtp"), "--zmax", "5"]) == 0
    assert ET.parse(tmp_path / "s.vtp").getroot().find("PolyData/Piece").get("NumberOfPoints") == "12"
    line = make_grid(-1, 1, 4)
    write_surface(tmp_path / "line.h5", line, {"train_loss": bowl(line, 1.0)}, {})
    with pytest.raises(SystemExit, match="1D surface"):
        main(["vtp", str(tmp_path / "line.h5"), str(tmp_path / "line.vtp")])
