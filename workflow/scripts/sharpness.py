"""Snakemake glue: the sharpness table of every run's surfaces (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import sharpness_table

with log_to(snakemake.log[0]):
    sharpness_table(list(snakemake.input.surfaces), list(snakemake.input.histories), snakemake.output[0],
                    snakemake.params.threshold)
