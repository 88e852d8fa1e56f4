"""Snakemake glue: one shard of a surface (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import surface_shard

with log_to(snakemake.log[0]):
    surface_shard(
        snakemake.input.checkpoint,
        snakemake.input.directions,
        snakemake.output[0],
        snakemake.params.plane,
        snakemake.params.grid,
        snakemake.params.evaluation,
        shard=int(snakemake.wildcards.shard),
        n_shards=int(snakemake.wildcards.n),
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
