"""``vlpart convert``: an official VLPart checkpoint to safetensors."""

from __future__ import annotations

import argparse

from vlpart.core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser(
        "convert",
        help="convert an official VLPart checkpoint to safetensors",
        description="Convert a released VLPart detectron2 checkpoint (R50 Mask R-CNN or Swin-B "
        "Cascade, .pth) into OUT.safetensors plus its OUT.json sidecar.",
    )
    convert.add_argument("input", help="official checkpoint (.pth)")
    convert.add_argument("output", help="target .safetensors file")


def run(args: argparse.Namespace) -> None:
    from vlpart.model.checkpoint import sidecar_path
    from vlpart.model.convert import convert_official_checkpoint

    if not args.output.endswith(".safetensors"):
        raise InputError(f"{args.output}: the output must be a .safetensors file")
    out = convert_official_checkpoint(args.input, args.output)
    print(f"wrote {out} and {sidecar_path(out)}")
