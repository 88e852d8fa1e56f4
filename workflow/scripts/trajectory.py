"""Snakemake glue: PCA of one run's optimiser path (see losslandscape.jobs)."""

from losslandscape.io import log_to
from losslandscape.jobs import trajectory_pca

with log_to(snakemake.log[0]):
    trajectory_pca(snakemake.input.final, snakemake.input.directions, snakemake.output[0],
                   snakemake.params.margin, snakemake.params.points)
