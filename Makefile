# Two commands on a fresh machine: `make run` (the pipeline on the default preset) and
# `make test` (the test suite). Both create .venv and install the package first.
# `make cluster` runs the pipeline through profiles/slurm.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
REPORT ?= report.html

.PHONY: setup run report cluster test dry-run clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/default $(ARGS)
	$(BIN)/snakemake --profile profiles/default --report $(REPORT) $(ARGS)

# The Snakemake report (every figure with its caption, the scorecard) of what `make run` built.
report: $(STAMP)
	$(BIN)/snakemake --profile profiles/default --report $(REPORT) $(ARGS)

# the pipeline on a SLURM cluster (edit profiles/slurm/config.v8+.yaml first; README "Running on a cluster")
cluster: $(STAMP)
	$(BIN)/snakemake --profile profiles/slurm --workflow-profile none $(ARGS)

dry-run: $(STAMP)
	$(BIN)/snakemake --profile profiles/default --dry-run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf results .snakemake
