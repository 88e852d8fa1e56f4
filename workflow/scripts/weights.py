"""Snakemake glue: weight norms and histograms of one run (see losslandscape.weights)."""

from losslandscape.io import log_to
from losslandscape.weights import summarise

with log_to(snakemake.log[0]):
    summarise(
        snakemake.input.history,
        snakemake.params.initial,
        snakemake.input.final,
        snakemake.output.norms,
        snakemake.output.histogram,
    )
