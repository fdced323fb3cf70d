"""Latency and accuracy cost of ``precision="int8"`` against fp32, on the CPU. Prints JSON.

    flock /tmp/cpu.lock python benchmarks/int8_latency.py \\
        --photos ../shared/data/pascal_part_examples --threads 2

A random-init R50 detector with the released settings (800 px, 100 detections, a random
1024-d vocabulary of 20 rows; speed does not depend on the weights) is quantized with
calibration on every other Pascal-Part photo (sorted by name) and compared on the others:

* latency: :meth:`PartSegmenter.predict_tensors` of one held-out photo, fp32 and int8
  alternating, after one warm-up each (the ratio is what carries over to other machines);
* agreement: for each fp32 detection, the best IoU of an int8 detection with the same label;
  reported are the share with IoU >= 0.9 and the mean (as ``benchmarks/bf16_accuracy.py``).

With ``--quickstart RUN [RUN ...]`` (folders written by ``vlpart quickstart``:
``model.safetensors`` and ``world/``) it also reports, per run, mask/box AP of that model on its
held-out images (``world/parts_val.json``) in fp32 and int8, calibrated on its first
``--calibration-images`` training images (``world/parts_base_train.json``), and the mean and
spread of the int8 − fp32 changes over the runs::

    flock /tmp/cpu.lock python benchmarks/int8_latency.py \\
        --photos ../shared/data/pascal_part_examples --threads 2 \\
        --quickstart runs/seeds/seed_0 runs/seeds/seed_1 runs/seeds/seed_2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.ops import box_iou

from vlpart.core.config import ModelConfig
from vlpart.core.fileio import read_image
from vlpart.evaluation.model_eval import evaluate_model
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import build_model
from vlpart.text.base import TextEncoder

AGREEMENT_IOU = 0.9
NUM_CLASSES = 20
# Reported AP keys: (COCOeval IoU type, metric).
METRICS = {
    "mask_AP": ("segm", "AP"),
    "mask_AP50": ("segm", "AP50"),
    "box_AP": ("bbox", "AP"),
    "box_AP50": ("bbox", "AP50"),
}


class _Fixed(TextEncoder):
    identity, dim = "bench:fixed", 1024

    def _encode(self, prompts):
        return torch.randn(len(prompts), self.dim)


def _tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_image(path)).permute(2, 0, 1).contiguous()


def photos_report(photos: Path, runs: int) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone_weights=None))
    files = sorted(photos.glob("*.jpg"))
    calibration, held_out = files[::2], files[1::2]
    embeddings = torch.randn(NUM_CLASSES, 1024)
    fp32 = PartSegmenter(model, _Fixed())
    int8 = PartSegmenter(model, _Fixed(), precision="int8", calibration=calibration)
    start = time.perf_counter()
    int8.backend.quantized([], embeddings)
    build_s = time.perf_counter() - start

    best, same_top1, n = [], 0, 0
    for path in held_out:
        image = _tensor(path)
        a = fp32.predict_tensors([image], embeddings)[0]
        b = int8.predict_tensors([image], embeddings)[0]
        iou = box_iou(a["boxes"], b["boxes"])
        same = a["labels"][:, None] == b["labels"][None, :]
        best.append((iou * same).amax(dim=1) if len(b["boxes"]) else iou.new_zeros(len(a)))
        if len(a["scores"]) and len(b["scores"]):
            same_top1 += int(a["labels"][0] == b["labels"][0])
            n += 1
    best_iou = torch.cat(best).numpy()

    image = _tensor(held_out[0])
    times = {"fp32": [], "int8": []}
    for seg in (fp32, int8):  # warm-up
        seg.predict_tensors([image], embeddings)
    for _ in range(runs):
        for name, seg in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            seg.predict_tensors([image], embeddings)
            times[name].append(time.perf_counter() - start)
    fp32_s, int8_s = (statistics.median(times[k]) for k in ("fp32", "int8"))
    return {
        "image_size": list(image.shape[1:]),
        "calibration_photos": len(calibration),
        "int8_build_s": round(build_s, 1),
        "fp32_s": round(fp32_s, 3),
        "int8_s": round(int8_s, 3),
        "int8_over_fp32": round(int8_s / fp32_s, 3),
        "held_out_photos": len(held_out),
        "fp32_detections": int(len(best_iou)),
        "share_matched_iou_0.9": round(float((best_iou >= AGREEMENT_IOU).mean()), 4),
        "mean_best_iou": round(float(best_iou.mean()), 4),
        "same_top_label": f"{same_top1}/{n}",
    }


def held_out_ap(run: Path, num_calibration: int) -> dict:
    """fp32 and int8 AP of the quickstart model in ``run`` on its held-out images."""
    world = run / "world"
    train = json.loads((world / "parts_base_train.json").read_text())["images"]
    calibration = [world / info["file_name"] for info in train[:num_calibration]]
    out = {"run": str(run), "calibration_images": len(calibration)}
    fp32 = PartSegmenter.from_pretrained(run / "model.safetensors")
    for precision in ("fp32", "int8"):
        seg = fp32
        if precision == "int8":
            options = {"info": fp32.info, "calibration": calibration}
            seg = PartSegmenter(fp32.model, fp32.text_encoder, precision="int8", **options)
        start = time.perf_counter()
        report = evaluate_model(seg, world / "parts_val.json", world, progress=False)
        out[precision] = {
            "seconds": round(time.perf_counter() - start, 2),
            **{
                key: round(100 * report.metrics[iou][name], 2)
                for key, (iou, name) in METRICS.items()
            },
        }
    for key in METRICS:
        out[f"delta_{key}"] = round(out["int8"][key] - out["fp32"][key], 2)
    return out


def spread(runs: list[dict]) -> dict:
    """Mean, sample std, min and max of each int8 − fp32 change over ``runs``."""
    out = {}
    for key in METRICS:
        deltas = [r[f"delta_{key}"] for r in runs]
        std = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
        out[f"delta_{key}"] = {
            "mean": round(statistics.mean(deltas), 2),
            "std": round(std, 2),
            "min": min(deltas),
            "max": max(deltas),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, help="Pascal-Part photos (latency, agreement)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quickstart", type=Path, nargs="+", default=[], help="quickstart runs")
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {}
    if args.photos:
        report["photos"] = photos_report(args.photos, args.runs)
        print(json.dumps(report["photos"]), file=sys.stderr, flush=True)  # progress
    if args.quickstart:
        runs = []
        for run in args.quickstart:
            runs.append(held_out_ap(run, args.calibration_images))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        report["held_out"] = {"runs": runs, "over_runs": spread(runs)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
