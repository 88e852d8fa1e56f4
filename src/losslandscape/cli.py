"""Command line: a loss surface of a checkpoint, from this pipeline or of your own model.

    losslandscape surface --checkpoint results/default/train/resnet56/final.pt --dims 2 --points 21 --out s.h5
    losslandscape surface --model mypkg.nets:build --weights net.pt --data mypkg.data:loaders --out s.h5
    losslandscape vtp s.h5 s.vtp --zmax 10     # a 2D surface for ParaView

`--model` names a function returning an nn.Module, `--data` one returning {"train": loader, ...}
(or one loader); `--weights` is a state_dict saved with torch.save.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch


def _import(spec: str):
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"error: {spec!r} should look like package.module:function")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"error: cannot import {spec!r}: {exc}") from None


def _pipeline_checkpoint(path: str, device: torch.device):
    from . import data as datasets
    from .checkpoints import load_model

    model, ckpt = load_model(path, device)
    recipe = ckpt["recipe"]
    data = datasets.load_dataset(recipe["dataset"], recipe["data_settings"], seed=recipe["seed"])
    splits = {"train": (data.train.images, data.train.labels), "test": (data.test.images, data.test.labels)}
    return model, splits


def _own_model(args, device: torch.device):
    model = _import(args.model)()
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    loaders = _import(args.data)()
    return model.to(device), loaders if isinstance(loaders, dict) else {"train": loaders}


def _export_vtp(args) -> int:
    from .vtp import write_vtp

    try:
        write_vtp(args.surface, args.out, zmax=args.zmax, key=args.key)
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="losslandscape", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    surface = sub.add_parser("surface", help="compute a 1D or 2D random-direction loss surface")
    source = surface.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a final.pt / epoch-XXXX.pt written by this pipeline")
    source.add_argument("--model", help="package.module:function returning your nn.Module")
    surface.add_argument("--weights", help="state_dict for --model")
    surface.add_argument("--data", help="package.module:function returning a DataLoader or {split: DataLoader}")
    surface.add_argument("--dims", type=int, choices=(1, 2), default=2)
    surface.add_argument("--points", type=int, default=21, help="points per axis (default 21)")
    surface.add_argument("--span", type=float, default=1.0, help="coordinates run over [-span, span]")
    surface.add_argument("--norm", choices=("filter", "layer", "none"), default="filter")
    surface.add_argument("--seed", type=int, default=1)
    surface.add_argument("--keep-biasbn", action="store_true", help="perturb biases and BatchNorm parameters too")
    surface.add_argument("--device", default="auto")
    surface.add_argument("--out", required=True, help="HDF5 file to write")
    vtp = sub.add_parser("vtp", help="export a 2D surface file as ParaView .vtp (heights log(loss + 0.1))")
    vtp.add_argument("surface", help="a 2D surface HDF5 file (this pipeline's or `losslandscape surface`'s)")
    vtp.add_argument("out", help=".vtp file to write")
    vtp.add_argument("--zmax", type=float, default=10.0, help="clip the loss here before the log (default 10)")
    vtp.add_argument("--key", default="train_loss", help="the surface to export (default train_loss)")
    args = parser.parse_args(argv)
    if args.command == "vtp":
        return _export_vtp(args)

    from .api import loss_surface
    from .train import resolve_device

    device = resolve_device(args.device)
    if args.model and not args.data:
        parser.error("--model needs --data")
    model, splits = _pipeline_checkpoint(args.checkpoint, device) if args.checkpoint else _own_model(args, device)
    result = loss_surface(model, splits, dims=args.dims, span=args.span, points=args.points, norm=args.norm,
                          seed=args.seed, ignore_biasbn=not args.keep_biasbn, out=args.out)
    centre = tuple(n // 2 for n in result["train_loss"].shape)
    print(f"wrote {args.out}: train loss at the centre {result['train_loss'][centre]:.4g}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
