"""Snakemake glue: train one run (see losslandscape.train)."""

from losslandscape.io import log_to
from losslandscape.train import train

with log_to(snakemake.log[0]):
    train(
        snakemake.params.recipe,
        run_dir=snakemake.params.run_dir,
        final_path=snakemake.output.final,
        history_path=snakemake.output.history,
        device=snakemake.params.device,
        threads=snakemake.threads,
        compile_model=snakemake.params.compile,
    )
