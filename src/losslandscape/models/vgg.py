"""VGG-9 for CIFAR-sized inputs, as used in Li et al. (2018).

Every conv has a bias *and* a BatchNorm: the paper's reference VGG-9 does this, and
keeping it makes the parameter count (and hence filter-normalised directions) match.
"""
from __future__ import annotations

from torch import Tensor, nn

#: Channel plan: ints are 3x3 convs, "M" is a 2x2 max-pool (three pools → image_size/8).
VGG9_PLAN: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
VGG9_HIDDEN = 256


def scaled(base: int, width_scale: float) -> int:
    """Round ``base * width_scale`` half-up, never below 1 (so tiny CPU presets stay valid)."""
    return max(1, int(base * width_scale + 0.5))


def init_weights(model: nn.Module) -> nn.Module:
    """Shared init for all zoo models: He-normal convs (fan_in, ReLU), zero conv bias,
    BN at identity (weight 1, bias 0); Linear keeps PyTorch's default, as in the paper's code."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


class VGG9(nn.Module):
    """7 conv (+bias, BN, ReLU) layers with 3 max-pools, then FC(256)+BN1d+ReLU and a classifier."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10,
                 width_scale: float = 1.0) -> None:
        super().__init__()
        if image_size % 8 != 0 or image_size <= 0:
            raise ValueError(f"vgg9 needs image_size divisible by 8 (three 2x2 max-pools); got {image_size}")
        layers: list[nn.Module] = []
        c = in_channels
        for item in VGG9_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = scaled(int(item), width_scale)
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=True), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        s = image_size // 8
        hidden = scaled(VGG9_HIDDEN, width_scale)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * s * s, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        self.scale_info = {
            "width_scale": float(width_scale),
            "base_widths": [64, 128, 256, VGG9_HIDDEN],
            "widths": [scaled(b, width_scale) for b in (64, 128, 256, VGG9_HIDDEN)],
        }
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
