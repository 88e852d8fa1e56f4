"""Snakemake glue: a 2D surface as a ParaView .vtp file (losslandscape.vtp)."""

from losslandscape.io import log_to
from losslandscape.vtp import write_vtp

with log_to(snakemake.log[0]):
    write_vtp(snakemake.input[0], snakemake.output[0], zmax=snakemake.params.zmax)
