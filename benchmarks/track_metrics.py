"""Identity metrics of ``vlpart track``'s association (MOTA, IDF1, ID switches for objects and
for parts, parent agreement) and its speed, on synthetic clips of the parts world with
ground-truth identities (:mod:`vlpart.apps.quickstart.clips`: objects moving, crossing, leaving
and re-entering the frame), at ``every=1`` and ``every=5``.

Detections are ground truth perturbed (no trained detector is involved): per instance the box
of its mask with each side jittered by ``N(0, JITTER × box side)``, a score drawn uniformly in
``SCORE_RANGE``, objects missed with probability ``MISS_OBJECT``, parts with ``MISS_PART``, and
with probability ``FALSE_POSITIVE`` per frame one spurious object box. Masks are the ground
truth's, parents are assigned from them by :func:`vlpart.inference.prediction.assign_parents`
(as :class:`~vlpart.PartSegmenter` does), and everything then goes through the same
:class:`~vlpart.inference.tracking.FrameTracker` as ``vlpart track``. Every frame is scored
(the frames between segmented ones with their interpolated boxes), matching boxes of the same
category at IoU ≥ 0.5 with ``motmetrics``.

    python benchmarks/track_metrics.py [--clips 6] [--frames 150] [--size 192] [--seed 0]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from vlpart.apps.quickstart.clips import ClipFrame, synth_clip
from vlpart.inference.prediction import Prediction, assign_parents
from vlpart.inference.tracking import FrameTracker, PartTracker

FPS = 30.0
JITTER = 0.04
SCORE_RANGE = (0.35, 1.0)
MISS_OBJECT = 0.05
MISS_PART = 0.1
FALSE_POSITIVE = 0.2
MATCH_IOU = 0.5
EVERY = (1, 5)


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def detections(frame: ClipFrame, rng: np.random.Generator) -> Prediction:
    """The perturbed ground truth of one frame (module docstring)."""
    keep = [
        inst
        for inst in frame.instances
        if rng.random() >= (MISS_PART if inst.parent_id >= 0 else MISS_OBJECT)
    ]
    size = frame.image.shape[0]
    boxes = [_box(inst.mask) for inst in keep]
    boxes = [b + rng.normal(0, JITTER, 4) * np.tile(b[2:] - b[:2], 2) for b in boxes]
    labels = [inst.label for inst in keep]
    masks = [inst.mask for inst in keep]
    if rng.random() < FALSE_POSITIVE and keep:
        x, y = rng.uniform(0, size * 0.8, 2)
        side = size * rng.uniform(0.1, 0.3)
        boxes.append(np.array([x, y, x + side, y + side], np.float32))
        labels.append(str(rng.choice([i.label for i in frame.instances if i.parent_id < 0])))
        fp = np.zeros(frame.image.shape[:2], bool)
        fp[int(y) : int(y + side), int(x) : int(x + side)] = True
        masks.append(fp)
    n = len(labels)
    masks_arr = np.stack(masks) if n else np.zeros((0, size, size), bool)
    objects = [label.split(":")[0] for label in labels]
    parts = [label.split(":")[1] if ":" in label else None for label in labels]
    return Prediction(
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        scores=rng.uniform(*SCORE_RANGE, n).astype(np.float32),
        labels=labels,
        label_ids=np.zeros(n, np.int64),
        category_ids=np.zeros(n, np.int64),
        masks=masks_arr,
        parent=assign_parents(masks_arr, objects, parts),
        is_part=np.array([p is not None for p in parts], bool),
    )


def _track(frames: list[ClipFrame], every: int, seed: int) -> tuple[list, float]:
    rng = np.random.default_rng(seed)
    by_id = {id(f.image): f for f in frames}
    tracker = FrameTracker(
        lambda a: detections(by_id[id(a)], rng), PartTracker(frame_rate=FPS), every=every
    )
    start = time.perf_counter()
    out = []
    for index, frame in enumerate(frames):
        out += tracker.push(index, index / FPS, frame.image)
    out += tracker.finish()
    return out, time.perf_counter() - start


def _score(mm, frames: list[ClipFrame], tracked: list) -> tuple:
    """motmetrics accumulators for objects and parts, and (parts whose parent track is the
    one matched to their ground-truth parent, parts matched)."""
    accs = {"objects": mm.MOTAccumulator(auto_id=False), "parts": mm.MOTAccumulator()}
    accs["parts"] = mm.MOTAccumulator(auto_id=False)
    agree = total = 0
    for index, (gt, hyp) in enumerate(zip(frames, tracked, strict=True)):
        assert hyp.index == index
        object_match: dict[int, int] = {}
        for kind in ("objects", "parts"):
            g = [i for i in gt.instances if (i.parent_id >= 0) == (kind == "parts")]
            rows = [
                k
                for k in range(len(hyp.pred))
                if hyp.track_ids[k] >= 0 and bool(hyp.pred.is_part[k]) == (kind == "parts")
            ]
            gt_boxes = np.array([_box(i.mask) for i in g]).reshape(-1, 4)
            hyp_boxes = hyp.pred.boxes[rows].reshape(-1, 4)
            dist = _iou_distance(gt_boxes, hyp_boxes)
            for a, inst in enumerate(g):
                for b, k in enumerate(rows):
                    if inst.label != hyp.pred.labels[k]:
                        dist[a, b] = np.nan
            hyp_ids = [int(hyp.track_ids[k]) for k in rows]
            accs[kind].update([i.gt_id for i in g], hyp_ids, dist, frameid=index)
            events = accs[kind].mot_events.loc[index]
            matched = events[events.Type.isin(["MATCH", "SWITCH"])]
            pairs = dict(zip(matched.OId.astype(int), matched.HId.astype(int), strict=True))
            if kind == "objects":
                object_match = pairs
                continue
            parent_of = {int(hyp.track_ids[k]): int(hyp.parent_track_ids[k]) for k in rows}
            parent_gt = {i.gt_id: i.parent_id for i in g}
            for oid, hid in pairs.items():
                total += 1
                agree += object_match.get(parent_gt[oid], -2) == parent_of[hid]
    return accs, agree, total


def _iou_distance(gt: np.ndarray, hyp: np.ndarray) -> np.ndarray:
    """1 - IoU of XYXY boxes [G, 4] x [K, 4], NaN (no match) below MATCH_IOU (motmetrics'
    ``iou_matrix`` uses ``np.asfarray``, gone in NumPy 2)."""
    import torch
    from torchvision.ops import box_iou

    iou = box_iou(
        torch.as_tensor(gt, dtype=torch.float64), torch.as_tensor(hyp, dtype=torch.float64)
    )
    dist = 1 - iou.numpy()
    dist[iou.numpy() < MATCH_IOU] = np.nan
    return dist


def main() -> None:
    import motmetrics as mm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clips = [
        list(synth_clip(args.seed + c, num_frames=args.frames, size=args.size))
        for c in range(args.clips)
    ]
    metrics = ["mota", "idf1", "num_switches", "precision", "recall", "num_unique_objects"]
    result = {
        "detections": "ground truth perturbed (no detector)",
        "perturbation": {
            "box_jitter": JITTER,
            "score_range": SCORE_RANGE,
            "miss_object": MISS_OBJECT,
            "miss_part": MISS_PART,
            "false_positive_per_frame": FALSE_POSITIVE,
        },
        "clips": args.clips,
        "frames_per_clip": args.frames,
        "size": args.size,
        "match_iou": MATCH_IOU,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "every": {},
    }
    for every in EVERY:
        accs: dict[str, list] = {"objects": [], "parts": []}
        seconds = agree = total = 0
        for c, frames in enumerate(clips):
            tracked, took = _track(frames, every, args.seed + c)
            seconds += took
            clip_accs, a, t = _score(mm, frames, tracked)
            agree, total = agree + a, total + t
            for kind in accs:
                accs[kind].append(clip_accs[kind])
        entry = {}
        for kind, acc in accs.items():
            summary = mm.metrics.create().compute_many(
                acc, metrics=metrics, names=[str(c) for c in range(len(acc))], generate_overall=True
            )
            overall = summary.loc["OVERALL"]
            entry[kind] = {m: round(float(overall[m]), 4) for m in metrics}
        entry["parts_with_the_right_parent_track"] = round(agree / max(total, 1), 4)
        entry["tracking_frames_per_second"] = round(args.clips * args.frames / seconds, 1)
        result["every"][str(every)] = entry
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
