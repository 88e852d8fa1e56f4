"""Eval-mode BatchNorm folding, so each of the thousands of loss evaluations of a plot is cheaper.

In eval mode a BatchNorm is a fixed per-channel affine map, so a BN that directly follows a
conv (or a Linear) can be merged into it exactly: one layer, one pass over the activations
instead of two. Folding is done once on an ``torch.fx`` trace of the model; the fused weights
are then recomputed in place from the model's (perturbed) parameters for every grid point.
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

__all__ = ["FoldedNetwork"]

#: (layer type, BN type it may absorb). Exact types: a subclass may override ``forward``.
_FOLDABLE: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Linear, nn.BatchNorm1d),
)


def _fused_copy(layer: nn.Module) -> nn.Module:
    """A fresh layer of ``layer``'s shape with a bias (BN adds one) and no hooks or grads.

    Built anew rather than deep-copied so that forward hooks on the original are not copied
    onto a layer whose output now means something else (conv+BN, not conv).
    """
    kw = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    if isinstance(layer, nn.Conv2d):
        new: nn.Module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                   layer.stride, layer.padding, layer.dilation, layer.groups,
                                   True, layer.padding_mode, **kw)
    else:
        assert isinstance(layer, nn.Linear)
        new = nn.Linear(layer.in_features, layer.out_features, True, **kw)
    return new.requires_grad_(False).eval()


class FoldedNetwork:
    """An eval-mode copy of `model`'s computation with every Conv2d→BatchNorm2d and
    Linear→BatchNorm1d pair fused into one layer.

    It shares all other modules (and so their parameters) with `model`; after the caller
    changes `model`'s parameters or buffers in place, `refresh()` recomputes the fused
    layers' weights from them (a model moved to another device needs a new FoldedNetwork).

    A pair is fused only when the BN's sole input is the layer's output, that output has no
    other user, the BN keeps running statistics, and each module is called once in the trace
    (so the fused layer can take the original layer's place). The Linear→BN1d case assumes a
    2-D (N, C) activation, as in every model of the zoo. Unfused BNs (e.g. DenseNet's
    BN→ReLU→conv) run as they are, so `model` must stay in eval mode: `__init__` calls
    `model.eval()` and `__call__` refuses a model switched back to training.

    ``channels_last``: the input and the fused layers' weights (which this object owns) are
    put in channels-last format; shared modules are left untouched, so `model` is never
    altered (converting shared convs would re-point their ``.data`` and break any flat view
    the caller holds of the parameters). An unfused conv then still runs channels-last, as
    the oneDNN/cuDNN kernels follow the input's format.

    Fused layers carry no autograd link to `model`: this is for inference only.
    """

    def __init__(self, model: nn.Module, channels_last: bool = False) -> None:
        self._model = model.eval()
        self.channels_last = channels_last
        gm = fx.symbolic_trace(model)
        modules = dict(gm.named_modules())
        calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        self.folded_pairs: list[tuple[str, str]] = []
        self._triples: list[tuple[nn.Module, nn.Module, nn.Module]] = []  # (layer, bn, fused)
        for bn_node in list(gm.graph.nodes):
            if bn_node.op != "call_module" or len(bn_node.args) != 1 or bn_node.kwargs:
                continue
            src = bn_node.args[0]
            if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
                continue
            layer, bn = modules[src.target], modules[bn_node.target]
            if not any(type(layer) is lt and type(bn) is bt for lt, bt in _FOLDABLE):
                continue
            if (bn.running_mean is None or bn.running_var is None
                    or bn.num_features != layer.weight.shape[0]
                    or calls[src.target] != 1 or calls[bn_node.target] != 1):
                continue
            fused = _fused_copy(layer)
            if channels_last and isinstance(fused, nn.Conv2d):
                fused = fused.to(memory_format=torch.channels_last)
            # The trace's containers are its own (only leaves are shared with `model`), so the
            # fused layer can sit under the original layer's name without touching `model`.
            gm.add_submodule(src.target, fused)
            bn_node.replace_all_uses_with(src)
            gm.graph.erase_node(bn_node)
            self.folded_pairs.append((src.target, bn_node.target))
            self._triples.append((layer, bn, fused))
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
        self.graph_module = gm
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute every fused weight and bias from `model`'s current parameters and BN
        buffers, copying into the fused layers' existing tensors (no reallocation, so anything
        holding them, e.g. a compiled graph, stays valid)."""
        for layer, bn, fused in self._triples:
            fuse = fuse_conv_bn_weights if isinstance(layer, nn.Conv2d) else fuse_linear_bn_weights
            rm = bn.running_mean
            bn_w = bn.weight if bn.weight is not None else torch.ones_like(rm)  # affine=False
            bn_b = bn.bias if bn.bias is not None else torch.zeros_like(rm)
            w, b = fuse(layer.weight, layer.bias, rm, bn.running_var, bn.eps, bn_w, bn_b)
            fused.weight.copy_(w)
            fused.bias.copy_(b)

    def __call__(self, x: Tensor) -> Tensor:
        """The network's output for the batch ``x``, as ``model.eval()(x)`` would give it."""
        if self._model.training:
            raise RuntimeError("FoldedNetwork computes the eval-mode network, but its model is in "
                               "training mode (unfused BatchNorms would use batch statistics); "
                               "call model.eval() first")
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.graph_module(x)
