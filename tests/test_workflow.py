"""The pipeline end to end on the tiny preset, through Snakemake itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from losslandscape.surface import read_surface

from conftest import REPO

RUNS = ["resnet20", "vgg9_sgd_bs128_wd0", "vgg9_sgd_bs8192_wd0"]
FIGURES = ["fig2", "fig3", "fig5", "fig7", "figB"]
PLANES = {  # fewer planes than config.yaml, to keep the test short; every kind is still there
    "filter-1d": {"norm": "filter", "dims": 1},
    "filter-2d": {"norm": "filter", "dims": 2},
    "none-1d": {"norm": "none", "dims": 1, "runs": ["vgg9_sgd_bs128_wd0"]},
}


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def write_config(workdir: Path, raw: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def planned_jobs(result: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(rule, run or figure) of every job with wildcards that a dry run would execute."""
    jobs, rule = [], None
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("rule ") or line.startswith("localrule "):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("wildcards:") and rule:
            wildcards = dict(part.split("=", 1) for part in line.split(":", 1)[1].strip().split(", "))
            jobs.append((rule, wildcards.get("run") or wildcards.get("fig")))
    return jobs


def planned_rules(result: subprocess.CompletedProcess) -> list[str]:
    """Rule of every job a dry run would execute, the target rule `all` left out."""
    rules = [line.split()[1].rstrip(":") for line in result.stdout.splitlines()
             if line.startswith(("rule ", "localrule "))]
    return sorted(rule for rule in rules if rule != "all")


def dry_run_after_config_change(workdir: Path, raw: dict, change) -> subprocess.CompletedProcess:
    """A dry run after `change(config)` edits a copy of the config; the config is put back after."""
    changed = yaml.safe_load(yaml.safe_dump(raw))
    change(changed)
    write_config(workdir, changed)
    try:
        return snakemake(workdir, "--dry-run")
    finally:
        write_config(workdir, raw)


def edited_package(tmp_path: Path, module: str) -> dict:
    """An environment whose `losslandscape` is a copy of the package with `module` edited."""
    import losslandscape

    copy = tmp_path / "src" / "losslandscape"
    shutil.copytree(Path(losslandscape.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module, "a") as fh:
        fh.write("\n# an edit\n")
    return {**os.environ, "PYTHONPATH": str(copy.parent)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny preset's pipeline, run once for the module, on two runs."""
    workdir = tmp_path_factory.mktemp("pipeline")
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw.update(preset="tiny", select=RUNS, device="cpu")
    raw["landscape"]["planes"] = PLANES
    panels = raw["figures"]["panels"]  # the figures whose planes PLANES keeps (fig1: none of its runs is built)
    raw["figures"]["panels"] = {fig: panels[fig] for fig in FIGURES + ["fig1"]}
    raw["figures"]["vtp_runs"] = ["resnet20"]
    write_config(workdir, raw)
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, raw


@pytest.mark.workflow
def test_pipeline_trains_each_run_and_writes_weight_statistics(built):
    workdir, _ = built
    out = workdir / "results" / "tiny"
    for run in RUNS:
        history = pd.read_csv(out / "train" / run / "history.tsv", sep="\t")
        assert history.epoch.tolist() == [0, 1, 2]
        assert (out / "train" / run / "checkpoints" / "epoch-0000.pt").exists()
        norms = pd.read_csv(out / "weights" / run / "norms.tsv", sep="\t")
        assert norms.weight_norm.tolist() == pytest.approx(history.weight_norm.tolist())
        histogram = pd.read_csv(out / "weights" / run / "histogram.tsv", sep="\t")
        assert histogram.final.sum() == histogram.initial.sum() > 0
        log = (out / "logs" / "train" / f"{run}.log").read_text()
        assert f"train {run}: 2/2 epochs [####################] 100%" in log
        assert (out / "benchmarks" / "train" / f"{run}.tsv").exists()


@pytest.mark.workflow
def test_pipeline_computes_surfaces_interpolation_and_sharpness(built):
    workdir, _ = built
    out = workdir / "results" / "tiny"
    plane = read_surface(out / "surface" / "resnet20" / "filter-2d.h5")
    assert plane["train_loss"].shape == (3, 3) and plane["attrs"]["norm"] == "filter"
    assert plane["attrs"]["train_subset"] == 200
    history = pd.read_csv(out / "train" / "resnet20" / "history.tsv", sep="\t")
    line = read_surface(out / "surface" / "resnet20" / "filter-1d.h5")
    assert line["test_loss"][2] == pytest.approx(history.test_loss.iloc[-1], rel=1e-4), "centre = the minimiser"
    assert line["test_acc"][2] == pytest.approx(history.test_acc.iloc[-1], abs=1e-3)
    assert not list((out / "surface").rglob("*.journal")), "no journal is left once a shard is done"
    curve = read_surface(out / "interpolation" / "vgg9_wd0.h5")
    assert curve["xcoordinates"].tolist() == pytest.approx([-0.5, 0.0, 0.5, 1.0, 1.5])
    small = pd.read_csv(out / "train" / "vgg9_sgd_bs128_wd0" / "history.tsv", sep="\t")
    assert curve["test_loss"][1] == pytest.approx(small.test_loss.iloc[-1], rel=1e-4), "alpha = 0 is the small-batch net"
    pca = read_surface(out / "trajectory" / "vgg9_sgd_bs128_wd0" / "pca.h5")
    shares = pca["attrs"]["explained_variance_ratio"]
    assert len(pca["epochs"]) == 3 and 0 < shares[1] <= shares[0] <= 1
    assert pca["path_x"][-1] == pca["path_y"][-1] == 0.0, "the path ends at the final weights"
    path_plane = read_surface(out / "surface" / "vgg9_sgd_bs128_wd0" / "pca.h5")
    assert path_plane["xcoordinates"].min() < pca["path_x"].min() and path_plane["xcoordinates"].max() > pca["path_x"].max()
    eigen = read_surface(out / "hessian" / "resnet20" / "filter-2d.h5")
    assert eigen["max_eig"].shape == (2, 2), "every other point of the 3 x 3 surface grid"
    assert eigen["xcoordinates"].tolist() == pytest.approx(plane["xcoordinates"][::2].tolist())
    converged = eigen["max_converged"] == 1
    assert np.all(eigen["max_eig"][converged] > 0)
    assert np.allclose(eigen["ratio"], np.abs(eigen["min_eig"] / eigen["max_eig"]), equal_nan=True)
    table = pd.read_csv(out / "sharpness.tsv", sep="\t")
    assert len(table) == 7 and set(table.run) == set(RUNS)
    assert {"curvature", "flat_width", "flat_area", "test_error"} <= set(table.columns)


@pytest.mark.workflow
def test_pipeline_draws_the_figures_the_scorecard_and_the_report(built):
    workdir, _ = built
    out = workdir / "results" / "tiny"
    drawn = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert drawn == sorted(FIGURES), "fig1 has no built run and is skipped"
    for fig in FIGURES:
        png = out / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.with_suffix(".pdf").exists()
    assert (out / "figures" / "vtp" / "resnet20" / "filter-2d.vtp").read_text().startswith("<?xml")
    card = (out / "scorecard.md").read_text()
    assert "preset `tiny`" in card and "| resnet20 |" in card and "Sharpness tracks test error" in card
    table = pd.read_csv(out / "scorecard.tsv", sep="\t", index_col="run")
    assert set(table.index) == set(RUNS) and table.paper_test_error["resnet20"] == 7.37
    report = workdir / "report.html"
    result = snakemake(workdir, "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = report.read_text()
    assert "fig3.png" in html and "scorecard.md" in html
    assert "Runs drawn: vgg9_sgd_bs128_wd0" in html, "captions name the runs and settings"


@pytest.mark.workflow
def test_nothing_reruns_when_nothing_changed(built):
    workdir, _ = built
    result = snakemake(workdir, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result) == []


@pytest.mark.workflow
def test_changing_one_runs_recipe_reruns_only_that_branch(built, tmp_path):
    workdir, raw = built
    result = dry_run_after_config_change(workdir, raw, lambda config: config["runs"]["resnet20"].update(lr=0.05))
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result)
    assert {run for rule, run in jobs if rule != "figure"} == {"resnet20"}, "no other run's branch reruns"
    assert {fig for rule, fig in jobs if rule == "figure"} == {"fig5", "fig7"}, "only the figures that draw it"
    assert planned_rules(result) == sorted(
        ["train", "weights", "directions", "surface", "surface", "surface_shard", "surface_shard",
         "hessian", "hessian_shard", "hessian_shard", "sharpness", "scorecard", "figure", "figure", "vtp"]
    )


@pytest.mark.workflow
def test_changing_one_figures_setting_reruns_only_that_figure(built):
    workdir, raw = built
    result = dry_run_after_config_change(workdir, raw, lambda config: config["figures"]["panels"]["fig3"][0].reverse())
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result) == [("figure", "fig3")]
    assert planned_rules(result) == ["figure"]


@pytest.mark.workflow
@pytest.mark.parametrize(
    "module,rules,outputs",
    [
        # a stage's jobs, and the figures / scorecard that read what they write
        ("hessian.py", ["hessian", "hessian_shard", "hessian_shard", "figure", "scorecard"], "hessian/"),
        ("plots.py", ["figure"] * len(FIGURES) + ["vtp"], "figures/"),
        ("sharpness.py", ["sharpness", "scorecard"], "sharpness.tsv"),
        ("weights.py", ["weights"] * len(RUNS) + ["figure"], "weights/"),
    ],
)
def test_changing_one_stages_code_reruns_that_stages_jobs(built, tmp_path, module, rules, outputs):
    """Snakemake does not look into the imported package: each rule's `code` param does."""
    workdir, _ = built
    env = edited_package(tmp_path, module)
    result = snakemake(workdir, "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert planned_rules(result) == sorted(rules)
    reasons = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("reason:")]
    assert any("Params have changed" in reason for reason in reasons), reasons  # the code hash
    assert all(f"results/tiny/{outputs}" in reason or "Params have changed" in reason
               for reason in reasons), reasons


@pytest.mark.workflow
@pytest.mark.parametrize(
    "change,words",
    [
        ({"runs": {"resnet20": {"batchsize": 64}}}, ["runs.resnet20.batchsize", "batch_size"]),
        ({"presets": {"tiny": {"batch_size": -5}}}, ["presets.tiny.batch_size", "-5"]),
        ({"runs": {"resnet20": {"model": "resnet21"}}}, ["runs.resnet20.model", "resnet21"]),
        ({"preset": "paper", "datasets": {"cifar10": {"root": "no/such/folder"}}}, ["no/such/folder", "download"]),
    ],
    ids=["unknown-key", "negative-batch", "unknown-model", "missing-cifar10"],
)
def test_bad_config_stops_before_any_job(tmp_path, change, words):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    merge(raw, change)
    write_config(tmp_path, raw)
    result = snakemake(tmp_path, "--dry-run")
    assert result.returncode != 0
    said = result.stdout + result.stderr  # Snakemake 9 reports workflow errors on stdout
    for word in words:
        assert word in said, said
    assert "Job stats" not in result.stdout
    assert not (tmp_path / "results").exists()


def merge(base: dict, change: dict) -> None:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
