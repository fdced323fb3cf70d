"""Frames per second of ``vlpart predict`` on a video: decode (PyAV), segment, render, encode.

Writes a clip of synthetic-world frames, then runs :func:`vlpart.inference.video.predict_video`
with an EfficientNet-Lite0 detector (packaged ImageNet trunk, random heads; speed does not depend
on the weights) for each ``--every``. Prints JSON.

    flock /tmp/cpu.lock python benchmarks/video_fps.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlpart.apps.quickstart.synth import synthesize_world
from vlpart.core.config import ModelConfig
from vlpart.core.vocab import parse_vocabulary
from vlpart.inference.segmenter import PartSegmenter
from vlpart.inference.video import predict_video, write_video
from vlpart.model import build_model
from vlpart.text.precomputed import PrecomputedTextEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=25)
    parser.add_argument("--min-size", type=int, default=512, help="detector short side")
    parser.add_argument("--max-size", type=int, default=910)
    parser.add_argument("--vocab", default="dog:head,torso,leg,tail;dog;cat")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="efficientnet_lite0", min_size=args.min_size, max_size=args.max_size)
    vocab = parse_vocabulary(args.vocab)
    prompts = vocab.prompts()
    encoder = PrecomputedTextEncoder(torch.randn(len(prompts), cfg.text_dim), prompts)
    segmenter = PartSegmenter(build_model(cfg), encoder)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        world = synthesize_world(Path(tmp) / "world", seed=0, num_images=8, image_size=256)
        photos = sorted((world.out_dir / "images").glob("*.png"))
        frames = (
            np.array(
                Image.open(photos[i % len(photos)]).convert("RGB").resize((args.width, args.height))
            )
            for i in range(args.frames)
        )
        clip = write_video(Path(tmp) / "clip.mp4", frames, fps=args.fps)
        for every in args.every:
            summary = predict_video(
                segmenter,
                clip,
                vocabulary=vocab,
                out_dir=Path(tmp) / f"out{every}",
                every=every,
                progress=False,
            )
            runs.append(
                {
                    "every": every,
                    "frames": summary.frames_decoded,
                    "segmented": summary.frames_processed,
                    "seconds": round(summary.seconds, 2),
                    "frames_per_second": round(summary.frames_per_second, 2),
                }
            )
    print(
        json.dumps(
            {
                "backbone": cfg.backbone,
                "video": [args.height, args.width],
                "min_size": args.min_size,
                "threads": args.threads,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
