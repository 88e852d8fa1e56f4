"""Snakemake glue: merge a Hessian eigen-map's shards (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import hessian_map

with log_to(snakemake.log[0]):
    hessian_map(
        list(snakemake.input.shards),
        snakemake.input.checkpoint,
        snakemake.input.directions,
        snakemake.output[0],
        snakemake.params.grid,
        snakemake.params.hessian,
    )
