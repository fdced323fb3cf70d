"""SAM refinement on the Pascal-Part photos: latency per image, and (with real SAM weights) the
mask IoU of refined vs unrefined masks of ground-truth boxes.

    flock /tmp/cpu.lock python benchmarks/sam_refine.py [--shared ../shared/data]
        [--variant vit_b|vit_l|vit_h|tiny|small|base_plus|large] [--threads 2] [--device cpu]
        [--sam-weights sam_vit_b_01ec64.pth] [--weights DETECTOR] [--photos N]

**Latency** (always): a SAM or SAM 2.1 of ``--variant``'s architecture — randomly initialised unless
weights are given; the cost is the same — refines all ground-truth object and part boxes of each
of the 14 photos (one ``SamRefiner.refine`` call per photo, after one warm-up call); the JSON
gives the median and maximum seconds per photo, and the image embedding, the batched box
decoding and the rest (hole/speck cleaning, parent cut) timed in separate calls. The cleaning
cost depends on the masks: random weights give speckled masks, so it is an upper bound there.

**Mask IoU** (only with ``--sam-weights`` or ``$VLPART_SAM_WEIGHTS``): every ground-truth object
and part instance of the 14 photos is prompted with its ground-truth box (so the detector's
boxes and scores play no part) and the mean IoU with its ground-truth mask is reported for:

* ``sam``: the refined mask (box prompt, best of SAM's three candidates, cleaning as default);
* ``grid28``: the ground-truth mask resampled to a 28×28 grid in its box and pasted back — the
  best any Mask R-CNN mask head (28×28 outputs) can do, an upper bound of the unrefined masks;
* ``detector`` (with ``--weights``, a detector trained on real images such as an official VLPart
  ``.pth``): the detector's own mask head on the ground-truth boxes, the actual unrefined masks.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import roi_align

from vlpart.core.coco import decode_segmentation, load_coco
from vlpart.core.fileio import read_image
from vlpart.data.pascal_part import convert_pascal_part
from vlpart.inference.prediction import Prediction
from vlpart.inference.refine import (
    SAM2_VARIANTS,
    SAM_VARIANTS,
    Sam2Refiner,
    SamRefiner,
    build_sam,
    build_sam2,
    load_sam,
    load_sam2,
)
from vlpart.inference.segmenter import MASK_THRESH, PartSegmenter
from vlpart.model.ops import paste_masks

MASK_HEAD_SIDE = 28
EMBEDDINGS = "vlpart_metadata/pascal_part_clip_RN50_a+cname.npy"


def load_ground_truth(examples: Path, work: Path) -> dict[str, dict]:
    """Per photo: ``image`` (np.ndarray[H, W, 3]), ``boxes`` (np.ndarray[N, 4] XYXY, tight
    around the masks), ``masks`` (np.ndarray[N, H, W] bool), ``labels`` — objects then parts."""
    summary = convert_pascal_part(examples, examples, work / "parts.json")
    out: dict[str, dict] = {}
    for path in (summary.objects_json, summary.parts_json):
        data = load_coco(path, masks=True)
        cats = {c["id"]: c["name"] for c in data["categories"]}
        images = {im["id"]: im for im in data["images"]}
        for info in data["images"]:
            out.setdefault(
                Path(info["file_name"]).stem,
                {
                    "image": read_image(examples / info["file_name"]),
                    "boxes": [],
                    "masks": [],
                    "labels": [],
                },
            )
        for ann in data["annotations"]:
            info = images[ann["image_id"]]
            entry = out[Path(info["file_name"]).stem]
            mask = decode_segmentation(ann["segmentation"], info["height"], info["width"])
            mask = mask.astype(bool)
            if not mask.any():
                continue
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            entry["boxes"].append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
            entry["masks"].append(mask)
            entry["labels"].append(cats[ann["category_id"]])
    for entry in out.values():
        entry["boxes"] = np.asarray(entry["boxes"], dtype=np.float32)
        entry["masks"] = np.stack(entry["masks"])
    return out


def box_prediction(entry: dict, masks: np.ndarray | None = None) -> Prediction:
    """The ground-truth boxes as detections (no parents: the IoU is per instance)."""
    n = len(entry["boxes"])
    return Prediction(
        boxes=entry["boxes"],
        scores=np.ones(n, dtype=np.float32),
        labels=entry["labels"],
        label_ids=np.zeros(n, dtype=np.int64),
        category_ids=np.ones(n, dtype=np.int64),
        masks=np.zeros_like(entry["masks"]) if masks is None else masks,
        parent=np.full(n, -1, dtype=np.int64),
    )


def grid_masks(entry: dict) -> np.ndarray:
    """Ground-truth masks through a 28×28 box grid and back (the mask head's resolution)."""
    masks = torch.from_numpy(entry["masks"]).float()[:, None]
    boxes = torch.from_numpy(entry["boxes"])
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], 1)
    grid = roi_align(masks, rois, MASK_HEAD_SIDE, spatial_scale=1.0, aligned=True)
    return (paste_masks(grid, boxes, masks.shape[-2:])[:, 0] >= MASK_THRESH).numpy()


@torch.inference_mode()
def detector_masks(segmenter: PartSegmenter, entry: dict) -> np.ndarray:
    """The detector's mask head on the ground-truth boxes, pasted at the original size."""
    model = segmenter.model
    image = torch.from_numpy(entry["image"]).permute(2, 0, 1).to(segmenter.device)
    batch, _ = model.transform([image])
    maps = list(model.backbone(batch.tensors).values())[:4]
    (h, w), (oh, ow) = batch.image_sizes[0], entry["image"].shape[:2]
    boxes = torch.from_numpy(entry["boxes"]).to(segmenter.device)
    boxes = boxes * boxes.new_tensor([w / ow, h / oh, w / ow, h / oh])
    heads = model.roi_heads
    logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(maps, [boxes])))
    det = {
        "boxes": boxes,
        "scores": boxes.new_ones(len(boxes)),
        "labels": boxes.new_zeros(len(boxes), dtype=torch.int64),
        "masks": logits.sigmoid(),
    }
    out = model.transform.postprocess([det], batch.image_sizes, [(oh, ow)])[0]
    return (out["masks"][:, 0] >= MASK_THRESH).cpu().numpy()


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.ndarray[N]`` IoU of paired masks ``[N, H, W]``."""
    inter = (a & b).sum((1, 2))
    union = (a | b).sum((1, 2))
    return inter / np.maximum(union, 1)


def measure_refine(refiner: SamRefiner | Sam2Refiner, truth: dict[str, dict]) -> dict:
    """Seconds per photo of ``refine`` alone."""
    first = next(iter(truth.values()))
    refiner.refine(first["image"], box_prediction(first))  # warm-up
    refine_s, boxes = [], []
    for entry in truth.values():
        pred = box_prediction(entry)
        t0 = time.perf_counter()
        refiner.refine(entry["image"], pred)
        refine_s.append(time.perf_counter() - t0)
        boxes.append(len(pred))
    return {
        "photos": len(truth),
        "boxes_per_photo_mean": round(statistics.mean(boxes), 1),
        "boxes_per_photo_max": max(boxes),
        "refine_s_median": round(statistics.median(refine_s), 3),
        "refine_s_max": round(max(refine_s), 3),
    }


def measure_latency(refiner: SamRefiner | Sam2Refiner, truth: dict[str, dict]) -> dict:
    """Seconds per photo of ``refine`` (all its ground-truth boxes), and for SAM of its steps
    timed in separate calls: the embedding, the batched decoding, and the rest (cleaning, parent
    cut)."""
    if isinstance(refiner, Sam2Refiner):
        return measure_refine(refiner, truth)
    first = next(iter(truth.values()))
    refiner.refine(first["image"], box_prediction(first))  # warm-up
    embed_s, decode_s, refine_s, boxes = [], [], [], []
    for entry in truth.values():
        image, pred = entry["image"], box_prediction(entry)
        t0 = time.perf_counter()
        embedding, input_size = refiner.image_embedding(image)
        t1 = time.perf_counter()
        refiner.predict_masks(embedding, input_size, image.shape[:2], pred.boxes)
        t2 = time.perf_counter()
        refiner.refine(image, pred)
        t3 = time.perf_counter()
        embed_s.append(t1 - t0)
        decode_s.append(t2 - t1)
        refine_s.append(t3 - t2)
        boxes.append(len(pred))
    rest = [r - e - d for r, e, d in zip(refine_s, embed_s, decode_s, strict=True)]
    return {
        "photos": len(truth),
        "boxes_per_photo_mean": round(statistics.mean(boxes), 1),
        "boxes_per_photo_max": max(boxes),
        "refine_s_median": round(statistics.median(refine_s), 3),
        "refine_s_max": round(max(refine_s), 3),
        "embedding_s_median": round(statistics.median(embed_s), 3),
        "decode_s_median": round(statistics.median(decode_s), 3),
        "decode_s_per_box": round(sum(decode_s) / sum(boxes), 4),
        "clean_and_cut_s_median": round(statistics.median(rest), 3),
        "clean_and_cut_s_per_box": round(sum(rest) / sum(boxes), 4),
    }


def measure_iou(
    refiner: SamRefiner | Sam2Refiner, truth: dict[str, dict], segmenter: PartSegmenter | None
) -> dict:
    ious: dict[str, list[np.ndarray]] = {"sam": [], "grid28": []}
    if segmenter is not None:
        ious["detector"] = []
    kinds: list[np.ndarray] = []
    for entry in truth.values():
        gt = entry["masks"]
        ious["sam"].append(
            mask_iou(refiner.refine(entry["image"], box_prediction(entry)).masks, gt)
        )
        ious["grid28"].append(mask_iou(grid_masks(entry), gt))
        if segmenter is not None:
            ious["detector"].append(mask_iou(detector_masks(segmenter, entry), gt))
        kinds.append(np.array([":" in label for label in entry["labels"]]))
    is_part = np.concatenate(kinds)
    out: dict = {"num_objects": int((~is_part).sum()), "num_parts": int(is_part.sum())}
    for name, values in ious.items():
        v = np.concatenate(values)
        out[name] = {
            "objects": round(float(v[~is_part].mean()), 4),
            "parts": round(float(v[is_part].mean()), 4),
            "all": round(float(v.mean()), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default=str(Path(__file__).parents[2] / "shared" / "data"))
    parser.add_argument(
        "--variant",
        default="vit_b",
        choices=[*SAM_VARIANTS, *SAM2_VARIANTS],
        help="SAM (vit_*) or SAM 2.1 (tiny, ...) architecture; --sam-weights must match",
    )
    parser.add_argument("--sam-weights", default=os.environ.get("VLPART_SAM_WEIGHTS"))
    parser.add_argument("--weights", help="a detector for the 'detector' baseline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--photos", type=int, help="only the N photos with the most boxes (a shorter run)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    examples = Path(args.shared) / "pascal_part_examples"
    with tempfile.TemporaryDirectory() as work:
        truth = load_ground_truth(examples, Path(work))
    if args.photos:
        most = sorted(truth, key=lambda name: -len(truth[name]["boxes"]))[: args.photos]
        truth = {name: truth[name] for name in most}
    torch.manual_seed(0)
    weights = str(args.sam_weights) if args.sam_weights else "random init (same cost)"
    refiner: SamRefiner | Sam2Refiner
    if args.variant in SAM2_VARIANTS:
        model = load_sam2(args.sam_weights) if args.sam_weights else None
        refiner = Sam2Refiner(model or build_sam2(SAM2_VARIANTS[args.variant]), device=args.device)
    else:
        sam = load_sam(args.sam_weights) if args.sam_weights else None
        refiner = SamRefiner(sam or build_sam(SAM_VARIANTS[args.variant]), device=args.device)
    result: dict = {
        "device": args.device,
        "threads": args.threads,
        "torch": torch.__version__,
        "sam": repr(refiner),
        "sam_weights": weights,
        "latency_per_image": measure_latency(refiner, truth),
    }
    if args.sam_weights:
        segmenter = None
        if args.weights and Path(args.weights).suffix in (".pth", ".pt"):
            # An official checkpoint: the released CLIP rows stand in for the text encoder
            # (only the mask head is used).
            segmenter = PartSegmenter.from_pretrained(
                args.weights,
                text_encoder="precomputed",
                vocabulary="pascal_part",
                embeddings=Path(args.shared) / EMBEDDINGS,
                device=args.device,
            )
        elif args.weights:
            segmenter = PartSegmenter.from_pretrained(args.weights, device=args.device)
        result["mask_iou_gt_boxes"] = measure_iou(refiner, truth, segmenter)
    else:
        result["mask_iou_gt_boxes"] = "not measured: needs real SAM weights (--sam-weights)"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
