"""Snakemake glue: one of the paper's figures from its panels' stage outputs (losslandscape.figures)."""

from losslandscape.figures import draw
from losslandscape.io import log_to
from losslandscape.plots import Style

with log_to(snakemake.log[0]):
    style = snakemake.params.style
    draw(snakemake.wildcards.fig, snakemake.params.layout,
         Style(tuple(style["contour_levels"]), style["loss_max"], style["zmax"]), snakemake.output.png)
