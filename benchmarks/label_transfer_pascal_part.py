"""Part-label transfer accuracy between real Pascal-Part instances, per feature backend.

For every ordered pair of annotated instances of the same object category in *different* photos,
the source's part labels are carried onto the target through the dense correspondence of
:mod:`vlpart.parsing` (both object masks given as foreground), and the pixel accuracy of the
transferred labels is measured on the target's annotated part pixels. A backend-free baseline
copies the source's labels at the same position of the (resized) object crop; another paints
the source's largest part over the whole target object.

Raw ``.mat`` part labels (``lfleg``) map to Pascal-Part categories by the substring rule of
:func:`vlpart.core.vocab.pascal_part_mat_tokens`; where parts overlap the smallest one labels the
pixel. Prints JSON.

    python benchmarks/label_transfer_pascal_part.py [--dino-weights dino_vits8.safetensors]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F

from vlpart.core.fileio import read_image
from vlpart.core.vocab import load_builtin, pascal_part_mat_tokens
from vlpart.parsing.features import build_feature_extractor, prepare_images, prepare_masks
from vlpart.parsing.transfer import foreground_cells, transfer_masks

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pascal_part_examples"
)
CROP_MARGIN = 0.1  # fraction of the object box added on each side of the crop
MIN_OBJECT_PIXELS = 1024  # smaller instances give crops too coarse to compare parts


@dataclass
class Instance:
    """One annotated object, cropped and resized to S×S."""

    photo: str
    category: str
    image: np.ndarray  # [S, S, 3] uint8 crop (resized later by prepare_images)
    object_mask: torch.Tensor  # [S, S] bool
    labels: torch.Tensor  # [S, S] int64, 0 = no part, k = k-th part of the category (1-based)


def _as_list(x) -> list:
    return list(x) if isinstance(x, np.ndarray) else [x]


def load_instances(data: Path, size: int, *, min_pixels: int) -> list[Instance]:
    tokens = pascal_part_mat_tokens()
    vocab = load_builtin("pascal_part")
    parts_of: dict[str, list[str]] = defaultdict(list)  # object (no spaces) -> part names by id
    for cat in sorted((c for c in vocab if c.is_part), key=lambda c: c.id):
        parts_of[cat.object.replace(" ", "")].append(cat.name)
    instances = []
    for mat_path in sorted(data.glob("*.mat")):
        photo = read_image(mat_path.with_suffix(".jpg"))
        anno = scipy.io.loadmat(mat_path, squeeze_me=True, struct_as_record=False)["anno"]
        for obj in _as_list(anno.objects):
            category = getattr(obj, "class")
            names = parts_of.get(category)
            object_mask = obj.mask.astype(bool)
            if not names or object_mask.sum() < min_pixels:
                continue
            labels = np.zeros(object_mask.shape, np.int64)
            label_area = np.full(object_mask.shape, np.inf)
            for part in _as_list(obj.parts):
                match = next((n for n in names if tokens[n] in part.part_name), None)
                mask = part.mask.astype(bool)
                if match is None or not mask.any():
                    continue
                smaller = mask & (mask.sum() < label_area)
                labels[smaller] = names.index(match) + 1
                label_area[smaller] = mask.sum()
            if not labels.any():
                continue
            ys, xs = np.nonzero(object_mask)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            my, mx = int(CROP_MARGIN * (y1 - y0)), int(CROP_MARGIN * (x1 - x0))
            y0, x0 = max(0, y0 - my), max(0, x0 - mx)
            y1, x1 = min(photo.shape[0], y1 + my), min(photo.shape[1], x1 + mx)
            crop_labels = torch.from_numpy(labels[y0:y1, x0:x1])[None, None].float()
            instances.append(
                Instance(
                    photo=mat_path.stem,
                    category=category,
                    image=photo[y0:y1, x0:x1],
                    object_mask=prepare_masks(object_mask[y0:y1, x0:x1], size),
                    labels=F.interpolate(crop_labels, size=(size, size), mode="nearest-exact")[
                        0, 0
                    ].long(),
                )
            )
    return instances


def pairs(instances: list[Instance]) -> list[tuple[int, int]]:
    return [
        (s, t)
        for s, t in itertools.permutations(range(len(instances)), 2)
        if instances[s].category == instances[t].category
        and instances[s].photo != instances[t].photo
    ]


def summarise(correct: dict, total: dict, accuracies: dict, balanced: list[float]) -> dict:
    every = [a for accs in accuracies.values() for a in accs]
    return {
        "mean_pair_accuracy": round(float(np.mean(every)), 4),
        "mean_pair_balanced_accuracy": round(float(np.mean(balanced)), 4),
        "pooled_pixel_accuracy": round(sum(correct.values()) / sum(total.values()), 4),
        "per_category_mean_pair_accuracy": {
            c: round(float(np.mean(a)), 4) for c, a in sorted(accuracies.items())
        },
    }


def evaluate(instances, index_pairs, predict) -> dict:
    """Pixel accuracy on the target's part pixels; balanced = mean over its parts of recall."""
    correct, total, accuracies = defaultdict(int), defaultdict(int), defaultdict(list)
    balanced = []
    for s, t in index_pairs:
        pred = predict(s, t)
        gt = instances[t].labels
        annotated = gt > 0
        hits = int((pred[annotated] == gt[annotated]).sum())
        cat = instances[t].category
        correct[cat] += hits
        total[cat] += int(annotated.sum())
        accuracies[cat].append(hits / int(annotated.sum()))
        recalls = [float((pred[gt == k] == k).float().mean()) for k in gt[annotated].unique()]
        balanced.append(float(np.mean(recalls)))
    return summarise(correct, total, accuracies, balanced)


def run_backend(instances, index_pairs, extractor, size: int, batch_size: int) -> dict:
    start = time.perf_counter()
    dense, foreground = [], []
    for i in range(0, len(instances), batch_size):
        chunk = instances[i : i + batch_size]
        with torch.inference_mode():
            feats = extractor(prepare_images([x.image for x in chunk], size, extractor))
        dense += list(feats.dense)
        foreground += [
            foreground_cells(x.object_mask, stride=feats.stride, patch_size=feats.patch_size)
            for x in chunk
        ]
    geometry = dict(stride=feats.stride, patch_size=feats.patch_size)

    def predict(s: int, t: int) -> torch.Tensor:
        src = instances[s].labels
        num = int(src.max())
        one_hot = src[None] == torch.arange(1, num + 1)[:, None, None]
        moved = transfer_masks(
            dense[t],
            dense[s],
            foreground[s],
            one_hot,
            novel_foreground=instances[t].object_mask,
            **geometry,
        )
        return (moved * torch.arange(1, num + 1)[:, None, None]).sum(dim=0)

    with torch.inference_mode():
        result = evaluate(instances, index_pairs, predict)
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dino-weights", type=Path, default=None, help="DINO ViT-S/8 weights")
    parser.add_argument("--dino-stride", type=int, default=8, choices=(4, 8))
    parser.add_argument("--min-object-pixels", type=int, default=MIN_OBJECT_PIXELS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = args.image_size
    instances = load_instances(args.data, size, min_pixels=args.min_object_pixels)
    index_pairs = pairs(instances)
    pair_counts: dict[str, int] = defaultdict(int)
    for _, t in index_pairs:
        pair_counts[instances[t].category] += 1

    def crop_aligned(s: int, t: int) -> torch.Tensor:
        return instances[s].labels * instances[t].object_mask

    def source_majority(s: int, t: int) -> torch.Tensor:
        labels = instances[s].labels
        return labels[labels > 0].mode().values * instances[t].object_mask

    report = {
        "image_size": size,
        "num_instances": len(instances),
        "num_pairs": len(index_pairs),
        "pairs_per_category": dict(sorted(pair_counts.items())),
        "baseline_crop_aligned_copy": evaluate(instances, index_pairs, crop_aligned),
        "baseline_source_largest_part_everywhere": evaluate(
            instances, index_pairs, source_majority
        ),
        "backends": {},
    }
    runs = [
        ("efficientnet_lite0 (ImageNet weights)", "efficientnet_lite0", "pretrained", None),
        ("dino_vits8 RANDOM INIT (floor, not DINO)", "dino_vits8", None, args.dino_stride),
    ]
    if args.dino_weights is not None:
        runs.append(
            ("dino_vits8 (real weights)", "dino_vits8", args.dino_weights, args.dino_stride)
        )
    for label, backend, weights, stride in runs:
        extractor = build_feature_extractor(backend, weights=weights, stride=stride)
        report["backends"][label] = run_backend(
            instances, index_pairs, extractor, size, args.batch_size
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
