# Helpers shared by the rule files: the resolved config, per-run settings, code versions.

import hashlib
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
    "plots": ["plots.py", "surface.py", "io.py"],
    "hessian": ["hessian.py", "jobs.py", "surface.py", "checkpoints.py", "models", "data.py", "io.py"],
    "trajectory": ["trajectory.py", "jobs.py", "directions.py", "checkpoints.py", "models", "io.py"],
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
    return 1 if config["device"] == "cuda" else 0


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
    return [f"{OUT}/figures/trajectory/{run}.png" for run in runs]


def all_hessians(wildcards=None):
    plane = config["landscape"]["hessian"]["plane"]
    return [f"{OUT}/hessian/{run}/{plane}.h5" for run in cfg.hessian_runs(config)]


def all_interpolations(wildcards=None):
    return [f"{OUT}/interpolation/{pair}.h5" for pair in cfg.interpolation_pairs(config)]
