"""Images per second of ``vlpart predict`` over a folder: decode, segment, encode the results,
render and write the overlays (:func:`vlpart.inference.files.predict_files`, what the CLI runs).

The folder holds ``--num-images`` copies of the Pascal-Part example photos (~500×375 JPEGs,
cycled); the model is a random-init R50 detector with the released checkpoints' settings (800 px,
1000 proposals, 100 detections; speed does not depend on the weights) and the Pascal-Part
vocabulary's released CLIP RN50 embeddings. Each ``--workers`` value is a separate run of the
whole folder; ``--score-thresh`` is the predict threshold (random weights score about 0.5, so
the default 0.3 keeps all 100 detections per image: the slow case for encoding and drawing).
Prints JSON.

    flock /tmp/cpu.lock python benchmarks/predict_throughput.py --threads 2 --workers 0 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vlpart.core.config import ModelConfig
from vlpart.core.vocab import parse_vocabulary
from vlpart.inference.files import predict_files
from vlpart.inference.segmenter import SCORE_THRESH, PartSegmenter
from vlpart.model import build_model
from vlpart.text.precomputed import PrecomputedTextEncoder

DATA = Path(__file__).resolve().parents[2] / "shared/data"
PHOTOS = DATA / "pascal_part_examples"
EMBEDDINGS = DATA / "vlpart_metadata/pascal_part_clip_RN50_a+cname.npy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--score-thresh", type=float, default=SCORE_THRESH)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args()
    photos = sorted(PHOTOS.glob("*.jpg"))
    if not photos or not EMBEDDINGS.is_file():
        raise SystemExit(f"needs the shared data: {PHOTOS} and {EMBEDDINGS}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = parse_vocabulary("pascal_part")
    encoder = PrecomputedTextEncoder(torch.from_numpy(np.load(EMBEDDINGS)), vocab.prompts())
    model = build_model(ModelConfig(backbone_weights=None))
    segmenter = PartSegmenter(model, encoder, precision=args.precision)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = []
        for i in range(args.num_images):
            paths.append(folder / f"{i:04d}_{photos[i % len(photos)].name}")
            shutil.copyfile(photos[i % len(photos)], paths[-1])
        segmenter.predict(np.zeros((64, 64, 3), np.uint8), vocabulary=vocab)  # warm-up
        for workers in args.workers:
            start = time.perf_counter()
            summary = predict_files(
                segmenter,
                paths,
                vocabulary=vocab,
                out_dir=Path(tmp) / f"out{workers}",
                score_threshold=args.score_thresh,
                num_workers=workers,
            )
            seconds = time.perf_counter() - start
            runs.append(
                {
                    "workers": workers,
                    "images": len(summary.processed),
                    "instances_per_image": round(summary.num_instances / len(paths), 1),
                    "seconds": round(seconds, 1),
                    "images_per_second": round(len(summary.processed) / seconds, 3),
                }
            )
    print(
        json.dumps(
            {
                "threads": args.threads,
                "precision": args.precision,
                "score_thresh": args.score_thresh,
                "model": "R50-FPN random init, released settings",
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
