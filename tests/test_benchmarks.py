"""The GPU benchmark script runs on a CPU (its quick mode), so CI keeps it working for the GPU run."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_gpu_benchmark_runs_on_a_cpu_and_prints_its_table():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(REPO / "benchmarks" / "gpu.sh"), "--device", "cpu", "--quick", "--threads", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith(("| ResNet", "| WRN"))]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        (m, p) for m in ("ResNet-20", "ResNet-56", "WRN-56-4") for p in ("float32", "bf16")], done.stdout
    assert all(r[8].strip() == "2" for r in rows), "the batched evaluator ran K = 2 points per call"
