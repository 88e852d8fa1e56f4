"""Tests pinning the model zoo: exact sizes, shortcut semantics, shapes, validation, init."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from losslandscape.models import MODEL_NAMES, BasicBlock, build_model


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def resnet(depth: int, **kw) -> nn.Module:
    return build_model({"model": "resnet", "depth": depth, **kw}, 3, 32, 10)


# ResNet-d, n = (d-2)/6 blocks per stage, CIFAR (3 in, 10 classes); conv3x3 c->c' = 9cc', BN = 2c:
#   stem 3*16*9 + 32 = 464;  stage-1 block 2*2304 + 64 = 4672
#   stage-2 first block 4608 + 9216 + 128 + proj(16*32 + 64 = 576) = 14528; later blocks 18560
#   stage-3 first block 18432 + 36864 + 256 + proj(32*64 + 128 = 2176) = 57728; later blocks 73984
#   fc 64*10 + 10 = 650   =>  total = 97216 n - 19174
#   n=3: 272474, n=9: 855770, n=18: 1730714
RESNET_PROJECTION_PARAMS = 576 + 2176


@pytest.mark.parametrize("depth,exact,approx", [(20, 272_474, 0.27e6), (56, 855_770, 0.86e6),
                                                (110, 1_730_714, 1.7e6)])
def test_resnet_exact_and_paper_parameter_counts(depth: int, exact: int, approx: float) -> None:
    n = n_params(resnet(depth))
    assert n == exact == 97216 * ((depth - 2) // 6) - 19174
    assert abs(n - approx) / approx < 0.03


def test_vgg9_exact_parameter_count() -> None:
    # conv(+bias)+BN per layer: 3->64: 1728+64+128 = 1920; 64->64: 36864+64+128 = 37056
    # 64->128: 73728+128+256 = 74112; 128->128: 147456+128+256 = 147840
    # 128->256: 294912+256+512 = 295680; 256->256 (x2): 589824+256+512 = 590592 each
    # fc 4096->256 + BN1d: 1048576+256+512 = 1049344; fc 256->10: 2570
    expected = 1920 + 37056 + 74112 + 147840 + 295680 + 2 * 590592 + 1049344 + 2570
    assert expected == 2_789_706
    assert n_params(build_model({"model": "vgg9"}, 3, 32, 10)) == expected


def test_densenet121_exact_parameter_count() -> None:
    g, c, total = 32, 64, 3 * 64 * 9  # stem conv
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):  # BN(c) + 1x1 c->4g + BN(4g) + 3x3 4g->g
            total += 2 * c + c * 4 * g + 2 * 4 * g + 4 * g * g * 9
            c += g
        if i < 3:  # transition BN(c) + 1x1 c->c/2
            total += 2 * c + c * (c // 2)
            c //= 2
    total += 2 * c + c * 10 + 10  # final BN + fc
    assert total == 6_956_298
    assert n_params(build_model({"model": "densenet121"}, 3, 32, 10)) == total


def test_noshort_has_no_projection_modules_and_loses_exactly_projection_params() -> None:
    short, noshort = resnet(56), resnet(56, shortcut=False)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in noshort.modules())
    assert not any(isinstance(m, nn.Identity) for m in noshort.modules())
    assert all(b.shortcut is None for b in noshort.modules() if isinstance(b, BasicBlock))
    proj = sum(n_params(b.shortcut) for b in short.modules()
               if isinstance(b, BasicBlock) and not isinstance(b.shortcut, nn.Identity))
    assert proj == RESNET_PROJECTION_PARAMS
    assert n_params(short) - n_params(noshort) == proj
    assert n_params(noshort) == 853_018


@torch.no_grad()
def test_noshort_block_adds_no_identity() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    for use_shortcut, expected in ((False, torch.zeros_like(x)), (True, torch.relu(x))):
        block = BasicBlock(8, 8, 1, shortcut=use_shortcut).eval()
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()  # residual branch now outputs exactly 0
        torch.testing.assert_close(block(x), expected)


SPECS = [{"model": "vgg9"}, {"model": "vgg9", "width_scale": 0.25},
         {"model": "resnet", "depth": 20}, {"model": "resnet", "depth": 20, "shortcut": False},
         {"model": "resnet", "depth": 20, "width_scale": 0.25},
         {"model": "resnet", "depth": 56, "width": 2},
         {"model": "densenet121", "width_scale": 0.25}, {"model": "densenet121"}]


@pytest.mark.parametrize("shape", [(3, 32), (1, 8)], ids=["cifar", "digits"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(map(str, s.values())))
@torch.no_grad()
def test_output_shape_is_batch_by_classes(spec: dict, shape: tuple[int, int]) -> None:
    channels, size = shape
    model = build_model(spec, channels, size, 10).eval()
    assert model(torch.randn(2, channels, size, size)).shape == (2, 10)
    assert model.scale_info["width_scale"] == spec.get("width_scale", 1.0)


def test_all_model_names_build() -> None:
    for name in MODEL_NAMES:
        build_model({"model": name, "depth": 20, "width_scale": 0.25}, 1, 8, 10)


def test_width_k_multiplies_stage_widths_not_stem() -> None:
    model = resnet(56, width=4)
    assert model.stem[0].out_channels == 16
    assert [stage[-1].conv2.out_channels for stage in (model.layer1, model.layer2, model.layer3)] \
        == [64, 128, 256]
    assert model.scale_info["widths"] == [64, 128, 256]


def test_width_scale_shrinks_base_widths() -> None:
    model = resnet(20, width_scale=0.5)
    assert model.scale_info["widths"] == [8, 16, 32] and model.stem[0].out_channels == 8
    vgg = build_model({"model": "vgg9", "width_scale": 0.25}, 3, 32, 10)
    assert [m.out_channels for m in vgg.modules() if isinstance(m, nn.Conv2d)] == [16, 16, 32, 32, 64, 64, 64]
    assert build_model({"model": "densenet121", "width_scale": 0.01}, 3, 32, 10).scale_info["widths"] == [1]


@pytest.mark.parametrize("spec,size,match", [
    ({"model": "alexnet"}, 32, r"unknown model 'alexnet'.*vgg9, resnet, densenet121"),
    ({"model": "resnet", "depth": 21}, 32, r"\(depth-2\) % 6 == 0.*21"),
    ({"model": "resnet"}, 32, r"needs 'depth'"),
    ({"model": "resnet", "depth": 20, "width": 0}, 32, r"width"),
    ({"model": "vgg9"}, 30, r"divisible by 8.*30"),
    ({"model": "densenet121"}, 12, r"divisible by 8.*12"),
    ({"model": "vgg9", "width_scale": 0}, 32, r"width_scale"),
])
def test_bad_spec_raises_helpful_value_error(spec: dict, size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(spec, 3, size, 10)


def test_init_kaiming_fan_in_and_bn_identity() -> None:
    torch.manual_seed(0)
    model = build_model({"model": "vgg9"}, 3, 32, 10)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]  # 256x256x3x3, ~590k weights
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.01)
    assert torch.all(conv.bias == 0)
    for m in resnet(20).modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
