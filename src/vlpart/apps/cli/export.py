"""``vlpart export``: a model to ONNX."""

from __future__ import annotations

import argparse

from vlpart.apps.cli._options import add_text_options, segmenter_spec
from vlpart.core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="export a model to ONNX",
        description="Export the detector to an ONNX file that onnxruntime runs "
        "(PartSegmenter.from_onnx, or 'vlpart predict --weights OUT.onnx'). The graph takes "
        "one resized, normalised image of any size and returns boxes, scores, labels and "
        "28x28 mask probabilities; the vocabulary's text embeddings are baked in, or with "
        "--dynamic-vocab a second input.",
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="our .safetensors checkpoint or an official .pth")
    source.add_argument("--model", help="a model name from the model zoo")
    export.add_argument(
        "--vocab",
        dest="vocabulary",
        required=True,
        help="vocabulary baked into the graph (with --dynamic-vocab: the capture example)",
    )
    export.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx")
    export.add_argument(
        "--dynamic-vocab",
        action="store_true",
        help="take the text embeddings [C, D] as a graph input instead of baking them in",
    )
    export.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="int8: quantize the graph (onnxruntime static quantization, calibrated on "
        "--calibration; always a dynamic vocabulary; docs/int8.md)",
    )
    export.add_argument(
        "--calibration", nargs="+", metavar="IMAGES", help="int8: calibration images or folders"
    )
    export.add_argument("output", help="the .onnx file to write")
    add_text_options(export)


def run(args: argparse.Namespace) -> None:
    from vlpart.core.vocab import parse_vocabulary
    from vlpart.export.onnx import export_onnx

    if not args.output.endswith(".onnx"):
        raise InputError(f"{args.output}: the output must be a .onnx file")
    vocabulary = parse_vocabulary(args.vocabulary)
    segmenter = segmenter_spec(args, vocabulary=vocabulary).build()
    if args.precision == "int8":
        _export_int8(args, segmenter, vocabulary)
        return
    if args.calibration:
        raise InputError("--calibration is for --precision int8")
    out = export_onnx(segmenter, vocabulary, args.output, dynamic_vocab=args.dynamic_vocab)
    kind = "dynamic vocabulary" if args.dynamic_vocab else f"{len(vocabulary)} categories"
    print(f"wrote {out} ({kind})")


def _export_int8(args: argparse.Namespace, segmenter, vocabulary) -> None:
    import torch

    from vlpart.core.fileio import read_image
    from vlpart.inference.files import expand_inputs
    from vlpart.inference.int8_backend import write_int8

    if segmenter.model is None:
        raise InputError(f"{args.weights}: int8 export takes .safetensors or .pth weights")
    paths, _ = expand_inputs(args.calibration or [], recursive=False)
    if not paths:
        raise InputError("--precision int8 needs calibration images: give --calibration")
    images = [torch.from_numpy(read_image(p)).permute(2, 0, 1) for p in paths]
    out = write_int8(
        segmenter.model,
        args.output,
        images,
        segmenter.text_embeddings(vocabulary),
        text_encoder=segmenter.text_encoder.identity,
        template=segmenter.template,
    )
    print(f"wrote {out} (int8, dynamic vocabulary, calibrated on {len(images)} images)")
