"""Snakemake conventions the workflow keeps: lint-clean, every rule logged, benchmarked, sized and
given a conda environment, environments that match pyproject.toml, profiles Snakemake 8 and 9 read."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from conftest import REPO

RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def rule_blocks() -> dict[str, str]:
    """Name -> text of every rule with a job to run (a script or shell), across the rule files."""
    blocks = {}
    for path in RULE_FILES:
        for block in re.split(r"(?m)^(?=rule \w+:)", path.read_text()):
            if m := re.match(r"rule (\w+):", block):
                blocks[m.group(1)] = block
    return blocks


def test_snakemake_lint_reports_nothing(tmp_path):
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--lint"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "Lints for" not in said and "Congratulations" in said, said


@pytest.mark.parametrize("directive", ["log:", "benchmark:", "threads:", "resources:", "mem_mb=", "runtime=", "conda:"])
def test_every_rule_has(directive):
    blocks = rule_blocks()
    assert len(blocks) >= 12
    lacking = [name for name, text in blocks.items() if directive not in text]
    assert not lacking, f"rules without {directive}: {lacking}"


def test_rules_that_can_use_a_gpu_ask_for_one_and_get_the_cuda_environment():
    blocks = rule_blocks()
    for name in ["train", "surface_shard", "hessian_shard", "interpolate", "surface"]:
        assert "gpu=" in blocks[name] and "TORCH_ENV" in blocks[name], name


def requirements(specs: list[str]) -> dict[str, str]:
    """name -> version bounds, of PEP 508 strings (`torch>=2.4,<2.15`)."""
    out = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", spec.strip())
        out[m.group(1).lower()] = m.group(2).replace(" ", "")
    return out


@pytest.mark.parametrize("env", ["torch-cpu.yaml", "torch-cuda.yaml"])
def test_conda_environment_lists_the_dependencies_of_pyproject(env):
    """conda cannot be reached here, so the environments are checked against pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    pip = next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict))
    listed = [line for line in pip if not line.startswith("-")]
    assert requirements(listed) == requirements(project["dependencies"])
    python = next(item for item in spec["dependencies"] if isinstance(item, str) and item.startswith("python"))
    assert python == "python" + project["requires-python"]
    assert "-e ${LOSSLANDSCAPE_ROOT}" in pip, "the package itself, from the checkout the workflow names"


def test_rules_name_existing_environments():
    named = set()
    for path in RULE_FILES:
        named |= {(path.parent / m).resolve() for m in re.findall(r'conda:\n\s+"([^"]+)"', path.read_text())}
    named |= {(REPO / "workflow/rules" / m).resolve()
              for m in re.findall(r'"(\.\./\.\./envs/[^"]+)"', (REPO / "workflow/rules/common.smk").read_text())}
    assert named == {(REPO / "envs" / name).resolve() for name in ["torch-cpu.yaml", "torch-cuda.yaml"]}


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profiles_use_the_file_name_every_snakemake_8_and_9_reads(profile):
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.v8+.yaml").read_text())
    assert settings["keep-going"] is True


def test_slurm_profile_sends_gpu_rules_to_a_gpu_partition_with_a_gpu():
    settings = yaml.safe_load((REPO / "profiles/slurm/config.v8+.yaml").read_text())
    assert settings["executor"] == "slurm" and settings["retries"] >= 1 and settings["latency-wait"] >= 30
    assert {"slurm_account", "slurm_partition"} <= set(settings["default-resources"])
    gpu_partition = settings["set-resources"]["train"]["slurm_partition"]
    assert gpu_partition != settings["default-resources"]["slurm_partition"]
    for rule in ["train", "surface_shard", "hessian_shard", "interpolate"]:
        assert settings["set-resources"][rule] == {"slurm_partition": gpu_partition, "gpu": 1}, rule
    assert "SITE" in (REPO / "profiles/slurm/config.v8+.yaml").read_text()
