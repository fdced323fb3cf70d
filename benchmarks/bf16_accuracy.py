"""Accuracy cost of ``precision="bf16"``: mask/box AP of a trained model on a COCO-format
held-out set in fp32 and bf16, and box agreement with fp32 on real photos. Prints JSON.

    flock /tmp/cpu.lock python benchmarks/bf16_accuracy.py \\
        --weights quickstart/model.safetensors --ann quickstart/world/parts_val.json \\
        --image-root quickstart/world --photos ../shared/data/pascal_part_examples

Agreement on the photos uses a random-init R50 detector with the released settings (800 px,
100 detections, random 1024-d vocabulary of 20 rows): for each fp32 detection, the best IoU
of a bf16 detection with the same label; reported are the share with IoU >= 0.9 and the mean.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
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


class _Fixed(TextEncoder):
    identity, dim = "bench:fixed", 1024

    def _encode(self, prompts):
        return torch.randn(len(prompts), self.dim)


def held_out_ap(weights: Path, ann: Path, root: Path) -> dict:
    out = {}
    for precision in ("fp32", "bf16"):
        seg = PartSegmenter.from_pretrained(weights, precision=precision)
        start = time.perf_counter()
        report = evaluate_model(seg, ann, root, progress=False)
        out[precision] = {
            "seconds": round(time.perf_counter() - start, 2),
            "mask_AP": round(100 * report.metrics["segm"]["AP"], 2),
            "mask_AP50": round(100 * report.metrics["segm"]["AP50"], 2),
            "box_AP": round(100 * report.metrics["bbox"]["AP"], 2),
        }
    out["delta_mask_AP"] = round(out["bf16"]["mask_AP"] - out["fp32"]["mask_AP"], 2)
    return out


def photo_agreement(photos: Path) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone_weights=None))
    fp32 = PartSegmenter(model, _Fixed())
    bf16 = PartSegmenter(model, _Fixed(), precision="bf16")
    embeddings = torch.randn(NUM_CLASSES, 1024)
    best, same_top1, n = [], 0, 0
    for path in sorted(photos.glob("*.jpg")):
        image = torch.from_numpy(read_image(path)).permute(2, 0, 1).contiguous()
        a = fp32.predict_tensors([image], embeddings)[0]
        b = bf16.predict_tensors([image], embeddings)[0]
        iou = box_iou(a["boxes"], b["boxes"])
        same = a["labels"][:, None] == b["labels"][None, :]
        best.append((iou * same).amax(dim=1) if len(b["boxes"]) else iou.new_zeros(len(a)))
        if len(a["scores"]) and len(b["scores"]):
            same_top1 += int(a["labels"][0] == b["labels"][0])
            n += 1
    best_iou = torch.cat(best).numpy()
    return {
        "photos": len(best),
        "fp32_detections": int(len(best_iou)),
        "share_matched_iou_0.9": round(float((best_iou >= AGREEMENT_IOU).mean()), 4),
        "mean_best_iou": round(float(best_iou.mean()), 4),
        "same_top_label": f"{same_top1}/{n}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--ann", type=Path, required=True)
    parser.add_argument("--image-root", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.set_printoptions(precision=4)
    report = {
        "held_out": held_out_ap(args.weights, args.ann, args.image_root),
        "photos": photo_agreement(args.photos),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
