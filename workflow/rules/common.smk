# Helpers shared by the .smk files: the resolved config, per-run settings, code versions.

import hashlib
import os
import re
from pathlib import Path

import losslandscape
from losslandscape import config as cfg

PRESET = config["preset"]
SCALE = cfg.preset(config)
OUT = cfg.outdir(config)
LOGS = f"{OUT}/logs"
RUNS = cfg.selected_runs(config)

# Snakemake does not see changes inside the imported package; each rule gets the hash of the
# modules it runs as a param, so editing a stage's code reruns exactly that stage's jobs.
STAGE_MODULES = {
    "train": ["train.py", "models", "data.py", "evaluate.py", "checkpoints.py", "io.py"],
    "weights": ["weights.py", "io.py"],
    "directions": ["directions.py", "jobs.py", "checkpoints.py", "models", "io.py"],
    "surface": ["surface.py", "batched.py", "fold.py", "jobs.py", "checkpoints.py", "models", "data.py", "io.py"],
    "sharpness": ["sharpness.py", "jobs.py", "io.py"],
    "hessian": ["hessian.py", "jobs.py", "surface.py", "checkpoints.py", "models", "data.py", "io.py"],
    "trajectory": ["trajectory.py", "jobs.py", "directions.py", "checkpoints.py", "models", "io.py"],
    "plots": ["plots.py", "figures.py", "vtp.py", "surface.py", "train.py", "io.py"],
    "scorecard": ["scorecard.py", "surface.py", "io.py"],
}


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    run=_alternatives(config["runs"]),
    plane=_alternatives([*config["landscape"]["planes"], cfg.PCA_PLANE]),
    pair=_alternatives(config["landscape"]["interpolations"]) or "no-pair",
    norm="filter|layer|none",
    shard=r"\d+",
    n=r"\d+",
    fig=_alternatives(cfg.FIGURES_ALL),


def code_version(stage):
    root = Path(losslandscape.__file__).parent
    digest = hashlib.sha256()
    for name in STAGE_MODULES[stage]:
        path = root / name
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def run_recipe(wildcards):
    return cfg.run_recipe(config, wildcards.run)


def dataset_files(wildcards):
    """The training data a run needs on disk (none for datasets bundled with a package)."""
    if SCALE["dataset"] == "cifar10":
        return Path(config["datasets"]["cifar10"]["root"]) / "cifar-10-batches-py" / "test_batch"
    return []


def uses_gpu(wildcards=None):
    """GPUs a training or evaluation job holds: one when the config's device is cuda.

    A cluster profile may ask for one regardless (profiles/slurm does, and `device: auto` then
    finds it on the node).
    """
    return 1 if config["device"] == "cuda" else 0


# What a job asks a scheduler for, by family of rules (config: presets.<preset>.resources). Memory
# and wall time grow with the attempt, so a job killed for either gets more when retried
# (--retries, set in the profiles).
def mem_mb(family):
    return lambda wildcards, attempt: SCALE["resources"][_family(family, wildcards)]["mem_mb"] * attempt


def runtime(family):
    return lambda wildcards, attempt: SCALE["resources"][_family(family, wildcards)]["runtime"] * attempt


def _family(family, wildcards):
    return family(wildcards) if callable(family) else family


def surface_family(wildcards):
    """A surface job computes a plane itself (evaluate) unless it only gathers shards (light)."""
    return "light" if surface_shards(wildcards) else "evaluate"


# Conda environments (--software-deployment-method conda): the rules that train or evaluate
# networks get PyTorch with CUDA unless the config pins the CPU; the rest get the CPU build.
TORCH_ENV = "../../envs/torch-cpu.yaml" if config["device"] == "cpu" else "../../envs/torch-cuda.yaml"
# Both install this package from the
# checkout: envs/*.yaml name it as ${LOSSLANDSCAPE_ROOT}, which pip expands.
os.environ.setdefault("LOSSLANDSCAPE_ROOT", str(Path(workflow.basedir)))


def plane_directions(wildcards):
    """A plane's directions: those of its run under its normalisation (1D planes use x only)."""
    if wildcards.plane == cfg.PCA_PLANE:
        return f"{OUT}/trajectory/{wildcards.run}/pca.h5"
    return f"{OUT}/directions/{wildcards.run}/{config['landscape']['planes'][wildcards.plane]['norm']}.h5"


def surface_shards(wildcards):
    """Shard files of a plane; none when one job computes the whole plane."""
    n = cfg.shard_count(config, wildcards.plane)
    if n == 1:
        return []
    return [f"{OUT}/surface/{wildcards.run}/{wildcards.plane}/shard-{i}-of-{n}.h5" for i in range(n)]


def all_surfaces(wildcards=None):
    return [f"{OUT}/surface/{run}/{plane}.h5" for run in RUNS for plane in cfg.planes_for(config, run)]


def all_trajectories(wildcards=None):
    runs = cfg.trajectory_runs(config)
    return [f"{OUT}/{stage}/{run}/pca.h5" for run in runs for stage in ("trajectory", "surface")]


def all_hessians(wildcards=None):
    plane = config["landscape"]["hessian"]["plane"]
    return [f"{OUT}/hessian/{run}/{plane}.h5" for run in cfg.hessian_runs(config)]


def all_interpolations(wildcards=None):
    return [f"{OUT}/interpolation/{pair}.h5" for pair in cfg.interpolation_pairs(config)]


def _panel_files(fig, run, row):
    """What figure `fig` reads for the panel of `run` (in layout row `row`)."""
    files = {"final": f"{OUT}/train/{run}/final.pt"}
    files.update({plane: f"{OUT}/surface/{run}/{plane}.h5" for plane in cfg.FIGURE_PLANES.get(fig, [])})
    if fig == "fig2":
        files["norms"] = f"{OUT}/weights/{run}/norms.tsv"
        files["histogram"] = f"{OUT}/weights/{run}/histogram.tsv"
        pair = next(name for name, p in config["landscape"]["interpolations"].items() if [p["a"], p["b"]] == row)
        if all(r in RUNS for r in row):
            files["interpolation"] = f"{OUT}/interpolation/{pair}.h5"
    elif fig == "fig7":
        files["hessian"] = f"{OUT}/hessian/{run}/{config['landscape']['hessian']['plane']}.h5"
    elif fig == "figB":
        files["pca"] = f"{OUT}/trajectory/{run}/pca.h5"
        files["pca-surface"] = f"{OUT}/surface/{run}/{cfg.PCA_PLANE}.h5"
    return files


def figure_layout(wildcards):
    """Rows of panels of a figure: each run, whether it is built, and the files drawn for it."""
    rows = config["figures"]["panels"][wildcards.fig]
    return [
        [{"run": run, "built": run in RUNS, "files": _panel_files(wildcards.fig, run, row) if run in RUNS else {}}
         for run in row]
        for row in rows
    ]


def figure_inputs(wildcards):
    return [path for row in figure_layout(wildcards) for panel in row for path in panel["files"].values()]


def figure_runs(wildcards):
    return [run for row in config["figures"]["panels"][wildcards.fig] for run in row if run in RUNS]


def all_figures(wildcards=None):
    return [f"{OUT}/figures/{fig}.png" for fig in cfg.figure_names(config)]


def all_vtp(wildcards=None):
    return [f"{OUT}/figures/vtp/{run}/{cfg.VTP_PLANE}.vtp" for run in cfg.vtp_runs(config)]


def scorecard_groups():
    """The runs the scorecard compares: Fig 2's batch pairs, Fig 5's depth rows, Fig 6's width rows."""
    panels = config["figures"]["panels"]
    return {"batch": panels.get("fig2", []), "depth": panels.get("fig5", []), "width": panels.get("fig6", [])}
