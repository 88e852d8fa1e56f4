"""Snakemake glue: 1D interpolation between two minimisers (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import interpolate

with log_to(snakemake.log[0]):
    interpolate(
        snakemake.input.a,
        snakemake.input.b,
        snakemake.output[0],
        snakemake.params.settings,
        snakemake.params.evaluation,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
