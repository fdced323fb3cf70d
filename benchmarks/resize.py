"""Cost of the bit-exact uint8 resize (PIL bilinear, what DetectorTransform runs on uint8 images)
against torchvision's antialiased uint8 resize, and how often the two disagree. Prints JSON.

    python benchmarks/resize.py --height 480 --width 640 --repeats 20
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from vlpart.model.transform import resize_image, resized_shape


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(
        rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    ).permute(2, 0, 1)
    size = resized_shape(args.height, args.width, min_size=800, max_size=1333)
    pil_ms = _time(lambda: resize_image(image, size), args.repeats)
    tv_ms = _time(lambda: TF.resize(image, list(size), antialias=True), args.repeats)
    diff = resize_image(image, size).int() - TF.resize(image, list(size), antialias=True).int()
    print(
        json.dumps(
            {
                "input": [args.height, args.width],
                "resized": list(size),
                "threads": args.threads,
                "pil_bilinear_ms": round(pil_ms, 2),
                "torchvision_antialias_ms": round(tv_ms, 2),
                "ratio_pil_over_torchvision": round(pil_ms / tv_ms, 2),
                "fraction_of_values_differing": float((diff != 0).float().mean()),
                "max_abs_difference": int(diff.abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()
