"""The tiny preset's whole pipeline on a real SLURM cluster, through profiles/slurm.

Needs a cluster: tests/slurm/setup_cluster.sh starts a one-node one on localhost (root, Debian's
slurm-wlm and munge). Without one the tests skip, unless LOSSLANDSCAPE_REQUIRE_SLURM=1 (CI sets
it, .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slurm

RUNS = ["resnet20", "vgg9_sgd_bs128_wd0", "vgg9_sgd_bs8192_wd0"]  # every rule kind, interpolation included
PLANES = {
    "filter-1d": {"norm": "filter", "dims": 1},                       # computed by the surface job itself
    "filter-2d": {"norm": "filter", "dims": 2, "runs": ["resnet20"]},  # shards + gather, and the Hessian map
}
GPU_RULES = {"train", "surface_shard", "hessian_shard", "interpolate"}  # and `surface` of an unsharded plane
EVERY_RULE = GPU_RULES | {"weights", "directions", "surface", "sharpness", "trajectory_pca", "hessian", "figure", "vtp",
                          "scorecard"}
FIGURES = {  # figures whose planes PLANES keeps
    "fig2": [["vgg9_sgd_bs128_wd0", "vgg9_sgd_bs8192_wd0"]],
    "fig7": [["resnet20"]],
    "figB": [["vgg9_sgd_bs128_wd0"]],
}


def cluster_answers() -> bool:
    if not shutil.which("sbatch"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """Run the pipeline once through SLURM; return its work folder and Snakemake's output."""
    if not cluster_answers():
        why = "no SLURM cluster answers here (start one: tests/slurm/setup_cluster.sh start)"
        if os.environ.get("LOSSLANDSCAPE_REQUIRE_SLURM") == "1":
            pytest.fail(f"LOSSLANDSCAPE_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    workdir = tmp_path_factory.mktemp("slurm")
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw.update(preset="tiny", select=RUNS, device="cpu")  # GPUs are requested, but the test node has none
    raw["runs"]["vgg9_sgd_bs8192_wd0"]["trajectory"] = False  # one trajectory is enough
    raw["landscape"]["planes"] = PLANES
    raw["figures"].update(panels=FIGURES, vtp_runs=["resnet20"])
    (workdir / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--profile", str(REPO / "profiles/slurm"), "--profile", str(REPO / "tests/slurm/profile"),
           "--workflow-profile", "none"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    said = result.stdout + result.stderr
    (workdir / "snakemake.out").write_text(said)
    assert result.returncode == 0, said[-6000:]
    return workdir, said


def jobs_in(said: str) -> dict[int, tuple[str, bool]]:
    """Snakemake's job id -> (rule, local?) of every job it started."""
    jobs, rule = {}, None
    for line in said.splitlines():
        if m := re.match(r"(local)?rule (\w+):$", line):
            rule = (m.group(2), bool(m.group(1)))
        elif (m := re.match(r"\s+jobid: (\d+)$", line)) and rule:
            jobs[int(m.group(1))] = rule
            rule = None
    return jobs


def slurm_job(jobid: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", shown))


def test_every_job_but_the_target_went_through_sbatch(cluster_run):
    workdir, said = cluster_run
    jobs = jobs_in(said)
    submitted = {int(job): slurm for job, slurm in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", said)}
    assert {rule for rule, local in jobs.values() if local} == {"all"}
    assert {job for job, (_, local) in jobs.items() if not local} == set(submitted), "each cluster job has a SLURM job"
    assert {rule for rule, _ in jobs.values()} == EVERY_RULE | {"all"}
    for job, slurm in submitted.items():
        state = slurm_job(slurm)
        assert state["JobState"] == "COMPLETED", (jobs[job], state)
        assert state["Comment"].startswith(f"rule_{jobs[job][0]}"), (jobs[job], state["Comment"])
    assert (workdir / "results/tiny/sharpness.tsv").exists()
    assert sorted(p.name for p in (workdir / "results/tiny/figures").glob("*.png")) == ["fig2.png", "fig7.png", "figB.png"]
    assert (workdir / "results/tiny/scorecard.md").exists()


def test_gpu_rules_were_given_the_gpu_and_the_rest_were_not(cluster_run):
    workdir, said = cluster_run
    jobs = jobs_in(said)
    gpu_jobs = 0
    for job, slurm in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", said):
        rule = jobs[int(job)][0]
        state = slurm_job(slurm)
        one_job_plane = rule == "surface" and "filter-2d" not in state["Comment"] and "_pca" not in state["Comment"]
        if rule in GPU_RULES or one_job_plane:
            gpu_jobs += 1
            assert state["Partition"] == "gpu" and "gpu:1" in state.get("TresPerJob", ""), (rule, state)
        else:
            assert state["Partition"] == "cpu" and "gpu" not in state.get("TresPerJob", ""), (rule, state)
    assert gpu_jobs >= 10
    logs = workdir / "results/tiny/logs"
    given = [*logs.glob("train/*.log"), *logs.glob("interpolation/*.log"), *logs.glob("*/*/*/shard-*.log"),
             *logs.glob("surface/*/filter-1d.log")]
    assert len(given) == 3 + 1 + 6 + 3
    for log in given:  # SLURM sets CUDA_VISIBLE_DEVICES for a job that holds a GPU; the job logs it
        assert "CUDA_VISIBLE_DEVICES=0" in log.read_text().splitlines()[0], log
    for log in [*logs.glob("weights/*.log"), *logs.glob("directions/*/*.log"), logs / "sharpness.log"]:
        assert "CUDA_VISIBLE_DEVICES=(unset)" in log.read_text().splitlines()[0], log
