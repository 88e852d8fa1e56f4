"""Snakemake glue: the random directions of one run under one normalisation (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import make_directions

with log_to(snakemake.log[0]):
    make_directions(
        snakemake.input.checkpoint,
        snakemake.output[0],
        snakemake.wildcards.norm,
        snakemake.params.ignore_biasbn,
        snakemake.params.seed,
    )
