"""The scorecard: our test errors next to the paper's, and each claim's verdict computed from data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from losslandscape import scorecard
from losslandscape.surface import make_grid, write_surface

GROUPS = {"batch": [["small", "large"]], "depth": [["resnet20", "resnet56"], ["resnet20_noshort", "resnet56_noshort"]],
          "width": [["resnet56", "wrn56_2", "wrn56_4"]]}
DECAY = {"small": 5e-4, "large": 5e-4}


def history(path, test_acc):
    pd.DataFrame({"epoch": [0, 1], "test_acc": [10.0, test_acc]}).to_csv(path, sep="\t", index=False)
    return str(path)


def sharpness_rows(curvature: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    """(filter 1D, none 1D, filter 2D mean curvature) per run, in sharpness.tsv's layout."""
    rows = []
    for run, (filt, none, mean2d) in curvature.items():
        rows += [{"run": run, "norm": "filter", "dims": 1, "curvature": filt, "flat_width": 1 / filt},
                 {"run": run, "norm": "none", "dims": 1, "curvature": none},
                 {"run": run, "norm": "filter", "dims": 2, "mean_curvature": mean2d}]
    return pd.DataFrame(rows)


@pytest.fixture
def outputs(tmp_path):
    errors = {"small": 6.0, "large": 10.0, "resnet20": 7.0, "resnet56": 6.0, "resnet20_noshort": 8.0,
              "resnet56_noshort": 14.0, "wrn56_2": 5.0, "wrn56_4": 4.5}
    histories = {run: history(tmp_path / f"{run}.tsv", 100 - e) for run, e in errors.items()}
    grid = make_grid(-1, 1, 3, -1, 1, 3)
    hessians = {}
    for run, level in {"resnet20": 0.05, "resnet56": 0.05, "resnet20_noshort": 0.1, "resnet56_noshort": 0.6}.items():
        ratio = np.full((3, 3), level)
        ratio[0, 0] = np.nan  # not converged
        write_surface(tmp_path / f"{run}-h.h5", grid, {"ratio": ratio}, {})
        hessians[run] = str(tmp_path / f"{run}-h.h5")
    trajectories = {}
    for run, shares in {"small": [0.6, 0.2], "large": [0.7, 0.1], "off": [0.97, 0.02]}.items():
        write_surface(tmp_path / f"{run}-pca.h5", grid, {"path_x": np.zeros(3)}, {"explained_variance_ratio": shares})
        trajectories[run] = str(tmp_path / f"{run}-pca.h5")
    return histories, hessians, trajectories


FLAT_TRACKS = {  # filter curvature rises with test error; un-normalised curvature does not
    "small": (1.0, 900.0, 5.0), "large": (3.0, 100.0, 9.0), "resnet20": (2.0, 50.0, 7.0),
    "resnet56": (1.5, 700.0, 6.0), "resnet20_noshort": (2.5, 20.0, 8.0), "resnet56_noshort": (9.0, 10.0, 60.0),
    "wrn56_2": (1.2, 5.0, 4.0), "wrn56_4": (1.1, 3.0, 3.0),
}


def test_claims_hold_when_the_numbers_say_so(outputs):
    histories, hessians, trajectories = outputs
    table = scorecard.run_table(histories, sharpness_rows(FLAT_TRACKS), hessians, trajectories)
    checked = scorecard.claims(table, GROUPS, DECAY)
    by_claim = {c["claim"]: c for c in checked}
    assert all(c["verdict"] == "holds" for c in checked if "DenseNet" not in c["claim"]), checked
    assert "not checked" in next(c["verdict"] for c in checked if "DenseNet" in c["claim"])
    assert table.hessian_ratio_median["resnet56_noshort"] == pytest.approx(0.6)  # NaN point ignored
    assert table.pca_share_2["large"] == pytest.approx(0.8)
    tracks = next(c for c in by_claim.values() if c["claim"].startswith("Sharpness tracks"))
    assert "ρ(filter) = 0.9" in tracks["ours"]


def test_claims_fail_when_the_numbers_contradict_them(outputs):
    histories, hessians, trajectories = outputs
    flipped = {run: (1 / f, 1.0 / n, 1 / m) for run, (f, n, m) in FLAT_TRACKS.items()}  # sharpness against error
    trajectories = {"small": trajectories["small"], "large": trajectories["off"]}  # 99 %: above 40-90 %
    table = scorecard.run_table(histories, sharpness_rows(flipped), hessians, trajectories)
    checked = {c["claim"][:20]: c["verdict"] for c in scorecard.claims(table, GROUPS, DECAY)}
    assert checked["Sharpness tracks tes"] == "does not hold"
    assert checked["Small-batch minimise"] == "does not hold"
    assert checked["Shortcuts keep deep "] == "does not hold"
    assert checked["Wider networks (WRN-"] == "does not hold"
    assert checked["The first two PCA co"] == "does not hold"


def test_missing_stages_are_reported_as_not_checked(outputs):
    histories, _, _ = outputs
    table = scorecard.run_table(histories, sharpness_rows(FLAT_TRACKS), {}, {})
    checked = {c["claim"][:20]: c["verdict"] for c in scorecard.claims(table, GROUPS, DECAY)}
    assert checked["Deep networks withou"].startswith("not checked: no Hessian map")
    assert checked["The first two PCA co"].startswith("not checked")


def test_scorecard_files_put_our_error_next_to_the_papers(outputs, tmp_path):
    histories, hessians, trajectories = outputs
    histories["resnet56"] = history(tmp_path / "r56.tsv", 100 - 6.89)
    table = scorecard.run_table(histories, sharpness_rows(FLAT_TRACKS), hessians, trajectories)
    scorecard.write_scorecard(table, scorecard.claims(table, GROUPS, DECAY), "tiny", tmp_path / "s.md", tmp_path / "s.tsv")
    tsv = pd.read_csv(tmp_path / "s.tsv", sep="\t", index_col="run")
    assert tsv.paper_test_error["resnet56"] == 5.89
    assert tsv.difference["resnet56"] == pytest.approx(1.0)
    assert np.isnan(tsv.paper_test_error["small"])  # not a run of the paper's tables
    md = (tmp_path / "s.md").read_text()
    assert "| resnet56 | 6.89 | 5.89 | +1.00 |" in md
    assert "preset `tiny`" in md and "checked at this scale only" in md
    assert "\\|λmin/λmax\\|" in md  # pipes inside a cell are escaped, so the table keeps its columns
