"""Model zoo of the paper: VGG-9, CIFAR ResNet-d / WRN-d-k (with or without shortcuts), DenseNet-121.

``build_model`` turns a config ``spec`` dict into a freshly initialised network, so every
experiment constructs models the same way and records ``model.scale_info``.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .densenet import DenseNetCifar
from .resnet import BasicBlock, ResNetCifar
from .vgg import VGG9, init_weights

MODEL_NAMES = ("vgg9", "resnet", "densenet121")

__all__ = ["MODEL_NAMES", "build_model", "VGG9", "ResNetCifar", "BasicBlock", "DenseNetCifar",
           "init_weights"]


def build_model(spec: dict[str, Any], in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Build the network named by ``spec["model"]``.

    Keys: ``model``; ``depth``, ``width`` (default 1) and ``shortcut`` (default True) for
    ResNet; ``width_scale`` (default 1.0) for all, shrinking base widths for CPU presets.
    Other keys are ignored so a full experiment config section can be passed. Raises
    ValueError on anything invalid, naming the offending value.
    """
    name = spec.get("model")
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    width_scale = spec.get("width_scale", 1.0)
    if isinstance(width_scale, bool) or not isinstance(width_scale, (int, float)) or not width_scale > 0:
        raise ValueError(f"width_scale must be a number > 0; got {width_scale!r}")
    for key, val in (("in_channels", in_channels), ("image_size", image_size), ("num_classes", num_classes)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{key} must be a positive int; got {val!r}")
    if name == "vgg9":
        return VGG9(in_channels, image_size, num_classes, width_scale)
    if name == "densenet121":
        return DenseNetCifar(in_channels, image_size, num_classes, width_scale)
    if "depth" not in spec:
        raise ValueError("resnet spec needs 'depth' with (depth-2) % 6 == 0, e.g. 20, 56, 110")
    shortcut = spec.get("shortcut", True)
    if not isinstance(shortcut, bool):
        raise ValueError(f"shortcut must be true/false; got {shortcut!r}")
    return ResNetCifar(spec["depth"], in_channels, num_classes, spec.get("width", 1), shortcut, width_scale)
