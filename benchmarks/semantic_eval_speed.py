"""Speed of the OV-PARTS evaluator (vlpart.evaluation.semantic) against plain numpy confusion
matrices, on random label maps (Pascal-Part-116's 116 classes, a tenth of the pixels ignore).
Every method must give the same matrix. Prints JSON.

    python benchmarks/semantic_eval_speed.py --images 500 --size 512 --baseline-images 100

Compared (images/s, label maps already in memory, ratios within one run; each method is timed
``--rounds`` times in rotating order and its median rate reported, since the first pass over
freshly allocated maps runs slower whichever method makes it):

* ``vlpart``: :class:`SemanticEvaluator.add` (validates the values, one 8-bit lookup, one
  ``np.bincount``);
* ``bincount_int64``: the formula OV-PARTS' evaluator runs (ignore -> C by assignment, maps
  cast to int64, ``np.bincount((C + 1) * pred + gt)``), without its value check;
* ``add_at``: ``np.add.at(matrix, (pred, gt), 1)``, the textbook numpy loop-free update;
* ``per_class``: one ``np.bincount`` of the ground truth per predicted class (a Python loop).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from vlpart.core.vocab import load_builtin
from vlpart.evaluation.semantic import IGNORE_LABEL, SemanticEvaluator

NUM_CLASSES = 116


def _maps(num: int, size: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        gt = rng.integers(0, NUM_CLASSES, (size, size), dtype=np.uint8)
        pred = np.where(rng.random((size, size)) < 0.7, gt, rng.integers(0, NUM_CLASSES, gt.shape))
        pred = pred.astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = IGNORE_LABEL
        pred[rng.random(gt.shape) < 0.1] = IGNORE_LABEL
        out.append((gt, pred))
    return out


def _indices(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int64)
    a[a == IGNORE_LABEL] = NUM_CLASSES
    return a


def _bincount_int64(pairs) -> np.ndarray:
    n = NUM_CLASSES + 1
    matrix = np.zeros((n, n), np.int64)
    for gt, pred in pairs:
        g, p = _indices(gt), _indices(pred)
        matrix += np.bincount(n * p.reshape(-1) + g.reshape(-1), minlength=n * n).reshape(n, n)
    return matrix


def _add_at(pairs) -> np.ndarray:
    n = NUM_CLASSES + 1
    matrix = np.zeros((n, n), np.int64)
    for gt, pred in pairs:
        np.add.at(matrix, (_indices(pred).ravel(), _indices(gt).ravel()), 1)
    return matrix


def _per_class(pairs) -> np.ndarray:
    n = NUM_CLASSES + 1
    matrix = np.zeros((n, n), np.int64)
    for gt, pred in pairs:
        g, p = _indices(gt), _indices(pred)
        for c in range(n):
            matrix[c] += np.bincount(g[p == c], minlength=n)
    return matrix


def _vlpart(pairs) -> np.ndarray:
    ev = SemanticEvaluator(load_builtin("pascal_part_116"))
    for gt, pred in pairs:
        ev.add(gt, pred)
    return ev.confusion


def _rate(fn, pairs) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    matrix = fn(pairs)
    return len(pairs) / (time.perf_counter() - start), matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--baseline-images",
        type=int,
        default=100,
        help="images for the slow baselines (add_at, per_class); their rate is per image",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = _maps(args.images, args.size, args.seed)
    few = pairs[: args.baseline_images]
    _vlpart(pairs[:2])  # warm-up (imports, lookup table)
    methods = (
        ("vlpart", _vlpart, pairs),
        ("bincount_int64", _bincount_int64, pairs),
        ("add_at", _add_at, few),
        ("per_class", _per_class, few),
    )
    samples: dict[str, list[float]] = {name: [] for name, _, _ in methods}
    matrices = {}
    for r in range(args.rounds):
        for name, fn, subset in methods[r % len(methods) :] + methods[: r % len(methods)]:
            rate, matrices[name] = _rate(fn, subset)
            samples[name].append(rate)
    rates = {name: float(np.median(v)) for name, v in samples.items()}
    reference = _vlpart(few)
    agree = all(np.array_equal(matrices[k], reference) for k in ("add_at", "per_class"))
    agree &= np.array_equal(matrices["vlpart"], matrices["bincount_int64"])
    print(
        json.dumps(
            {
                "images": args.images,
                "rounds": args.rounds,
                "baseline_images": len(few),
                "size": args.size,
                "classes": NUM_CLASSES,
                "machine": platform.processor() or platform.machine(),
                "images_per_s": {k: round(v, 1) for k, v in rates.items()},
                "speedup_vs": {
                    k: round(rates["vlpart"] / v, 2) for k, v in rates.items() if k != "vlpart"
                },
                "same_confusion_matrix": bool(agree),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
