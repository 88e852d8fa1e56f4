"""DenseNet-121 (BC, compression 0.5) adapted to CIFAR: 3x3 stem, no initial max-pool."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .vgg import init_weights, scaled

DENSENET121_BLOCKS = (6, 12, 24, 16)
DENSENET_GROWTH = 32


class Bottleneck(nn.Module):
    """BN-ReLU-Conv1x1(4g)-BN-ReLU-Conv3x3(g); its g new maps are concatenated to the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def transition(cin: int, cout: int) -> nn.Sequential:
    """BN-ReLU-Conv1x1 compression then 2x2 average pool (halves resolution)."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2))


class DenseNetCifar(nn.Module):
    """Dense blocks (6,12,24,16) with transitions after the first three, BN-ReLU, GAP, FC."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10,
                 width_scale: float = 1.0, blocks: tuple[int, ...] = DENSENET121_BLOCKS) -> None:
        super().__init__()
        if image_size % 8 != 0 or image_size <= 0:
            raise ValueError(f"densenet121 needs image_size divisible by 8 (three 2x2 avg-pools); "
                             f"got {image_size}")
        g = scaled(DENSENET_GROWTH, width_scale)
        c = 2 * g
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(Bottleneck(c, g))
                c += g
            if i < len(blocks) - 1:
                layers.append(transition(c, c // 2))
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)
        self.scale_info = {"width_scale": float(width_scale), "base_widths": [DENSENET_GROWTH],
                           "widths": [g]}
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
