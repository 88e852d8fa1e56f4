"""Snakemake glue: random directions of one plane of one run (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import make_directions

with log_to(snakemake.log[0]):
    make_directions(snakemake.input.checkpoint, snakemake.output[0], snakemake.params.plane, snakemake.params.seed)
