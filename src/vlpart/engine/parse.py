"""Parsing driven by COCO files (``vlpart parse``): base bank from annotated base objects, novel
object crops snapped to a trained detector's proposals, parsed parts as a training file.

Each object instance becomes a crop around its box (with a margin), so that every parsed image
shows one object, as the paper's ImageNet images do. Novel crops are saved as PNG files next to
the output and the parsed-parts file refers to them; the trainer reads it as ``kind: parsed``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlpart._io import atomic_write, remove_orphans
from vlpart.data.coco import decode_segmentation, load_coco_json
from vlpart.model import VLPartDetector
from vlpart.parsing import BaseBank, BaseObject, ParseConfig, ParseItem, Proposals
from vlpart.parsing.features import FeatureExtractor
from vlpart.parsing.parser import parse_images
from vlpart.vocab import Vocabulary

__all__ = ["ObjectCrop", "build_base_bank", "object_crops", "parse_novel_objects"]

logger = logging.getLogger(__name__)

CROP_MARGIN = 0.15  # fraction of the box side added on each side of a crop
MIN_OBJECT_PIXELS = 256  # smaller instances are too coarse for patch features


@dataclass
class ObjectCrop:
    """One object instance cut out of its image.

    Attributes:
        image: ``np.ndarray[h, w, 3]`` uint8 RGB crop.
        object_mask: ``np.ndarray[h, w]`` bool.
        part_masks: ``np.ndarray[P, h, w]`` bool (P may be 0).
        part_names: P names ``object:part``.
        category: the object's name.
        source: ``<file name>#<annotation id>``.
    """

    image: np.ndarray
    object_mask: np.ndarray
    part_masks: np.ndarray
    part_names: list[str]
    category: str
    source: str


def object_crops(
    objects_json: str | Path,
    image_root: str | Path,
    *,
    categories: Sequence[str],
    parts_json: str | Path | None = None,
    require_parts: bool = False,
) -> Iterator[ObjectCrop]:
    """Crops of the instances of ``categories`` in an object file, with their parts.

    Args:
        objects_json: COCO file of object annotations (boxes and masks).
        image_root: folder its ``file_name`` entries are relative to.
        categories: object names to keep.
        parts_json: COCO file of part annotations whose ``object_id`` names the object
            annotation (what ``vlpart data synth`` and ``convert-pascal-part`` write).
        require_parts: skip instances without any part (for the base bank).
    """
    objects = load_coco_json(Path(objects_json))
    names = {c["id"]: c["name"] for c in objects["categories"]}
    wanted = {c.lower() for c in categories}
    parts_of: dict[int, list[dict]] = {}
    part_names: dict[int, str] = {}
    if parts_json is not None:
        parts = load_coco_json(Path(parts_json))
        part_names = {c["id"]: c["name"] for c in parts["categories"]}
        for ann in parts["annotations"]:
            parts_of.setdefault(int(ann.get("object_id", -1)), []).append(ann)
    images = {im["id"]: im for im in objects["images"]}
    for ann in objects["annotations"]:
        category = names[ann["category_id"]]
        if category.lower() not in wanted or ann.get("iscrowd", 0):
            continue
        own_parts = parts_of.get(int(ann["id"]), [])
        if require_parts and not own_parts:
            continue
        info = images[ann["image_id"]]
        h, w = int(info["height"]), int(info["width"])
        mask = decode_segmentation(ann["segmentation"], h, w).astype(bool)
        if mask.sum() < MIN_OBJECT_PIXELS:
            continue
        x, y, bw, bh = ann["bbox"]
        x0 = max(0, int(x - CROP_MARGIN * bw))
        y0 = max(0, int(y - CROP_MARGIN * bh))
        x1 = min(w, int(np.ceil(x + bw + CROP_MARGIN * bw)))
        y1 = min(h, int(np.ceil(y + bh + CROP_MARGIN * bh)))
        with Image.open(Path(image_root) / info["file_name"]) as im:
            pixels = np.array(im.convert("RGB"))[y0:y1, x0:x1]
        part_masks = (
            np.stack(
                [
                    decode_segmentation(p["segmentation"], h, w).astype(bool)[y0:y1, x0:x1]
                    for p in own_parts
                ]
            )
            if own_parts
            else np.zeros((0, y1 - y0, x1 - x0), dtype=bool)
        )
        yield ObjectCrop(
            image=np.ascontiguousarray(pixels),
            object_mask=mask[y0:y1, x0:x1],
            part_masks=part_masks,
            part_names=[part_names[p["category_id"]] for p in own_parts],
            category=category,
            source=f"{Path(objects_json).name}#{ann['id']}",
        )


def build_base_bank(
    objects_json: str | Path,
    parts_json: str | Path,
    image_root: str | Path,
    *,
    categories: Sequence[str],
    extractor: FeatureExtractor,
    config: ParseConfig,
) -> BaseBank:
    """A bank of every annotated instance of the base ``categories``."""
    crops = [
        BaseObject(c.image, c.object_mask, c.part_masks, c.part_names, c.category, c.source)
        for c in object_crops(
            objects_json,
            image_root,
            categories=categories,
            parts_json=parts_json,
            require_parts=True,
        )
    ]
    if not crops:
        raise ValueError(f"{objects_json}: no annotated instance of {list(categories)} with parts")
    logger.info("base bank: %d objects of %s", len(crops), sorted({c.category for c in crops}))
    return BaseBank.build(
        crops, extractor, image_size=config.image_size, batch_size=config.batch_size
    )


def parse_novel_objects(
    objects_json: str | Path,
    image_root: str | Path,
    *,
    categories: Sequence[str],
    bank: BaseBank,
    vocabulary: Vocabulary,
    out_dir: str | Path,
    config: ParseConfig,
    detector: VLPartDetector | None = None,
    extractor: FeatureExtractor | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> Path:
    """Parse every instance of the novel ``categories`` into parts.

    Crops are written to ``out_dir/images/`` and the parts to ``out_dir/parsed_parts.json``
    (a shard of it under ``torchrun``). With ``detector``, part boxes are snapped to its
    proposals on the crop (IoU > 0.3) and dropped otherwise.

    Returns:
        The parsed-parts file (or this rank's shard).
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    remove_orphans(out / "images")
    items = []
    for index, crop in enumerate(object_crops(objects_json, image_root, categories=categories)):
        path = (out / "images" / f"{index + 1:06d}.png").resolve()
        if not path.is_file():  # atomic: torchrun ranks write the same crops
            atomic_write(path, lambda tmp, c=crop: Image.fromarray(c.image).save(tmp, "PNG"))
        proposals = None
        if detector is not None:
            detector.eval()
            tensor = torch.from_numpy(crop.image).permute(2, 0, 1).contiguous()
            found = detector.propose([tensor])[0]
            proposals = Proposals(found["boxes"].cpu(), found["scores"].cpu())
        items.append(
            ParseItem(
                index + 1, path, crop.category, proposals=proposals, object_mask=crop.object_mask
            )
        )
    if not items:
        raise ValueError(f"{objects_json}: no instance of {list(categories)} to parse")
    logger.info("parsing %d instances of %s", len(items), sorted(set(categories)))
    return parse_images(
        items,
        out / "parsed_parts.json",
        bank=bank,
        vocabulary=vocabulary,
        config=config,
        extractor=extractor,
        rank=rank,
        world_size=world_size,
    )
