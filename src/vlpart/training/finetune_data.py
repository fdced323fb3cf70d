"""What ``vlpart finetune`` checks and derives from a user's COCO file before training.

* :func:`inspect_dataset`: categories under the one naming rule, instances per category, empty
  categories, missing images and images whose size differs from the file's, as one-line
  :class:`~vlpart.core.errors.InputError` s;
* :func:`held_out_split`: the 10 % validation split made when no ``--val`` file is given;
* :func:`pseudo_label_known`: the starting model's own detections of the categories it knew, on
  the user's images, added as annotations so that fine-tuning does not teach it that they are
  background (the forgetting limiter, see ``docs/finetune.md``); detections on the file's own
  instances are left out.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import box_iou
from tqdm import tqdm

from vlpart.core.coco import category_vocabulary, load_coco
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import read_image_size
from vlpart.core.vocab import Vocabulary, name_key, split_category_name

__all__ = [
    "DatasetSummary",
    "count_instances",
    "held_out_split",
    "inspect_dataset",
    "pseudo_label_known",
]

logger = logging.getLogger(__name__)

# Share of the annotated images held out for validation when no --val file is given, and the
# fewest annotated images for which a split is made at all.
HELD_OUT_FRACTION = 0.1
MIN_IMAGES_FOR_SPLIT = 10
# Score from which a starting model's detection of a category it knew becomes an annotation.
PSEUDO_LABEL_SCORE = 0.5
# A detection of a known category whose box overlaps one of the file's own annotations by at
# least this IoU is dropped: it is the start's old name for the user's instance (a dog's torso
# detected as a cat's), and keeping it would teach both labels for one box.
PSEUDO_LABEL_MAX_IOU = 0.5


@dataclass(frozen=True)
class DatasetSummary:
    """A checked COCO file.

    Attributes:
        path: the file.
        data: its content (as :func:`vlpart.core.coco.load_coco` returns it).
        vocabulary: its categories, object/part from the naming rule, in id order.
        instances: category name -> usable (non-crowd, non-empty box) instances.
        num_images: images listed.
        num_annotated: images with at least one usable instance.
    """

    path: Path
    data: dict[str, Any]
    vocabulary: Vocabulary
    instances: dict[str, int]
    num_images: int
    num_annotated: int

    @property
    def empty(self) -> list[str]:
        """Categories without any usable instance."""
        return [name for name, n in self.instances.items() if n == 0]

    @property
    def has_parts(self) -> bool:
        return any(c.is_part for c in self.vocabulary)


def _usable(ann: dict) -> bool:
    return not ann.get("iscrowd", 0) and ann["bbox"][2] > 0 and ann["bbox"][3] > 0


def inspect_dataset(ann_file: str | Path, image_root: str | Path) -> DatasetSummary:
    """Read and check a fine-tuning file and its images (headers only).

    Raises:
        MissingFileError: the file, or some of its images (how many, which first).
        InputError: not COCO, a category name that clashes with the naming rule, no usable
            annotation, images whose size is not the recorded one (how many, which first).
    """
    path = Path(ann_file)
    data = load_coco(path, masks=True)
    for cat in data["categories"]:
        _check_name(path, cat)
    vocabulary = category_vocabulary(data["categories"], name=path.stem)
    instances = count_instances(data, vocabulary)
    if not any(instances.values()):
        raise InputError(
            f"{path}: no usable annotation (every one is a crowd region or has an empty box, "
            "or there are none); annotate at least one instance with a box and a mask"
        )
    annotated = {int(a["image_id"]) for a in data["annotations"] if _usable(a)}
    _check_images(path, Path(image_root), data["images"])
    return DatasetSummary(
        path=path,
        data=data,
        vocabulary=vocabulary,
        instances=instances,
        num_images=len(data["images"]),
        num_annotated=len(annotated),
    )


def count_instances(data: dict, vocabulary: Vocabulary) -> dict[str, int]:
    """Category name -> usable instances in COCO dict ``data``, in vocabulary order."""
    id_to_name = {c.id: c.name for c in vocabulary}
    counts = Counter(id_to_name[int(a["category_id"])] for a in data["annotations"] if _usable(a))
    return {c.name: counts.get(c.name, 0) for c in vocabulary}


def _check_name(path: Path, cat: dict) -> None:
    """A category name the naming rule reads one way only."""
    name, sup = str(cat["name"]), cat.get("supercategory") or None
    where = f"{path}: category {cat['id']} {name!r}"
    if name.count(":") > 1:
        raise InputError(f"{where}: more than one ':'; write 'object:part'")
    obj, part = split_category_name(name, sup)
    if not obj or (":" in name and not part):
        raise InputError(f"{where}: empty object or part name; write 'object:part'")
    if ":" in name and sup and part is not None and name_key(sup) != name_key(obj):
        raise InputError(
            f"{where}: names object {obj!r} but its supercategory is {sup!r}; make them agree "
            "or drop the supercategory"
        )


def _check_images(path: Path, root: Path, images: list[dict]) -> None:
    missing, wrong = [], []
    for info in tqdm(images, desc="check images", disable=None, leave=False):
        name = info.get("file_name")
        if not name:
            raise InputError(f"{path}: image {info.get('id')} has no file_name")
        image = root / name
        if not image.is_file():
            missing.append(image)
            continue
        size = read_image_size(image)
        if size != (int(info["height"]), int(info["width"])):
            wrong.append((image, size, info))
    if missing:
        raise MissingFileError(
            f"{root}: {len(missing)} of the {len(images)} images of {path.name} are missing, "
            f"first {missing[0]}; pass the folder 'file_name' is relative to"
        )
    if wrong:
        image, (h, w), info = wrong[0]
        raise InputError(
            f"{path}: {len(wrong)} images differ from their recorded size, first {image} is "
            f"{w}x{h} (after EXIF orientation) but the file says {info['width']}x"
            f"{info['height']}; fix 'width'/'height' or the images"
        )


def held_out_split(summary: DatasetSummary) -> tuple[dict, dict] | None:
    """``(train, val)`` COCO dicts holding out every tenth annotated image (in id order), or
    None when there are fewer than :data:`MIN_IMAGES_FOR_SPLIT` annotated images."""
    if summary.num_annotated < MIN_IMAGES_FOR_SPLIT:
        return None
    data = summary.data
    annotated = sorted({int(a["image_id"]) for a in data["annotations"] if _usable(a)})
    step = round(1 / HELD_OUT_FRACTION)
    val_ids = set(annotated[step - 1 :: step])

    def part(keep) -> dict:
        return {
            **{k: v for k, v in data.items() if k not in ("images", "annotations")},
            "images": [i for i in data["images"] if keep(int(i["id"]))],
            "annotations": [a for a in data["annotations"] if keep(int(a["image_id"]))],
        }

    return part(lambda i: i not in val_ids), part(lambda i: i in val_ids)


def pseudo_label_known(
    segmenter, data: dict, image_root: str | Path, known: Vocabulary
) -> tuple[dict, int]:
    """``data`` plus the starting model's detections of ``known`` categories the file does not
    name, scoring at least :data:`PSEUDO_LABEL_SCORE` and overlapping none of the file's own
    annotations of that image by :data:`PSEUDO_LABEL_MAX_IOU` box IoU or more, as annotations
    of added categories.

    Args:
        segmenter: a :class:`~vlpart.inference.segmenter.PartSegmenter` of the starting model.
        data: the COCO dict the model is fine-tuned on.
        image_root: the folder its ``file_name`` entries are relative to.
        known: the starting model's vocabulary.

    Returns:
        The new COCO dict and the number of annotations added.
    """
    named = {name_key(c["name"]) for c in data["categories"]}
    out = copy.deepcopy(data)
    unnamed = tuple(c for c in known if name_key(c.name) not in named)
    if not unnamed:
        return out, 0
    extra = Vocabulary(unnamed, name=known.name + "-known")
    next_id = max(int(c["id"]) for c in data["categories"]) + 1
    new_ids = list(range(next_id, next_id + len(extra)))
    out["categories"] += [
        {"id": i, "name": c.name, **({"supercategory": c.object} if c.is_part else {})}
        for i, c in zip(new_ids, extra, strict=True)
    ]
    ann_id = max([int(a["id"]) for a in data["annotations"]], default=0) + 1
    own: dict[int, list] = {}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        own.setdefault(int(ann["image_id"]), []).append([x, y, x + w, y + h])
    added = 0
    for info in tqdm(data["images"], desc="label known categories", disable=None):
        pred = segmenter.predict(
            Path(image_root) / info["file_name"],
            vocabulary=extra,
            score_threshold=PSEUDO_LABEL_SCORE,
        )
        records = pred.to_coco(int(info["id"]))
        overlap = _max_iou(records, own.get(int(info["id"]), []))
        for record, label, iou in zip(records, pred.label_ids, overlap, strict=True):
            x, y, w, h = record["bbox"]
            if w <= 0 or h <= 0 or iou >= PSEUDO_LABEL_MAX_IOU:
                continue
            out["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": int(info["id"]),
                    "category_id": new_ids[int(label)],
                    "bbox": [x, y, w, h],
                    "area": float(w * h),
                    "segmentation": record["segmentation"],
                    "iscrowd": 0,
                }
            )
            ann_id += 1
            added += 1
    return out, added


def _max_iou(records: list[dict], boxes: list[list[float]]) -> list[float]:
    """For each COCO record, its largest box IoU with ``boxes`` (XYXY; 0 when there are none)."""
    if not records or not boxes:
        return [0.0] * len(records)
    xywh = torch.tensor([r["bbox"] for r in records], dtype=torch.float64)
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
    return box_iou(xyxy, torch.tensor(boxes, dtype=torch.float64)).max(dim=1).values.tolist()
