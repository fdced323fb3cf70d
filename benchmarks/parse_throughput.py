"""Throughput of the parse step (features + matching + transfer + boxing) on synthetic images.

Builds a base bank of synthetic objects, then times :meth:`vlpart.parsing.Parser.parse_batch` on
synthetic novel images (one warm-up batch excluded). Weights are random unless ``--weights`` is
given: speed does not depend on them. Prints JSON.

    python benchmarks/parse_throughput.py --backend dino_vits8 --image-size 224 --num-images 16
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from vlpart.core.vocab import parse_vocabulary
from vlpart.parsing import (
    BaseBank,
    BaseObject,
    ParseItem,
    Parser,
    Proposals,
    build_feature_extractor,
)
from vlpart.parsing.features import prepare_images

PART_NAMES = ("head", "torso", "tail")


def synthetic_object(rng: np.random.Generator, height: int, width: int) -> tuple:
    """An ellipse split into three parts along x, on a noisy background."""
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.4, 0.6) * height, rng.uniform(0.4, 0.6) * width
    ry, rx = rng.uniform(0.25, 0.4) * height, rng.uniform(0.3, 0.45) * width
    obj = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    cuts = cx - rx / 3, cx + rx / 3
    parts = np.stack(
        [obj & (xx < cuts[0]), obj & (xx >= cuts[0]) & (xx < cuts[1]), obj & (xx >= cuts[1])]
    )
    image = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    for k, part in enumerate(parts):
        image[part] = rng.integers(80 + 50 * k, 130 + 50 * k, 3)
    return image, obj, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", default="dino_vits8", choices=("dino_vits8", "efficientnet_lite0")
    )
    parser.add_argument("--weights", default=None, help="weights file (default: random init)")
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--num-base", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-proposals", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    extractor = build_feature_extractor(
        args.backend, weights=args.weights, stride=args.stride, device=args.device
    )
    side = args.image_size
    base = []
    for i in range(args.num_base):
        image, obj, parts = synthetic_object(rng, side, side)
        names = [f"cat:{p}" for p in PART_NAMES]
        base.append(BaseObject(image, obj, parts, names, "cat", source=f"synthetic{i}"))
    start = time.perf_counter()
    bank = BaseBank.build(base, extractor, image_size=side, batch_size=args.batch_size)
    bank_seconds = time.perf_counter() - start
    vocab = parse_vocabulary("dog:head,body,tail")
    runner = Parser(extractor, bank, vocab, image_size=side, batch_size=args.batch_size)
    items = []
    for i in range(args.num_images + args.batch_size):
        height, width = int(side * 1.5), int(side * 2)
        image, obj, _ = synthetic_object(rng, height, width)
        xy = rng.uniform(0, [width, height, width, height], (args.num_proposals, 4))
        boxes = np.concatenate([xy[:, :2].clip(max=xy[:, 2:]), xy[:, :2].clip(min=xy[:, 2:])], 1)
        scores = rng.uniform(size=args.num_proposals)
        items.append(ParseItem(i, image, "dog", Proposals(boxes, scores), obj))
    warmup, timed = items[: args.batch_size], items[args.batch_size :]
    runner.parse_batch(warmup)
    start = time.perf_counter()
    num_parts = 0
    for i in range(0, len(timed), args.batch_size):
        records = runner.parse_batch(timed[i : i + args.batch_size])
        num_parts += sum(len(r["annotations"]) for r in records)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(timed), args.batch_size):
            batch = [item.image for item in timed[i : i + args.batch_size]]
            extractor(prepare_images(batch, side, extractor).to(extractor.device))
    feature_seconds = time.perf_counter() - start
    feats_grid = bank.dense.shape[1:3]
    report = {
        "backend": extractor.identity,
        "device": str(extractor.device),
        "threads": args.threads,
        "image_size": side,
        "grid": list(feats_grid),
        "num_images": len(timed),
        "num_base": args.num_base,
        "batch_size": args.batch_size,
        "images_per_s": round(len(timed) / seconds, 3),
        # measured in a separate pass over the same images, so it is approximate
        "feature_extraction_share": round(feature_seconds / seconds, 3),
        "parts_per_image": round(num_parts / len(timed), 2),
        "bank_build_s": round(bank_seconds, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
