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


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
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
    ("landscape.points_per_call", 0, ["landscape.points_per_call", "0", "'auto' or a value of type integer >= 1"]),
    ("landscape.precision", "fp16", ["landscape.precision", "fp16", "float32, tf32, bf16"]),
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
