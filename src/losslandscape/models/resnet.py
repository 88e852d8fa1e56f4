"""CIFAR ResNet-d / Wide-ResNet-d-k with optional shortcuts ("-noshort"), after Li et al. (2018).

The paper's key contrast is ResNet vs. the same net with skip connections removed, so with
``shortcut=False`` a block has *no* addition and no projection modules at all.
"""
from __future__ import annotations

from torch import Tensor, nn

from .vgg import init_weights, scaled

RESNET_BASE_WIDTHS = (16, 32, 64)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3x3 conv without bias (a BN follows, so a bias would be redundant)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation block: ReLU(BN(conv(ReLU(BN(conv x)))) [+ shortcut(x)])."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.use_shortcut = shortcut
        self.shortcut: nn.Module | None = None
        if shortcut:
            if stride != 1 or cin != cout:  # shape changes → 1x1 projection
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(cout))
            else:
                self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class ResNetCifar(nn.Module):
    """Stem conv(16) + three stages of n=(depth-2)/6 blocks at 16k/32k/64k channels + GAP + FC."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10, width: int = 1,
                 shortcut: bool = True, width_scale: float = 1.0) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be an int with (depth-2) % 6 == 0 and depth >= 8 "
                             f"(e.g. 20, 56, 110); got {depth!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"ResNet width (widen factor k) must be an int >= 1; got {width!r}")
        n = (depth - 2) // 6
        stem = scaled(RESNET_BASE_WIDTHS[0], width_scale)  # stem is NOT widened by k
        widths = [scaled(b, width_scale) * width for b in RESNET_BASE_WIDTHS]
        self.stem = nn.Sequential(conv3x3(in_channels, stem), nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c = stem
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(c, w, stride, shortcut))
                c = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.scale_info = {
            "width_scale": float(width_scale),
            "base_widths": list(RESNET_BASE_WIDTHS),
            "width": width,
            "stem_width": stem,
            "widths": widths,
        }
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))
