#!/usr/bin/env bash
# One run of the GPU benchmark (benchmarks/gpu.py): floor, plain and batched evaluator for
# ResNet-20, ResNet-56 and WRN-56-4 at CIFAR size, one markdown table. A few minutes on a GPU.
#   benchmarks/gpu.sh                      # the GPU if there is one, else the CPU
#   benchmarks/gpu.sh --device cpu --quick # the CPU smoke test (seconds)
#   benchmarks/gpu.sh --out benchmarks/gpu-$(date +%F).md
# PYTHON overrides the interpreter (default: the project's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" benchmarks/gpu.py "$@"
