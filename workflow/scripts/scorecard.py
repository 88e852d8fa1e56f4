"""Snakemake glue: the scorecard against the paper's numbers (losslandscape.scorecard)."""

from pathlib import Path

import pandas as pd

from losslandscape.io import log_to
from losslandscape.scorecard import claims, run_table, write_scorecard

with log_to(snakemake.log[0]):
    by_run = lambda paths: {Path(p).parent.name: p for p in paths}  # noqa: E731  (.../<run>/file)
    table = run_table(by_run(snakemake.input.histories), pd.read_csv(snakemake.input.sharpness, sep="\t"),
                      by_run(snakemake.input.hessians), by_run(snakemake.input.trajectories))
    checked = claims(table, snakemake.params.groups, snakemake.params.weight_decay)
    write_scorecard(table, checked, snakemake.params.preset, snakemake.output.md, snakemake.output.tsv)
    for line in checked:
        print(f"{line['verdict']}: {line['claim']} -- {line['ours']}", flush=True)
