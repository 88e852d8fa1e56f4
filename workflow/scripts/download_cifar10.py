"""Snakemake glue: download CIFAR-10 once, before any training job reads it."""

from losslandscape.data import load_dataset
from losslandscape.io import log_to

with log_to(snakemake.log[0]):
    load_dataset("cifar10", {"root": snakemake.params.root, "download": True})
