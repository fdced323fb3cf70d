"""Latency of an ONNX export run by onnxruntime against the same model in PyTorch, on the CPU.

Builds a detector (random weights for ResNet-50, the packaged ImageNet trunk for
EfficientNet-Lite0: speed does not depend on them), exports it with the vocabulary baked in (or
``--dynamic-vocab``), and times :meth:`PartSegmenter.predict` of both on one synthetic image,
alternating, after one warm-up run each. Both include the Python ends (resize/normalise, mask
paste at full resolution, parent links), which are the same code; ``*_graph_s`` times the graph
alone (``VLPartDetector.detect`` against the onnxruntime session on the same prepared image).
Prints JSON.

    flock /tmp/cpu.lock python benchmarks/onnx_latency.py --backbone resnet50 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vlpart.core.config import ModelConfig
from vlpart.core.vocab import parse_vocabulary
from vlpart.export.onnx import export_onnx
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import build_model
from vlpart.text.precomputed import PrecomputedTextEncoder


@torch.inference_mode()
def _detect(model, batch, embeddings):
    return model.detect(batch, text_embeddings=embeddings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backbone", default="resnet50", choices=("resnet50", "efficientnet_lite0")
    )
    parser.add_argument("--vocab", default="pascal_part", help="vocabulary (random text rows)")
    parser.add_argument("--height", type=int, default=600, help="input image height")
    parser.add_argument("--width", type=int, default=800, help="input image width")
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dynamic-vocab", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone=args.backbone,
        backbone_weights="imagenet" if args.backbone == "efficientnet_lite0" else None,
        min_size=args.min_size,
        max_size=args.max_size,
    )
    vocab = parse_vocabulary(args.vocab)
    prompts = vocab.prompts()
    encoder = PrecomputedTextEncoder(torch.randn(len(prompts), cfg.text_dim), prompts)
    torch_seg = PartSegmenter(build_model(cfg), encoder)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        start = time.perf_counter()
        export_onnx(torch_seg, vocab, path, dynamic_vocab=args.dynamic_vocab)
        export_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 2**20
        start = time.perf_counter()
        onnx_seg = PartSegmenter.from_onnx(
            path, text_encoder=encoder if args.dynamic_vocab else None, num_threads=args.threads
        )
        load_s = time.perf_counter() - start

        # The graph alone: the same prepared image through VLPartDetector.detect and the
        # onnxruntime session.
        tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        batch, _ = torch_seg.model.transform([tensor])
        feeds = {
            "image": batch.tensors.numpy()[
                :, :, : batch.image_sizes[0][0], : batch.image_sizes[0][1]
            ].copy()
        }
        if args.dynamic_vocab:
            feeds["text_embeddings"] = torch_seg.text_embeddings(vocab).numpy()
        embeddings = torch_seg.text_embeddings(vocab)
        steps = {
            "pytorch": lambda: torch_seg.predict(image, vocabulary=vocab, score_threshold=0.0),
            "onnxruntime": lambda: onnx_seg.predict(image, vocabulary=vocab, score_threshold=0.0),
            "pytorch_graph": lambda: _detect(torch_seg.model, batch, embeddings),
            "onnxruntime_graph": lambda: onnx_seg.backend.session.run(None, feeds),
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        found = {}
        for run in range(args.runs + 1):
            for name, step in steps.items():
                start = time.perf_counter()
                out = step()
                if run:  # run 0 warms up
                    times[name].append(time.perf_counter() - start)
                if name in ("pytorch", "onnxruntime"):
                    found[name] = len(out)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "image": [args.height, args.width],
                "min_size": args.min_size,
                "max_size": args.max_size,
                "num_classes": len(vocab),
                "dynamic_vocab": args.dynamic_vocab,
                "threads": args.threads,
                "runs": args.runs,
                "export_s": round(export_s, 1),
                "onnx_file_mb": round(size_mb, 1),
                "onnx_load_s": round(load_s, 2),
                "pytorch_s": round(median["pytorch"], 3),
                "onnxruntime_s": round(median["onnxruntime"], 3),
                "onnxruntime_speedup": round(median["pytorch"] / median["onnxruntime"], 2),
                "pytorch_graph_s": round(median["pytorch_graph"], 3),
                "onnxruntime_graph_s": round(median["onnxruntime_graph"], 3),
                "graph_speedup": round(median["pytorch_graph"] / median["onnxruntime_graph"], 2),
                "detections": found,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
