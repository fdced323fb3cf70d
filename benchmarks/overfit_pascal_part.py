"""Train the EfficientNet-Lite0 detector on the 14 real Pascal-Part photos with the released CLIP
RN50 part embeddings and report mask AP50 on those same photos as training goes on.

    python benchmarks/overfit_pascal_part.py [--shared ../shared/data] [--target 0.5]
        [--eval-every 50] [--max-iter 400] [--size 512] [--out runs/overfit]

Trains in chunks of ``--eval-every`` iterations (each chunk resumes the previous one exactly),
evaluates after each, stops once mask AP50 reaches ``--target``, and prints one JSON object:
settings, seconds per iteration, and the AP curve. The same settings back the slow test
``tests/training/test_learning.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vlpart.core.config import config_from_dict
from vlpart.core.vocab import load_builtin
from vlpart.data.pascal_part import convert_pascal_part
from vlpart.evaluation.model_eval import evaluate_model
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import load_checkpoint
from vlpart.text import build_text_encoder
from vlpart.training.train import train

EMBEDDINGS = "vlpart_metadata/pascal_part_clip_RN50_a+cname.npy"


def overfit_config(
    parts_json: Path, image_root: Path, embeddings: Path, *, size: int, max_iter: int, seed: int = 0
):
    """CPU-sized settings: FPN and mask head at 128 channels, 256 RoIs, 32 mask RoIs/image."""
    return config_from_dict(
        {
            "model": {
                "backbone": "efficientnet_lite0",
                "backbone_weights": "imagenet",
                "fpn_channels": 128,
                "mask_head_dim": 128,
                "text_dim": 1024,
                "min_size": size,
                "max_size": round(size * 1333 / 800),
                "roi_batch_size_per_image": 256,
                "mask_rois_per_image": 32,
                "rpn_pre_nms_top_n_train": 1000,
                "rpn_post_nms_top_n_train": 500,
            },
            "data": [
                {
                    "name": "pascal_part",
                    "kind": "part",
                    "ann_file": str(parts_json),
                    "image_root": str(image_root),
                    "embeddings": str(embeddings),
                    "min_size": [size],
                    "max_size": round(size * 1333 / 800),
                    "batch_size": 2,
                }
            ],
            "train": {
                "max_iter": max_iter,
                "lr": 2e-4,
                "warmup_iters": 20,
                "lr_steps": [],
                "checkpoint_period": 10**9,
                "log_period": 10,
                "num_workers": 1,
                "seed": seed,
                "device": "cpu",
            },
        }
    )


def mask_ap50(weights: Path, parts_json: Path, image_root: Path, embeddings: Path) -> float:
    model, info = load_checkpoint(weights)
    vocab = load_builtin("pascal_part")
    encoder = build_text_encoder("precomputed", vocabulary=vocab, embeddings=embeddings)
    segmenter = PartSegmenter(model, encoder, info=info)
    report = evaluate_model(segmenter, parts_json, image_root, progress=False)
    return report.metrics["segm"]["AP50"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/overfit_pascal_part"))
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    examples = args.shared / "pascal_part_examples"
    if not examples.is_dir():
        sys.exit(f"{examples}: Pascal-Part examples not found (pass --shared)")
    args.out.mkdir(parents=True, exist_ok=True)
    parts_json = args.out / "pascal_part_examples.json"
    convert_pascal_part(examples, examples, parts_json)
    embeddings = args.shared / EMBEDDINGS

    curve, train_seconds = [], 0.0
    iteration = 0
    while iteration < args.max_iter:
        iteration = min(iteration + args.eval_every, args.max_iter)
        cfg = overfit_config(parts_json, examples, embeddings, size=args.size, max_iter=iteration)
        start = time.perf_counter()
        weights = train(cfg, args.out / "run", resume=iteration > args.eval_every)
        train_seconds += time.perf_counter() - start
        ap50 = mask_ap50(weights, parts_json, examples, embeddings)
        curve.append(
            {
                "iteration": iteration,
                "mask_AP50": round(ap50, 4),
                "train_minutes": round(train_seconds / 60, 2),
            }
        )
        print(json.dumps(curve[-1]), file=sys.stderr)
        if ap50 >= args.target:
            break
    print(
        json.dumps(
            {
                "benchmark": "overfit_pascal_part",
                "settings": {
                    "size": args.size,
                    "threads": args.threads,
                    "backbone": "efficientnet_lite0",
                    "fpn_channels": 128,
                    "mask_head_dim": 128,
                    "batch_size": 2,
                },
                "reached_target": curve[-1]["mask_AP50"] >= args.target,
                "iterations": curve[-1]["iteration"],
                "train_minutes": round(train_seconds / 60, 2),
                "seconds_per_iteration": round(train_seconds / curve[-1]["iteration"], 2),
                "curve": curve,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
