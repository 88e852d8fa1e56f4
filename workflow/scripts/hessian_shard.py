"""Snakemake glue: one shard of a Hessian eigen-map (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import hessian_shard

with log_to(snakemake.log[0]):
    hessian_shard(
        snakemake.input.checkpoint,
        snakemake.input.directions,
        snakemake.output[0],
        snakemake.params.grid,
        snakemake.params.hessian,
        shard=int(snakemake.wildcards.shard),
        n_shards=int(snakemake.wildcards.n),
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
