"""Snakemake glue: a surface from its shards, or computed whole (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import surface

with log_to(snakemake.log[0]):
    surface(
        list(snakemake.input.shards),
        snakemake.input.checkpoint,
        snakemake.input.directions,
        snakemake.output[0],
        snakemake.params.plane,
        snakemake.params.grid,
        snakemake.params.evaluation,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
