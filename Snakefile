# Loss landscapes of neural nets (Li et al., NeurIPS 2018), from training to figures.
# Run: snakemake --cores all   (preset in config.yaml; or --config preset=paper)

from pathlib import Path

from snakemake.exceptions import WorkflowError

from losslandscape import config as cfg


configfile: "config.yaml"


try:
    _checked = cfg.validate(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
except cfg.ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_checked)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/landscape.smk"
include: "workflow/rules/trajectory.smk"
include: "workflow/rules/hessian.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        expand(f"{OUT}/train/{{run}}/final.pt", run=RUNS),
        expand(f"{OUT}/weights/{{run}}/norms.tsv", run=RUNS),
        expand(f"{OUT}/weights/{{run}}/histogram.tsv", run=RUNS),
        all_surfaces(),
        all_interpolations(),
        all_trajectories(),
        all_hessians(),
        f"{OUT}/sharpness.tsv",
        all_figures(),
        all_vtp(),
        f"{OUT}/scorecard.md",
    default_target: True
