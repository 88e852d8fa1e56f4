"""Snakemake glue: the appendix B trajectory figure of one run (see losslandscape.plots)."""

from losslandscape.io import log_to
from losslandscape.plots import trajectory_figure

with log_to(snakemake.log[0]):
    trajectory_figure(snakemake.input.pca, snakemake.input.surface, snakemake.output.png)
