"""Where ``precision="int8"`` loses accuracy: held-out mask AP50 of a quickstart model with one
group of layers at a time left in float, with and without the ReLU/ReLU6 folding that
:mod:`vlpart.export.quantize` does. Prints one JSON line per variant.

    flock /tmp/cpu.lock python benchmarks/int8_sensitivity.py runs/seeds/seed_0 --threads 2

The model of the quickstart run ``RUN`` (``model.safetensors``, ``world/``) is exported once
(dynamic vocabulary) and quantized per variant with onnxruntime's static QDQ quantization as
:func:`~vlpart.export.quantize.quantize_export` does (int8 per-channel weights, uint8 per-tensor
min/max activations), calibrated on training images ``--calibration START:COUNT`` (image ids of
``world/parts_base_train.json``, 1-based; the group sweep uses the first set, every further set
adds one row of the folded quantization), then evaluated on ``world/parts_val.json``. A group
is left in float by excluding its convolutions / linear layers (matched by weight name) from
quantization. The sweep is for reading, not a second int8 path: ``precision="int8"`` always
runs :func:`~vlpart.export.quantize.quantize_export`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import onnx
import torch

from vlpart.core.fileio import read_image
from vlpart.evaluation.model_eval import evaluate_model
from vlpart.export.onnx import capture_graph, set_metadata
from vlpart.export.quantize import QUANTIZED_OPS
from vlpart.inference.onnx_backend import OnnxBackend, graph_images
from vlpart.inference.segmenter import PartSegmenter

LAYER_OPS = ("Conv", "MatMul", "Gemm")
# Layer groups, by a test on the name of the layer's weight initializer.
GROUPS = {
    "stem (first conv)": lambda w: "conv_stem" in w,
    "depthwise convs": lambda w: "_depthwise_conv" in w,
    "expand/project 1x1 convs": lambda w: "_expand_conv" in w or "_project_conv" in w,
    "FPN": lambda w: ".fpn." in w,
    "RPN": lambda w: ".rpn." in w,
    "box head fc6/fc7": lambda w: ".box_head." in w,
    "region-embedding projection": lambda w: ".cls_score." in w,
    "box regression": lambda w: ".box_predictor.bbox_pred" in w,
    "mask head": lambda w: ".mask_head." in w or ".mask_predictor." in w,
}


class _Variant:
    """A backend (:mod:`vlpart.inference.backends`) that quantizes the prepared graph with
    ``options`` on its first call, calibrated with that call's vocabulary, then runs it."""

    device = torch.device("cpu")

    def __init__(self, model, prepared: Path, calibration, threads: int, **options) -> None:
        self.model, self.prepared, self.calibration = model, prepared, calibration
        self.threads, self.options, self._onnx = threads, options, None

    @property
    def transform(self):
        return self.model.transform

    @property
    def text_dim(self) -> int:
        return self.model.text_dim

    def detect(self, images, text_embeddings, **kwargs):
        if self._onnx is None:
            self._onnx = self._quantize(text_embeddings.detach().float().cpu().numpy())
        return self._onnx.detect(images, text_embeddings, **kwargs)

    def _quantize(self, embeddings) -> OnnxBackend:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        feeds = iter(
            {"image": image, "text_embeddings": embeddings}
            for picture in self.calibration
            for image in graph_images(self.model.transform([picture])[0])
        )

        class Reader:
            def get_next(self):
                return next(feeds, None)

        path = Path(tempfile.mkdtemp(prefix="vlpart-sweep-")) / "int8.onnx"
        quantize_static(
            str(self.prepared),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"MatMulConstBOnly": True},
            **self.options,
        )
        proto = onnx.load(str(path))
        _metadata(proto, self.model)
        onnx.save(proto, str(path))
        return OnnxBackend(path, num_threads=self.threads)


def _metadata(proto, model) -> None:
    set_metadata(proto, model, text_encoder="", template="", vocabulary=None, prompts=None)


def _images(world: Path, start: int, count: int) -> list[torch.Tensor]:
    """Training images ``start .. start + count - 1`` (1-based) as ``Tensor[3, H, W]`` uint8."""
    train = json.loads((world / "parts_base_train.json").read_text())["images"]
    return [
        torch.from_numpy(read_image(world / info["file_name"])).permute(2, 0, 1).contiguous()
        for info in train[start - 1 : start - 1 + count]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a vlpart quickstart output folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", nargs="+", default=["1:32"], help="START:COUNT ...")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    world = args.run / "world"
    seg = PartSegmenter.from_pretrained(args.run / "model.safetensors")
    model = seg.model.eval()
    tmp = Path(tempfile.mkdtemp(prefix="vlpart-sweep-"))
    proto = capture_graph(model, torch.zeros(1, model.text_dim), name="sweep")
    _metadata(proto, model)
    onnx.save(proto, str(tmp / "fp32.onnx"))
    quant_pre_process(str(tmp / "fp32.onnx"), str(tmp / "prepared.onnx"), skip_symbolic_shape=True)
    prepared = onnx.load(str(tmp / "prepared.onnx"))
    layers = [n for n in prepared.graph.node if n.op_type in LAYER_OPS and len(n.input) > 1]

    def run(name: str, backend) -> None:
        segmenter = (
            seg if backend is None else PartSegmenter(backend, seg.text_encoder, info=seg.info)
        )
        start = time.perf_counter()
        report = evaluate_model(segmenter, world / "parts_val.json", world, progress=False)
        row = {
            "variant": name,
            "mask_AP50": round(100 * report.metrics["segm"]["AP50"], 2),
            "mask_AP": round(100 * report.metrics["segm"]["AP"], 2),
            "box_AP50": round(100 * report.metrics["bbox"]["AP50"], 2),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(row), flush=True)

    sets = [tuple(map(int, spec.split(":"))) for spec in args.calibration]
    calibration = _images(world, *sets[0])
    run("fp32", None)
    for folded, ops in (("", LAYER_OPS), (", folded", QUANTIZED_OPS)):
        options = {"op_types_to_quantize": list(ops)}
        run(
            f"int8{folded}",
            _Variant(model, tmp / "prepared.onnx", calibration, args.threads, **options),
        )
        for group, in_group in GROUPS.items():
            excluded = [n.name for n in layers if in_group(n.input[1])]
            if excluded:
                backend = _Variant(
                    model,
                    tmp / "prepared.onnx",
                    calibration,
                    args.threads,
                    nodes_to_exclude=excluded,
                    **options,
                )
                run(f"int8{folded}, {group} float", backend)
    for start, count in sets[1:]:
        images = _images(world, start, count)
        options = {"op_types_to_quantize": list(QUANTIZED_OPS)}
        backend = _Variant(model, tmp / "prepared.onnx", images, args.threads, **options)
        run(f"int8, folded, calibrated on {count} from image {start}", backend)


if __name__ == "__main__":
    main()
