"""Shared fixtures: the repository's config, validated, and small recipes for fast training."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from losslandscape import config as cfg

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def raw_config() -> dict:
    """config.yaml as a user wrote it (a fresh copy per test)."""
    return copy.deepcopy(cfg.load_yaml(REPO / "config.yaml"))


@pytest.fixture
def tiny_recipe(raw_config):
    """A recipe maker: run `name` on 200 digits for `epochs` epochs at the tiny preset's scale."""

    def make(name: str = "resnet20", epochs: int = 3, **overrides) -> dict:
        raw = copy.deepcopy(raw_config)
        raw["preset"] = "tiny"
        raw["datasets"]["digits"]["train_size"] = 200
        raw["presets"]["tiny"]["epochs"] = epochs
        checked = cfg.validate(raw, SCHEMA)
        recipe = cfg.run_recipe(checked, name)
        recipe.update(overrides)
        return recipe

    return make
