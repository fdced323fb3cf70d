"""Speed of ``vlpart.evaluation.coco_eval.evaluate_results`` against pycocotools and raw
faster-coco-eval on the same files, box and mask AP, with the APs checked to agree. Prints JSON.

    python benchmarks/eval_speed.py --images 300 --detections 27000 --rounds 3

The data are synthetic and seeded: ``--images`` images of 480x640 with Pascal-Part's 93
categories (so the base/novel split of the built-in taxonomy applies), about 20 ground-truth
ellipses per image and ``--detections`` detections (jittered copies of the ground truth plus
false positives), all masks compressed RLE as ``pycocotools.mask`` writes them. Both sets are
written to JSON files in a temporary folder, and every method starts from those files, as
``vlpart eval --results results.json --gt val.json`` does:

* ``pycocotools``: ``COCO(gt)``, ``loadRes(results)``, then ``COCOeval`` evaluate / accumulate /
  summarize for ``bbox`` and for ``segm``;
* ``faster_coco_eval``: the same with faster-coco-eval's ``COCO`` and ``COCOeval_faster``;
* ``vlpart``: ``evaluate_results(gt, results)`` (validation, both IoU types, the base/novel
  means, per-category rows).

Each method runs ``--rounds`` times in rotating order and its median wall time is reported
(seconds, ratios within one run). AP, AP50 and AP75 of both IoU types must agree with
pycocotools' ``stats[:3]`` to ``--tolerance``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from faster_coco_eval import COCO as FastCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as RefCOCO
from pycocotools.cocoeval import COCOeval as RefCOCOeval

from vlpart.core.vocab import load_builtin
from vlpart.evaluation.coco_eval import IOU_TYPES, evaluate_results

HEIGHT, WIDTH = 480, 640
GT_PER_IMAGE = 20
CATEGORIES_PER_IMAGE = 8
POLYGON_POINTS = 24
METRICS = ("AP", "AP50", "AP75")  # pycocotools stats[0], stats[1], stats[2]


def _ellipse(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> list:
    """Polygon [x1, y1, ...] of a rotated ellipse, clipped to the image."""
    t = np.linspace(0, 2 * np.pi, POLYGON_POINTS, endpoint=False)
    a = rng.uniform(0, np.pi)
    x = cx + rx * np.cos(t) * np.cos(a) - ry * np.sin(t) * np.sin(a)
    y = cy + rx * np.cos(t) * np.sin(a) + ry * np.sin(t) * np.cos(a)
    xy = np.stack([np.clip(x, 0, WIDTH - 1), np.clip(y, 0, HEIGHT - 1)], axis=1)
    return xy.reshape(-1).round(1).tolist()


def _instance(polygon: list) -> dict:
    """``segmentation`` (compressed RLE, str counts), ``bbox`` and ``area`` of a polygon."""
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], HEIGHT, WIDTH))
    box = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
    segm = {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}
    return {"segmentation": segm, "bbox": box, "area": float(mask_utils.area(rle))}


def synthetic_set(num_images: int, num_dets: int, seed: int) -> tuple[dict, list[dict]]:
    """Ground truth (COCO dict) and detections (COCO results list), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    names = load_builtin("pascal_part").names
    images, anns, dets = [], [], []
    dets_per_image = num_dets // num_images
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "height": HEIGHT, "width": WIDTH})
        cat_ids = rng.choice(len(names), CATEGORIES_PER_IMAGE, replace=False) + 1
        shapes = []
        for _ in range(GT_PER_IMAGE):
            shape = (rng.uniform(40, WIDTH - 40), rng.uniform(40, HEIGHT - 40))
            shape += (rng.uniform(8, 120), rng.uniform(8, 120))
            cat = int(rng.choice(cat_ids))
            shapes.append((cat, shape))
            inst = _instance(_ellipse(rng, *shape))
            anns.append(
                {"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0} | inst
            )
        for k in range(dets_per_image + (image_id <= num_dets % num_images)):
            if k < 2 * GT_PER_IMAGE:  # jittered copy of a ground-truth instance
                cat, (cx, cy, rx, ry) = shapes[k % GT_PER_IMAGE]
                jitter = rng.normal(0, 0.15, 4) * [rx, ry, rx, ry]
                shape = (cx + jitter[0], cy + jitter[1], abs(rx + jitter[2]) + 4)
                shape += (abs(ry + jitter[3]) + 4,)
                if rng.random() < 0.1:
                    cat = int(rng.integers(1, len(names) + 1))
            else:  # false positive, mostly of the image's categories
                shape = (rng.uniform(40, WIDTH - 40), rng.uniform(40, HEIGHT - 40))
                shape += (rng.uniform(8, 120), rng.uniform(8, 120))
                cat = int(
                    rng.choice(cat_ids) if rng.random() < 0.7 else rng.integers(1, len(names) + 1)
                )
            score = round(float(rng.uniform(0.05, 1.0)), 5)
            dets.append(
                {"image_id": image_id, "category_id": cat, "score": score}
                | _instance(_ellipse(rng, *shape))
            )
    for det in dets:
        del det["area"]
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def _run_api(coco_cls, eval_cls, gt_path: Path, res_path: Path) -> dict[str, list[float]]:
    """The canonical pycocotools script: one ``loadRes``, then evaluate each IoU type."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls(str(gt_path))
        coco_dt = coco_gt.loadRes(str(res_path))
        stats = {}
        for iou_type in IOU_TYPES:
            evaluator = eval_cls(coco_gt, coco_dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            stats[iou_type] = [float(v) for v in evaluator.stats[: len(METRICS)]]
    return stats


def _pycocotools(gt_path: Path, res_path: Path) -> dict[str, list[float]]:
    return _run_api(RefCOCO, RefCOCOeval, gt_path, res_path)


def _faster_coco_eval(gt_path: Path, res_path: Path) -> dict[str, list[float]]:
    return _run_api(FastCOCO, COCOeval_faster, gt_path, res_path)


def _vlpart(gt_path: Path, res_path: Path) -> dict[str, list[float]]:
    report = evaluate_results(gt_path, res_path, iou_types=IOU_TYPES)
    return {t: [report.metrics[t][m] for m in METRICS] for t in IOU_TYPES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--detections", type=int, default=27000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    gt, dets = synthetic_set(args.images, args.detections, args.seed)
    methods = (
        ("pycocotools", _pycocotools),
        ("faster_coco_eval", _faster_coco_eval),
        ("vlpart", _vlpart),
    )
    seconds: dict[str, list[float]] = {name: [] for name, _ in methods}
    stats = {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp, "gt.json"), Path(tmp, "results.json")
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(dets))
        for r in range(args.rounds):
            for name, fn in methods[r % len(methods) :] + methods[: r % len(methods)]:
                start = time.perf_counter()
                stats[name] = fn(gt_path, res_path)
                seconds[name].append(time.perf_counter() - start)
    median = {name: float(np.median(v)) for name, v in seconds.items()}
    reference = stats["pycocotools"]
    max_diff = {
        name: max(abs(a - b) for t in IOU_TYPES for a, b in zip(s[t], reference[t], strict=True))
        for name, s in stats.items()
        if name != "pycocotools"
    }
    print(
        json.dumps(
            {
                "images": args.images,
                "ground_truth": len(gt["annotations"]),
                "detections": len(dets),
                "categories": len(gt["categories"]),
                "iou_types": list(IOU_TYPES),
                "rounds": args.rounds,
                "machine": platform.processor() or platform.machine(),
                "seconds_median": {k: round(v, 3) for k, v in median.items()},
                "seconds_all": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
                "speedup_vs_pycocotools": {
                    k: round(median["pycocotools"] / v, 2) for k, v in median.items()
                },
                "pycocotools_AP_AP50_AP75": reference,
                "max_abs_AP_difference": max_diff,
                "same_AP": all(d <= args.tolerance for d in max_diff.values()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
