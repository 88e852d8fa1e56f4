"""BatchNorm folding must compute exactly the eval-mode network, before and after weight changes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from losslandscape.fold import FoldedNetwork
from losslandscape.models import build_model

# (spec, pairs expected). ResNet-20: stem + 9 blocks x 2 convs, +2 projections with shortcuts.
# WRN-56-2: stem + 27 x 2, +3 projections (the stem is not widened, so stage 1 projects too).
# DenseNet-121: only each bottleneck's 1x1 conv → BN (58); the BN→ReLU→conv ones stay.
MODELS = {
    "vgg9": ({"model": "vgg9"}, 8),  # 7 conv + 1 linear
    "resnet20": ({"model": "resnet", "depth": 20}, 21),
    "resnet20_noshort": ({"model": "resnet", "depth": 20, "shortcut": False}, 19),
    "wrn56_2": ({"model": "resnet", "depth": 56, "width": 2, "width_scale": 0.25}, 58),
    "densenet121": ({"model": "densenet121", "width_scale": 0.125}, 58),
}
SHAPES = [(1, 8), (3, 32)]  # digits, CIFAR


@pytest.fixture(autouse=True)
def one_thread():
    """Batches of 4 gain nothing from threads, and on a busy machine OpenMP threads spinning
    at barriers make these tests many times slower; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def make(name: str, c: int, hw: int) -> nn.Module:
    """A zoo model whose BNs are far from identity, so a wrong fold cannot go unnoticed."""
    torch.manual_seed(0)
    model = build_model(MODELS[name][0], c, hw, 10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model.eval()


@pytest.mark.parametrize("c,hw", SHAPES)
@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_folded_matches_eval_model_and_follows_refresh(name: str, c: int, hw: int) -> None:
    model = make(name, c, hw)
    before = {n: m for n, m in model.named_modules()}
    folded = FoldedNetwork(model)
    assert {n: m for n, m in model.named_modules()} == before  # the model itself is untouched
    assert len(folded.folded_pairs) == MODELS[name][1]
    for conv, bn in folded.folded_pairs:
        assert isinstance(before[bn], (nn.BatchNorm1d, nn.BatchNorm2d))
        assert isinstance(before[conv], (nn.Conv2d, nn.Linear))
    x = torch.randn(4, c, hw, hw)
    assert rel_err(folded(x), model(x)) < 1e-4

    fused = [p for p in folded.graph_module.parameters()]
    ptrs = [p.data_ptr() for p in fused]
    for p in model.parameters():
        p.add_(0.1 * p.abs().mean() * torch.randn_like(p))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.add_(0.1)
    ref = model(x)
    assert rel_err(folded(x), ref) > 1e-3  # stale fused weights really differ
    folded.refresh()
    assert rel_err(folded(x), ref) < 1e-4
    assert [p.data_ptr() for p in folded.graph_module.parameters()] == ptrs  # refreshed in place


@pytest.mark.parametrize("name", ["vgg9", "resnet20", "densenet121"])
@torch.no_grad()
def test_channels_last_agrees(name: str) -> None:
    model = make(name, 3, 32)
    params = {n: (p, p.stride()) for n, p in model.named_parameters()}
    folded = FoldedNetwork(model, channels_last=True)
    x = torch.randn(4, 3, 32, 32)
    assert rel_err(folded(x), model(x)) < 1e-4
    assert all(p is q and p.stride() == s for (n, (p, s)), q in zip(params.items(), model.parameters()))


def test_refuses_training_mode() -> None:
    model = make("resnet20", 1, 8)
    folded = FoldedNetwork(model)
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        folded(torch.randn(2, 1, 8, 8))
