"""The config is checked before any job: each mistake gives one message naming key, value and fix."""

from __future__ import annotations

import pytest

from losslandscape import config as cfg

from conftest import SCHEMA


def test_repository_config_is_valid_and_defaults_are_filled(raw_config):
    checked = cfg.validate(raw_config, SCHEMA)
    assert checked["runs"]["resnet56"]["shortcut"] is True
    assert checked["runs"]["resnet56"]["width"] == 1
    assert checked["training"]["seed"] == 0


def test_catalogue_holds_every_run_of_the_paper(raw_config):
    runs = raw_config["runs"]
    vgg = [r for r in runs.values() if r["model"] == "vgg9"]
    assert {(r["optimizer"], r.get("batch_fraction"), r["weight_decay"]) for r in vgg} == {
        ("sgd", None, 0.0), ("sgd", 0.16384, 0.0), ("sgd", None, 5e-4), ("sgd", 0.16384, 5e-4), ("adam", None, 5e-4),
    }
    resnets = {(r["depth"], r.get("width", 1), r.get("shortcut", True)) for r in runs.values() if r["model"] == "resnet"}
    for depth in (20, 56, 110):
        assert {(depth, 1, True), (depth, 1, False)} <= resnets
    for k in (2, 4, 8):
        assert {(56, k, True), (56, k, False)} <= resnets
    assert any(r["model"] == "densenet121" for r in runs.values())
    assert runs["resnet56_bs4096"]["batch_fraction"] * 50000 == pytest.approx(4096)
    assert runs["vgg9_sgd_bs8192_wd0"]["batch_fraction"] * 50000 == pytest.approx(8192)
    # deep nets without shortcuts start at lr 0.01 (Section 6)
    assert runs["resnet56_noshort"]["lr"] == runs["resnet110_noshort"]["lr"] == 0.01


def test_paper_preset_is_the_papers_recipe(raw_config):
    raw_config["preset"] = "paper"
    raw_config["datasets"]["cifar10"]["download"] = True  # no folder needed to check the recipe
    recipe = cfg.run_recipe(cfg.validate(raw_config, SCHEMA), "resnet56")
    assert recipe["dataset"] == "cifar10" and recipe["epochs"] == 300 and recipe["batch_size"] == 128
    assert recipe["model"]["width_scale"] == 1.0
    assert (recipe["momentum"], recipe["nesterov"], recipe["lr"], recipe["weight_decay"]) == (0.9, True, 0.1, 5e-4)
    assert [round(f * 300) for f in recipe["lr_milestones"]] == [150, 225, 275]


DELETE = "<delete the key>"


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value == DELETE:
        del node[last]
    else:
        node[last] = value


BAD_CONFIGS = [
    # (key to set, value, words the message must contain)
    ("runs.resnet56.batchsize", 64, ["runs.resnet56.batchsize", "64", "batch_size"]),
    ("runs.resnet56.batch_size", -5, ["runs.resnet56.batch_size", "-5", ">= 1"]),
    ("runs.resnet56.model", "resnet57", ["runs.resnet56.model", "resnet57", "vgg9, resnet, densenet121"]),
    ("runs.resnet56.lr", "fast", ["runs.resnet56.lr", "fast", "number"]),
    ("runs.resnet56.lr", 0, ["runs.resnet56.lr", "0", "> 0"]),
    ("runs.resnet56.depth", 57, ["runs.resnet56.depth", "57", "6n + 2"]),
    ("runs.resnet56.optimizer", "rmsprop", ["runs.resnet56.optimizer", "rmsprop", "sgd, adam"]),
    ("runs.resnet56.batch_fraction", 1.5, ["runs.resnet56.batch_fraction", "1.5", "<= 1"]),
    ("runs.vgg9_sgd_bs128_wd0.depth", 20, ["runs.vgg9_sgd_bs128_wd0.depth", "20", "only to model resnet"]),
    ("presets.default.epochs", -1, ["presets.default.epochs", "-1", ">= 1"]),
    ("presets.default.dataset", "mnist", ["presets.default.dataset", "mnist", "cifar10, digits"]),
    ("preset", "huge", ["preset", "huge", "paper, default, tiny"]),
    ("device", "tpu", ["device", "tpu", "auto, cpu, cuda"]),
    ("select", ["resnet57"], ["select", "resnet57", "resnet56"]),
    ("training.momentum", 1.0, ["training.momentum", "1.0", "< 1"]),
    ("trainng", {}, ["trainng", "training"]),
    # issue 7's matrix: grids, ranges, names of runs elsewhere in the config, types from --config
    ("presets.tiny.landscape.points_2d", 1, ["presets.tiny.landscape.points_2d", "1", ">= 2"]),
    ("presets.tiny.landscape.span", -1.0, ["presets.tiny.landscape.span", "-1.0", "> 0"]),
    ("landscape.interpolation_range", [1.5, -0.5], ["landscape.interpolation_range", "[1.5, -0.5]", "min < max"]),
    ("landscape.interpolation_range", [1.0, 1.0], ["landscape.interpolation_range", "[1.0, 1.0]", "min < max"]),
    ("presets.default.hessian.stride", 11, ["presets.default.hessian.stride", "11", "at most 10"]),
    ("presets.default.epochs", 1, ["presets.default.epochs", "1", "trajectory", ">= 2"]),
    ("landscape.planes.filter-2d.runs", ["resnet57"], ["landscape.planes.filter-2d.runs", "resnet57", "resnet56"]),
    ("landscape.planes.filter-2d.dims", 3, ["landscape.planes.filter-2d.dims", "3", "1, 2"]),
    ("landscape.planes.filter-2d.norm", "unit", ["landscape.planes.filter-2d.norm", "unit", "filter, layer, none"]),
    ("landscape.interpolations.vgg9_wd0.b", "vgg9_bs8192",
     ["landscape.interpolations.vgg9_wd0.b", "vgg9_bs8192", "vgg9_sgd_bs8192_wd0"]),
    ("landscape.hessian.runs", ["resnet21"], ["landscape.hessian.runs", "resnet21", "resnet20"]),
    ("landscape.hessian.runs", ["mystery"], ["landscape.hessian.runs", "mystery", "Known runs", "resnet110_noshort"]),
    ("landscape.hessian.plane", "filter-1d", ["landscape.hessian.plane", "filter-1d", "filter-2d"]),
    ("landscape.hessian.maxiter", 0, ["landscape.hessian.maxiter", "0", ">= 1"]),
    ("landscape.eval_batch_size", 0, ["landscape.eval_batch_size", "0", ">= 1"]),
    ("select", "resnet20", ["select", "resnet20", "array"]),  # --config select=resnet20 instead of [resnet20]
    ("presets.default.epochs", "20", ["presets.default.epochs", "'20'", "integer"]),
    ("datasets.digits.train_size", 5000, ["datasets.digits.train_size", "5000", "<= 1700"]),
    ("runs.resnet56.weight_decay", -1e-4, ["runs.resnet56.weight_decay", "-0.0001", ">= 0"]),
    ("runs.resnet56", None, ["runs.resnet56", "None", "object"]),
    ("runs.resnet56.lr", DELETE, ["runs.resnet56", "lr", "required"]),
    ("landscape.planes.pca", {"norm": "filter", "dims": 2}, ["landscape.planes.pca", "reserved"]),
    ("landscape.points_per_call", 0, ["landscape.points_per_call", "0", "'auto' or a value of type integer >= 1"]),
    ("landscape.precision", "fp16", ["landscape.precision", "fp16", "float32, tf32, bf16"]),
    # figures naming runs that do not exist: BAD_FIGURE_CONFIGS below
]


@pytest.mark.parametrize("key,value,words", BAD_CONFIGS, ids=[f"{k}={v}" for k, v, _ in BAD_CONFIGS])
def test_bad_value_gives_one_clear_message(raw_config, key, value, words):
    _set(raw_config, key, value)
    with pytest.raises(cfg.ConfigError) as info:
        cfg.validate(raw_config, SCHEMA)
    message = str(info.value)
    for word in words:
        assert word in message, message


def test_missing_cifar10_folder_says_where_and_how(raw_config, tmp_path):
    raw_config["preset"] = "paper"
    raw_config["datasets"]["cifar10"]["root"] = str(tmp_path / "nowhere")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.validate(raw_config, SCHEMA)
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "cifar-10-python.tar.gz" in message and "download: true" in message


def test_batch_size_and_fraction_together_are_refused(raw_config):
    raw_config["runs"]["resnet56_bs4096"]["batch_size"] = 128
    with pytest.raises(cfg.ConfigError, match="both batch_size"):
        cfg.validate(raw_config, SCHEMA)


def test_recipe_holds_only_its_own_run(raw_config):
    """Changing one run leaves every other run's recipe (the rule's params) untouched."""
    before = cfg.validate(raw_config, SCHEMA)
    raw_config["runs"]["resnet20"]["lr"] = 0.05
    after = cfg.validate(raw_config, SCHEMA)
    changed = [r for r in before["runs"] if cfg.run_recipe(before, r) != cfg.run_recipe(after, r)]
    assert changed == ["resnet20"]


BAD_FIGURE_CONFIGS = [
    # (key to set, value, words the message must contain)
    ("figures.panels.fig5", [["resnet20", "resnet57"]], ["figures.panels.fig5", "resnet57", "resnet56"]),
    ("figures.panels.fig9", [["resnet20"]], ["figures.panels.fig9", "figB"]),
    ("figures.panels.fig7", [["wrn56_2"]], ["figures.panels.fig7", "wrn56_2", "landscape.hessian.runs"]),
    ("figures.panels.figB", [["resnet20"]], ["figures.panels.figB", "resnet20", "trajectory: true"]),
    ("figures.panels.fig2", [["vgg9_sgd_bs8192_wd0", "vgg9_sgd_bs128_wd0"]], ["figures.panels.fig2", "landscape.interpolations"]),
    ("figures.panels.figA2", [["resnet20"]], ["figures.panels.figA2", "layer-1d", "resnet20", "landscape.planes"]),
    ("figures.contour_levels", [10, 0.1, 0.5], ["figures.contour_levels", "start < stop"]),
    ("figures.vtp_runs", ["resnet5"], ["figures.vtp_runs", "resnet5"]),
]


@pytest.mark.parametrize("key,value,words", BAD_FIGURE_CONFIGS, ids=[f"{k}={v}" for k, v, _ in BAD_FIGURE_CONFIGS])
def test_bad_figure_setting_gives_one_clear_message(raw_config, key, value, words):
    _set(raw_config, key, value)
    with pytest.raises(cfg.ConfigError) as info:
        cfg.validate(raw_config, SCHEMA)
    for word in words:
        assert word in str(info.value)


def test_figures_with_no_built_run_are_skipped(raw_config):
    raw_config["select"] = ["resnet20"]
    checked = cfg.validate(raw_config, SCHEMA)
    assert cfg.figure_names(checked) == ["fig5", "fig7"]
    assert cfg.vtp_runs(checked) == []
