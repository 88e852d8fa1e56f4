"""The reproduction scorecard: our numbers next to the paper's, and each of its claims checked.

Nothing here is tuned: every verdict is computed from the pipeline's outputs, and a claim whose
data the run did not produce says "not checked" and why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .io import atomic_path
from .surface import read_surface

# Test error (%) of the paper's networks (REFERENCE.md, from secondary notes on the paper).
PAPER_TEST_ERROR = {
    "vgg9_sgd_bs128_wd0": 7.37, "vgg9_sgd_bs8192_wd0": 11.07,
    "vgg9_sgd_bs128_wd5e-4": 6.00, "vgg9_sgd_bs8192_wd5e-4": 10.19,
    "resnet56": 5.89, "resnet56_bs4096": 10.59,
    "resnet20": 7.37, "resnet110": 5.79,
    "resnet20_noshort": 8.18, "resnet56_noshort": 13.31, "resnet110_noshort": 16.44,
    "wrn56_2": 5.07, "wrn56_4": 4.34, "wrn56_8": 3.93,
    "wrn56_2_noshort": 10.26, "wrn56_4_noshort": 9.69, "wrn56_8_noshort": 8.70,
}
PCA_RANGE = (0.40, 0.90)  # the paper: the first two components hold 40 % to 90 % of the variation
CONVEX_RATIO = 0.01  # "negative eigenvalues under 1 % of the positive ones"


def run_table(histories: dict[str, str], sharpness: pd.DataFrame, hessians: dict[str, str],
              trajectories: dict[str, str]) -> pd.DataFrame:
    """One row per run: test error (ours, the paper's), sharpness, Hessian ratio, PCA share."""
    rows = []
    for run, path in histories.items():
        history = pd.read_csv(path, sep="\t")
        ours = 100.0 - float(history.test_acc.iloc[-1])
        paper = PAPER_TEST_ERROR.get(run, np.nan)
        row = {"run": run, "test_error": ours, "paper_test_error": paper, "difference": ours - paper,
               "curvature_filter_1d": _measure(sharpness, run, "filter", 1, "curvature"),
               "curvature_none_1d": _measure(sharpness, run, "none", 1, "curvature"),
               "mean_curvature_filter_2d": _measure(sharpness, run, "filter", 2, "mean_curvature"),
               "flat_width_filter_1d": _measure(sharpness, run, "filter", 1, "flat_width")}
        if run in hessians:
            ratio = read_surface(hessians[run])
            row["hessian_ratio_centre"] = _centre(ratio)
            row["hessian_ratio_median"] = float(np.nanmedian(ratio["ratio"]))
            row["hessian_convex_share"] = float(np.nanmean(ratio["ratio"] < CONVEX_RATIO))
        if run in trajectories:
            shares = read_surface(trajectories[run])["attrs"]["explained_variance_ratio"]
            row["pca_share_2"] = float(shares[0] + shares[1])
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def claims(table: pd.DataFrame, groups: dict[str, list[list[str]]], weight_decay: dict[str, float]) -> list[dict]:
    """The paper's claims, each with what our numbers say. `groups`: the figures' rows of runs
    (`batch`: pairs small/large batch; `depth` and `width`: a row with shortcuts, one without);
    `weight_decay`: each run's."""
    return [
        _sharpness_tracks_error(table),
        _small_batch_flatter(table, groups.get("batch", [])),
        _unnormalised_misleads(table, groups.get("batch", []), weight_decay),
        _shortcuts_flatten(table, groups.get("depth", [])),
        _width_flattens(table, groups.get("width", [])),
        _noshort_nonconvex(table, groups.get("depth", [])),
        _densenet_convex(table),
        _pca_share(table),
    ]


def write_scorecard(table: pd.DataFrame, checked: list[dict], preset: str, out_md: str | Path,
                    out_tsv: str | Path) -> None:
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", float_format="%.6g")
    lines = [f"# Reproduction scorecard (preset `{preset}`)", ""]
    if preset != "paper":
        lines += [f"Every number below comes from the `{preset}` preset, a scaled-down version of the paper's "
                  "experiments (other data, narrower networks, fewer epochs, coarser grids): the test errors are "
                  "not comparable with the paper's, and each claim is checked at this scale only.", ""]
    lines += ["## Test error (%)", "", "| run | ours | paper | ours − paper |", "|---|---:|---:|---:|"]
    for run, row in table.iterrows():
        lines.append(f"| {run} | {row.test_error:.2f} | {_fmt(row.paper_test_error)} | {_fmt(row.difference, '+.2f')} |")
    lines += ["", "## Sharpness next to test error", "",
              "Curvature of the 1D training-loss curve at the minimiser (quadratic fit), filter-normalised and "
              "without normalisation; mean curvature of the filter-normalised 2D surface.", "",
              "| run | test error | curvature, filter 1D | curvature, none 1D | mean curvature, filter 2D |",
              "|---|---:|---:|---:|---:|"]
    for run, row in table.iterrows():
        lines.append(f"| {run} | {row.test_error:.2f} | {_fmt(row.curvature_filter_1d, '.4g')} | "
                     f"{_fmt(row.curvature_none_1d, '.4g')} | {_fmt(row.mean_curvature_filter_2d, '.4g')} |")
    lines += ["", "## The paper's claims", "", f"| claim | what our numbers say | verdict (preset `{preset}`) |",
              "|---|---|---|"]
    lines += ["| " + " | ".join(c[k].replace("|", "\\|") for k in ("claim", "ours", "verdict")) + " |" for c in checked]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _sharpness_tracks_error(table):
    claim = "Sharpness tracks test error under filter normalisation, not without it (Spearman ρ across runs)"
    rho = {}
    for norm in ("filter", "none"):
        data = table[[f"curvature_{norm}_1d", "test_error"]].dropna()
        rho[norm] = spearmanr(data.iloc[:, 0], data.test_error).statistic if len(data) >= 3 else np.nan
    if np.isnan(rho["filter"]) or np.isnan(rho["none"]):
        return _unchecked(claim, "fewer than 3 runs with both 1D planes")
    ours = f"ρ(filter) = {rho['filter']:.2f}, ρ(none) = {rho['none']:.2f} over {len(table)} runs"
    return _verdict(claim, ours, rho["filter"] > 0 and rho["filter"] > rho["none"])


def _small_batch_flatter(table, pairs):
    claim = "Small-batch minimisers are flatter than large-batch ones (filter-normalised 1D curvature)"
    pairs = _complete(table, pairs, "curvature_filter_1d")
    if not pairs:
        return _unchecked(claim, "no small/large batch pair built")
    parts = [f"{s} {table.curvature_filter_1d[s]:.3g} vs {b} {table.curvature_filter_1d[b]:.3g}" for s, b in pairs]
    return _verdict(claim, "; ".join(parts), all(table.curvature_filter_1d[s] < table.curvature_filter_1d[b]
                                                 for s, b in pairs))


def _unnormalised_misleads(table, pairs, weight_decay):
    claim = ("Without normalisation, weight decay makes the small-batch minimiser look sharper than the large-batch "
             "one, though its test error is lower")
    pairs = [(s, b) for s, b in _complete(table, pairs, "curvature_none_1d") if weight_decay[s] > 0]
    if not pairs:
        return _unchecked(claim, "no weight-decay pair with an un-normalised 1D plane")
    parts = [f"{s} {table.curvature_none_1d[s]:.3g} vs {b} {table.curvature_none_1d[b]:.3g}" for s, b in pairs]
    return _verdict(claim, "; ".join(parts), all(table.curvature_none_1d[s] > table.curvature_none_1d[b]
                                                 for s, b in pairs))


def _shortcuts_flatten(table, rows):
    claim = "Shortcuts keep deep networks flat: without them the surface is sharper, more so with depth"
    return _deepest_pair_claim(claim, table, rows, "mean_curvature_filter_2d", "mean 2D curvature", ".3g")


def _width_flattens(table, rows):
    claim = "Wider networks (WRN-56-k, with shortcuts) have flatter minimisers"
    if not rows:
        return _unchecked(claim, "no width row configured")
    row = [run for run in rows[0] if run in table.index and not np.isnan(table.mean_curvature_filter_2d[run])]
    if len(row) < 3:
        return _unchecked(claim, "fewer than 3 widths built")
    rho = spearmanr(range(len(row)), table.mean_curvature_filter_2d[row]).statistic
    parts = ", ".join(f"{run} {table.mean_curvature_filter_2d[run]:.3g}" for run in row)
    return _verdict(claim, f"mean 2D curvature {parts}; ρ(width, curvature) = {rho:.2f}", rho < 0)


def _noshort_nonconvex(table, rows):
    claim = "Deep networks without shortcuts are strongly non-convex (large |λmin/λmax|); with shortcuts near-convex"
    if "hessian_ratio_median" not in table:
        return _unchecked(claim, "no Hessian map computed")
    return _deepest_pair_claim(claim, table, rows, "hessian_ratio_median", "median |λmin/λmax| over the plane:", ".3f")


def _deepest_pair_claim(claim, table, rows, column, measure, spec):
    """Holds when, at the deepest depth built in both variants, the one without shortcuts scores higher."""
    pairs = _column_pairs(table, rows, column)
    if not pairs:
        return _unchecked(claim, f"no depth with both variants' {column}")
    values = table[column]
    parts = [f"{s} {values[s]:{spec}} vs {n} {values[n]:{spec}}" for s, n in pairs]
    short, noshort = pairs[-1]
    return _verdict(claim, f"{measure} " + "; ".join(parts) + " (the deepest pair decides)",
                    values[noshort] > values[short])


def _densenet_convex(table):
    claim = f"DenseNet-121's negative eigenvalues stay under {CONVEX_RATIO:.0%} of the positive ones over a large region"
    if "hessian_convex_share" not in table or "densenet121" not in table.index \
            or np.isnan(table.hessian_convex_share.get("densenet121", np.nan)):
        return _unchecked(claim, "no Hessian map of densenet121 (add it to landscape.hessian.runs)")
    share = table.hessian_convex_share["densenet121"]
    return _verdict(claim, f"{share:.0%} of the plane's points have |λmin/λmax| < {CONVEX_RATIO}", share >= 0.5)


def _pca_share(table):
    claim = (f"The first two PCA components hold {PCA_RANGE[0]:.0%} to {PCA_RANGE[1]:.0%} of an optimiser path's "
             "variation")
    if "pca_share_2" not in table or table.pca_share_2.dropna().empty:
        return _unchecked(claim, "no trajectory run built")
    shares = table.pca_share_2.dropna()
    parts = ", ".join(f"{run} {share:.0%}" for run, share in shares.items())
    inside = shares.between(*PCA_RANGE)
    return _verdict(claim, f"{parts} ({inside.sum()} of {len(shares)} inside the range)", bool(inside.all()))


def _measure(sharpness, run, norm, dims, column):
    match = sharpness[(sharpness.run == run) & (sharpness.norm == norm) & (sharpness.dims == dims)]
    return float(match[column].iloc[0]) if len(match) and column in match else np.nan


def _centre(surface) -> float:
    iy, ix = np.argmin(np.abs(surface["ycoordinates"])), np.argmin(np.abs(surface["xcoordinates"]))
    return float(surface["ratio"][iy, ix])


def _complete(table, pairs, column):
    return [(a, b) for a, b in pairs if a in table.index and b in table.index
            and not np.isnan(table[column][a]) and not np.isnan(table[column][b])]


def _column_pairs(table, rows, column):
    """(with shortcut, without) per column of a two-row figure layout, where both are measured."""
    if len(rows) < 2:
        return []
    return _complete(table, list(zip(rows[0], rows[1])), column)


def _verdict(claim, ours, holds) -> dict:
    return {"claim": claim, "ours": ours, "verdict": "holds" if holds else "does not hold"}


def _unchecked(claim, why) -> dict:
    return {"claim": claim, "ours": "—", "verdict": f"not checked: {why}"}


def _fmt(value, spec=".2f") -> str:
    return "—" if value is None or np.isnan(value) else format(value, spec)
