"""Validation of the pipeline's config and resolution of one run's recipe.

Every mistake is reported as one ConfigError naming the key, the bad value and what is
allowed, before Snakemake schedules any job.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config value that the pipeline cannot run with."""


def load_yaml(path: str | Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def validate(config: dict, schema_path: str | Path) -> dict:
    """Check `config` against the schema and the cross-key rules; return it with defaults filled."""
    config = copy.deepcopy(config)
    schema = load_yaml(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(_describe(errors[0], schema))
    _fill_defaults(config, schema, schema)
    _check_cross_keys(config)
    return config


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError, root: dict) -> str:
    """One sentence: which key, which value, what is allowed."""
    key = _key(error.absolute_path)
    value = error.instance
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed))
        bad = unknown[0] if unknown else "?"
        where = f"{key}.{bad}" if error.absolute_path else bad
        hint = difflib.get_close_matches(bad, allowed, n=1)
        msg = f"config: unknown key '{where}' (value {value.get(bad)!r})."
        if allowed:
            msg += f" Allowed keys there: {', '.join(allowed)}."
        if hint:
            msg += f" Did you mean '{hint[0]}'?"
        return msg
    if kind == "required":
        return f"config: '{key}' lacks a required key: {error.message.split(' is')[0]}."
    if kind == "enum":
        return f"config: '{key}' = {value!r} is not allowed; choose one of: {', '.join(map(str, error.validator_value))}."
    if kind == "anyOf":
        choices = " or ".join(_alternative(sub) for sub in error.validator_value)
        return f"config: '{key}' = {value!r} is not allowed; it must be {choices}."
    if kind == "type":
        return f"config: '{key}' = {value!r} has the wrong type; it must be of type {error.validator_value}."
    bounds = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
        "minProperties": "entries >=",
    }
    if kind in bounds:
        return f"config: '{key}' = {value!r} is out of range; it must be {bounds[kind]} {error.validator_value}."
    if kind == "pattern":
        return f"config: '{key}' = {value!r} is not a valid name; use letters, digits, '_', '.', '+' or '-'."
    return f"config: '{key}' = {value!r} is invalid: {error.message}."


def _alternative(schema: dict) -> str:
    """One branch of an anyOf in words: 'auto', or 'an integer >= 1'."""
    if "const" in schema:
        return repr(schema["const"])
    text = f"a value of type {schema.get('type', 'any')}"
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    return text


def _fill_defaults(node: Any, schema: dict, root: dict) -> None:
    """Fill `default`s of the schema into `node`, recursing through properties and maps."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if not isinstance(node, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in node and "default" in sub:
            node[name] = copy.deepcopy(sub["default"])
        if name in node:
            _fill_defaults(node[name], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in node.items():
            if name not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def _check_cross_keys(config: dict) -> None:
    presets = config["presets"]
    if config["preset"] not in presets:
        raise ConfigError(
            f"config: 'preset' = {config['preset']!r} names no preset; choose one of: {', '.join(presets)}."
        )
    for name, run in config["runs"].items():
        _check_run(name, run)
    for name in config["select"]:
        _check_run_name(config, "select", name)
    _check_landscape(config)
    _check_figures(config)
    preset = presets[config["preset"]]
    _check_preset(config["preset"], preset, config)
    if preset["dataset"] == "cifar10":
        _check_cifar_folder(config["datasets"].setdefault("cifar10", {"root": "data/cifar10", "download": False}))


def _check_run_name(config: dict, key: str, run: str) -> None:
    """A key that names a run (select, a plane's or figure's runs, ...) must name one of `runs`."""
    if run not in config["runs"]:
        hint = difflib.get_close_matches(run, config["runs"], n=1)
        raise ConfigError(
            f"config: '{key}' names run {run!r}, which is not in 'runs'."
            + (f" Did you mean {hint[0]!r}?" if hint else f" Known runs: {', '.join(config['runs'])}.")
        )


def _check_run(name: str, run: dict) -> None:
    where = f"runs.{name}"
    if run["model"] == "resnet":
        depth = run.get("depth")
        if depth is None:
            raise ConfigError(f"config: '{where}' uses model resnet but gives no 'depth' (e.g. 20, 56 or 110).")
        if (depth - 2) % 6:
            raise ConfigError(
                f"config: '{where}.depth' = {depth} is not a CIFAR ResNet depth; it must be 6n + 2 (20, 56, 110, ...)."
            )
    else:
        for key in ("depth", "width"):
            if key in run and not (key == "width" and run[key] == 1):
                raise ConfigError(f"config: '{where}.{key}' = {run[key]!r} applies only to model resnet, not {run['model']}.")
        if run.get("shortcut") is False:
            raise ConfigError(f"config: '{where}.shortcut' = false applies only to model resnet, not {run['model']}.")
    if "batch_size" in run and "batch_fraction" in run:
        raise ConfigError(
            f"config: '{where}' sets both batch_size ({run['batch_size']}) and batch_fraction "
            f"({run['batch_fraction']}); keep one."
        )


def _check_landscape(config: dict) -> None:
    """Planes and interpolations may only name runs of the catalogue."""
    landscape = config["landscape"]
    named = [(f"landscape.planes.{p}.runs", r) for p, s in landscape["planes"].items() for r in s.get("runs", [])]
    named += [(f"landscape.interpolations.{i}.{end}", pair[end])
              for i, pair in landscape["interpolations"].items() for end in "ab"]
    if PCA_PLANE in landscape["planes"]:
        raise ConfigError(f"config: 'landscape.planes.{PCA_PLANE}' is reserved for the trajectory plane; rename it.")
    named += [("landscape.hessian.runs", r) for r in landscape["hessian"]["runs"]]
    for key, run in named:
        _check_run_name(config, key, run)
    plane = landscape["hessian"]["plane"]
    if plane not in landscape["planes"] or landscape["planes"][plane]["dims"] != 2:
        planes_2d = [p for p, spec in landscape["planes"].items() if spec["dims"] == 2]
        raise ConfigError(f"config: 'landscape.hessian.plane' = {plane!r} must name a 2D plane of 'landscape.planes': "
                          f"one of {', '.join(planes_2d) or '(none defined)'}.")
    low, high = landscape["interpolation_range"]
    if low >= high:
        raise ConfigError(f"config: 'landscape.interpolation_range' = {[low, high]} must be [min, max] "
                          "with min < max (the reference's -0.5 to 1.5: [-0.5, 1.5]).")


def _check_preset(name: str, scale: dict, config: dict) -> None:
    """Scales that pass the schema yet cannot give the outputs asked for."""
    where = f"presets.{name}"
    points, stride = scale["landscape"]["points_2d"], scale["hessian"]["stride"]
    if config["landscape"]["hessian"]["runs"] and (points - 1) // stride + 1 < 2:
        raise ConfigError(
            f"config: '{where}.hessian.stride' = {stride} leaves fewer than 2 points per axis of the "
            f"{points} x {points} grid ('{where}.landscape.points_2d'); it must be at most {points - 1}."
        )
    if scale["epochs"] < 2 and trajectory_runs(config):
        raise ConfigError(
            f"config: '{where}.epochs' = {scale['epochs']} is too few for the trajectory runs "
            f"({', '.join(trajectory_runs(config))}): a PCA of the path needs 3 checkpoints; it must be >= 2."
        )


def _check_figures(config: dict) -> None:
    """A figure may only draw runs of the catalogue, and only what the pipeline computes for them."""
    figures, landscape = config["figures"], config["landscape"]
    start, stop, step = figures["contour_levels"]
    if not (start < stop and step > 0):
        raise ConfigError(f"config: 'figures.contour_levels' = {[start, stop, step]} must be [start, stop, step] "
                          "with start < stop and step > 0, e.g. [0.1, 10, 0.5].")
    pairs = {(p["a"], p["b"]) for p in landscape["interpolations"].values()}
    for fig, rows in figures["panels"].items():
        key = f"figures.panels.{fig}"
        for row in rows:
            for run in row:
                _check_run_name(config, key, run)
                for plane in FIGURE_PLANES.get(fig, []):
                    if plane not in planes_for(config, run):
                        raise ConfigError(f"config: '{key}' draws the {plane!r} surface of run {run!r}, which "
                                          f"'landscape.planes' does not give that run; add it there or drop the run.")
            if fig == "fig2" and (len(row) != 2 or tuple(row) not in pairs):
                raise ConfigError(f"config: '{key}' row {row} must be two runs [a, b] that form a pair of "
                                  "'landscape.interpolations'.")
            if fig == "fig7":
                for run in set(row) - set(landscape["hessian"]["runs"]):
                    raise ConfigError(f"config: '{key}' draws the Hessian map of run {run!r}; add it to "
                                      "'landscape.hessian.runs' or drop it from the figure.")
            if fig == "figB":
                for run in row:
                    if not config["runs"][run]["trajectory"]:
                        raise ConfigError(f"config: '{key}' draws the trajectory of run {run!r}; set "
                                          f"'runs.{run}.trajectory: true' or drop it from the figure.")
    for run in figures["vtp_runs"]:
        _check_run_name(config, "figures.vtp_runs", run)
        if VTP_PLANE not in planes_for(config, run):
            raise ConfigError(f"config: 'figures.vtp_runs' names run {run!r}, which has no {VTP_PLANE!r} plane.")


def _check_cifar_folder(settings: dict) -> None:
    folder = Path(settings["root"]) / "cifar-10-batches-py"
    if not settings.get("download") and not (folder / "test_batch").exists():
        raise ConfigError(
            f"config: 'datasets.cifar10.root' = {settings['root']!r} holds no CIFAR-10 ({folder}/test_batch is missing). "
            "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into that folder, "
            "or set 'datasets.cifar10.download: true' to let the pipeline download it."
        )


def selected_runs(config: dict) -> list[str]:
    """The runs to build: `select`, or the whole catalogue when it is empty."""
    return list(config["select"]) or list(config["runs"])


def preset(config: dict) -> dict:
    return config["presets"][config["preset"]]


def outdir(config: dict) -> str:
    return config.get("outdir") or f"results/{config['preset']}"


def run_recipe(config: dict, name: str) -> dict:
    """Everything that determines run `name`'s training, at the chosen preset's scale.

    The pipeline passes this dict to the training rule as a param, so a change to any value
    in it (and only to those) reruns that run's branch.
    """
    run = config["runs"][name]
    scale = preset(config)
    dataset = scale["dataset"]
    model = {"model": run["model"], "width_scale": scale["width_scale"]}
    if run["model"] == "resnet":
        model.update(depth=run["depth"], width=run["width"], shortcut=run["shortcut"])
    data_settings = {k: v for k, v in config["datasets"].get(dataset, {}).items() if k != "download"}
    return {
        "run": name,
        "dataset": dataset,
        "data_settings": data_settings,
        "model": model,
        "optimizer": run["optimizer"],
        "lr": run["lr"],
        "momentum": config["training"]["momentum"],
        "nesterov": config["training"]["nesterov"],
        "weight_decay": run["weight_decay"],
        "batch_size": run.get("batch_size", None if "batch_fraction" in run else scale["batch_size"]),
        "batch_fraction": run.get("batch_fraction"),
        "epochs": scale["epochs"],
        "save_epoch": 1 if run["trajectory"] else scale["save_epoch"],
        "lr_milestones": config["training"]["lr_milestones"],
        "lr_gamma": config["training"]["lr_gamma"],
        "warmup_epochs": scale["warmup_epochs"],
        "seed": config["training"]["seed"],
    }


def planes_for(config: dict, run: str) -> list[str]:
    """The planes computed for `run` (a plane without `runs` applies to every run)."""
    planes = config["landscape"]["planes"]
    return [name for name, plane in planes.items() if "runs" not in plane or run in plane["runs"]]


PCA_PLANE = "pca"  # the plane of a run's optimiser path (appendix B)
VTP_PLANE = "filter-2d"  # the surface exported for ParaView

FIGURES_ALL = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "figA2", "figB")

# The surfaces each figure draws for every run of its panels (fig2, fig7 and figB draw
# interpolations, Hessian maps and trajectories instead).
FIGURE_PLANES = {
    "fig1": ["filter-2d"],
    "fig3": ["filter-1d", "filter-2d"],
    "fig4": ["filter-2d"],
    "fig5": ["filter-2d"],
    "fig6": ["filter-2d"],
    "figA2": ["none-1d", "layer-1d", "filter-1d", "none-2d", "layer-2d", "filter-2d"],
}


def trajectory_runs(config: dict) -> list[str]:
    """Runs whose optimiser path is analysed (checkpointed every epoch)."""
    return [run for run in selected_runs(config) if config["runs"][run]["trajectory"]]


def plane_settings(config: dict, plane: str) -> dict:
    """What defines a plane's directions."""
    if plane == PCA_PLANE:
        return {"norm": "pca", "dims": 2, "ignore_biasbn": True}
    spec = config["landscape"]["planes"][plane]
    return {"norm": spec["norm"], "dims": spec["dims"], "ignore_biasbn": config["landscape"]["ignore_biasbn"],
            "seed": config["landscape"]["seed"]}


def grid_settings(config: dict) -> dict:
    scale = preset(config)["landscape"]
    return {k: scale[k] for k in ("span", "points_1d", "points_2d")}


def evaluation_settings(config: dict) -> dict:
    """How a loss is evaluated: only `train_subset` and `precision` change the values beyond float rounding."""
    landscape = config["landscape"]
    return {"eval_batch_size": landscape["eval_batch_size"], "fold_bn": landscape["fold_bn"],
            "channels_last": landscape["channels_last"], "subset_seed": landscape["subset_seed"],
            "points_per_call": landscape["points_per_call"], "precision": landscape["precision"],
            "train_subset": preset(config)["landscape"]["train_subset"]}


def shard_count(config: dict, plane: str) -> int:
    """2D planes are split into the preset's number of shards; a line is one job."""
    return preset(config)["landscape"]["shards"] if plane_settings(config, plane)["dims"] == 2 else 1


def interpolation_pairs(config: dict) -> dict[str, dict]:
    """Interpolations whose two runs are both being built."""
    runs = set(selected_runs(config))
    pairs = config["landscape"]["interpolations"]
    return {name: pair for name, pair in pairs.items() if pair["a"] in runs and pair["b"] in runs}


def interpolation_settings(config: dict) -> dict:
    low, high = config["landscape"]["interpolation_range"]
    return {"min": low, "max": high, "points": preset(config)["landscape"]["interpolation_points"]}


def hessian_runs(config: dict) -> list[str]:
    """Runs that get a Hessian eigen-map (Fig 7)."""
    return [run for run in config["landscape"]["hessian"]["runs"] if run in selected_runs(config)]


def hessian_settings(config: dict) -> dict:
    """How the eigen-maps are computed: the preset's grid stride and data, the global solver settings."""
    spec, scale = config["landscape"]["hessian"], preset(config)["hessian"]
    return {"stride": scale["stride"], "train_subset": scale["train_subset"], "tol": spec["tol"],
            "maxiter": spec["maxiter"], "warm_start": spec["warm_start"], "batch_size": spec["batch_size"],
            "subset_seed": config["landscape"]["subset_seed"]}


def figure_names(config: dict) -> list[str]:
    """Figures with at least one built run among their panels."""
    runs = set(selected_runs(config))
    panels = config["figures"]["panels"]
    return [fig for fig, rows in panels.items() if any(run in runs for row in rows for run in row)]


def figure_style(config: dict) -> dict:
    figures = config["figures"]
    return {"contour_levels": figures["contour_levels"], "loss_max": figures["loss_max"], "zmax": figures["zmax"]}


def vtp_runs(config: dict) -> list[str]:
    return [run for run in config["figures"]["vtp_runs"] if run in selected_runs(config)]
