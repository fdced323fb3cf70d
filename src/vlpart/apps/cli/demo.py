"""``vlpart demo``: the local web page."""

from __future__ import annotations

import argparse

from vlpart.apps.cli._options import QUICKSTART_OUT
from vlpart.core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="a local web page to segment objects and parts",
        description="Serve a web page (Gradio) where you upload or paste an image, type a "
        "vocabulary and see the objects and parts found: an overlay, a table of instances and "
        "downloads of the COCO results and the overlay. It binds 127.0.0.1 (this machine "
        "only) unless --host says otherwise, limits upload size and image pixels, runs one "
        "request at a time and sends nothing anywhere.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--weights",
        help="our .safetensors checkpoint or an official VLPart .pth "
        f"(default: ./{QUICKSTART_OUT}/model.safetensors, written by 'vlpart quickstart')",
    )
    source.add_argument("--model", help="a model name, loaded with PartSegmenter.from_pretrained")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--examples",
        default="../shared/data/pascal_part_examples",
        help="folder whose first images are offered as examples, when it exists "
        "(default ../shared/data/pascal_part_examples)",
    )
    # Defaults of the three limits: vlpart.apps.demo.DemoLimits (the help texts name them).
    p.add_argument("--max-upload-mb", type=float, help="largest upload in MB (default 25)")
    p.add_argument(
        "--max-pixels",
        type=int,
        help="largest image (width x height), refused from its header (default 24000000)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        help="model runs at a time; further requests wait in a queue (default 1)",
    )


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from vlpart.apps.demo import DemoHandler, DemoLimits, find_examples, serve
    from vlpart.inference.segmenter import SegmenterSpec

    given = {
        "max_upload_mb": args.max_upload_mb,
        "max_pixels": args.max_pixels,
        "concurrency": args.concurrency,
    }
    limits = DemoLimits(**{k: v for k, v in given.items() if v is not None})
    weights = args.model or args.weights
    if weights is None:
        default = Path(QUICKSTART_OUT) / "model.safetensors"
        if not default.is_file():
            raise InputError(
                f"no model: pass --weights FILE or --model NAME, or run 'vlpart quickstart' "
                f"(it writes {default})"
            )
        weights = str(default)
    segmenter = SegmenterSpec(weights).build()
    try:
        serve(
            DemoHandler(segmenter, limits=limits),
            host=args.host,
            port=args.port,
            examples=find_examples(args.examples),
        )
    except OSError as err:
        raise InputError(f"cannot serve on {args.host}:{args.port} ({err})") from None
