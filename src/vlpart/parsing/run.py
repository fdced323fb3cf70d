"""Parsing driven by COCO files (``vlpart parse``): base bank from annotated base objects, novel
object crops snapped to a trained detector's proposals, parsed parts as a training file.

Each object instance becomes a crop around its box (with a margin), so that every parsed image
shows one object, as the paper's ImageNet images do. Novel crops are saved as PNG files next to
the output and the parsed-parts file refers to them; the trainer reads it as ``kind: parsed``.

:func:`run_parse` is the whole run, configured by :class:`vlpart.core.config.ParsingConfig` (the one
parse config; every field is used here). Under ``torchrun`` the novel instances are split by rank
(:func:`vlpart.core.coco.rank_share`) *before* any image is read or any proposal computed, rank 0
builds the base bank once and the others load it, each rank writes its shard and rank 0 merges
them (:func:`vlpart.core.coco.merge_shards`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from vlpart.core.coco import decode_segmentation, load_coco, merge_shards, rank_share, shard_path
from vlpart.core.config import ConfigError, ParsingConfig
from vlpart.core.distributed import init_distributed, shutdown_distributed
from vlpart.core.errors import InputError
from vlpart.core.fileio import atomic_write, read_image, remove_orphans
from vlpart.core.vocab import Vocabulary, parse_vocabulary
from vlpart.model import VLPartDetector, load_checkpoint
from vlpart.parsing import BaseBank, BaseObject, ParseItem, Parser, Proposals
from vlpart.parsing.features import FeatureExtractor, build_feature_extractor

__all__ = [
    "PARSED_PARTS",
    "ObjectCrop",
    "build_base_bank",
    "object_crops",
    "parse_novel_objects",
    "run_parse",
]

logger = logging.getLogger(__name__)

CROP_MARGIN = 0.15  # fraction of the box side added on each side of a crop
MIN_OBJECT_PIXELS = 256  # smaller instances are too coarse for patch features
PARSED_PARTS = "parsed_parts.json"


@dataclass
class ObjectCrop:
    """One object instance cut out of its image.

    Attributes:
        index: position of the instance among all kept instances of the file (0-based; the same
            on every rank).
        image: ``np.ndarray[h, w, 3]`` uint8 RGB crop.
        object_mask: ``np.ndarray[h, w]`` bool.
        part_masks: ``np.ndarray[P, h, w]`` bool (P may be 0).
        part_names: P names ``object:part``.
        category: the object's name.
        source: ``<file name>#<annotation id>``.
    """

    index: int
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
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[ObjectCrop]:
    """Crops of the instances of ``categories`` in an object file, with their parts.

    Args:
        objects_json: COCO file of object annotations (boxes and masks).
        image_root: folder its ``file_name`` entries are relative to.
        categories: object names to keep.
        parts_json: COCO file of part annotations whose ``object_id`` names the object
            annotation (what ``vlpart data synth`` and ``convert-pascal-part`` write).
        require_parts: skip instances without any part (for the base bank).
        rank: yield only this rank's share of the instances; the others' images are never
            read.
        world_size: the number of ranks sharing the instances.
    """
    objects = load_coco(Path(objects_json), masks=True)
    names = {c["id"]: c["name"] for c in objects["categories"]}
    wanted = {c.lower() for c in categories}
    parts_of: dict[int, list[dict]] = {}
    part_names: dict[int, str] = {}
    if parts_json is not None:
        parts = load_coco(Path(parts_json), masks=True)
        part_names = {c["id"]: c["name"] for c in parts["categories"]}
        for ann in parts["annotations"]:
            parts_of.setdefault(int(ann.get("object_id", -1)), []).append(ann)
    images = {im["id"]: im for im in objects["images"]}
    kept = []
    for ann in objects["annotations"]:
        if names[ann["category_id"]].lower() not in wanted or ann.get("iscrowd", 0):
            continue
        if require_parts and not parts_of.get(int(ann["id"])):
            continue
        info = images[ann["image_id"]]
        mask = decode_segmentation(ann["segmentation"], int(info["height"]), int(info["width"]))
        if int(mask.sum()) >= MIN_OBJECT_PIXELS:
            kept.append(ann)
    for index, ann in rank_share(list(enumerate(kept)), rank, world_size):
        info = images[ann["image_id"]]
        h, w = int(info["height"]), int(info["width"])
        mask = decode_segmentation(ann["segmentation"], h, w).astype(bool)
        x, y, bw, bh = ann["bbox"]
        x0 = max(0, int(x - CROP_MARGIN * bw))
        y0 = max(0, int(y - CROP_MARGIN * bh))
        x1 = min(w, int(np.ceil(x + bw + CROP_MARGIN * bw)))
        y1 = min(h, int(np.ceil(y + bh + CROP_MARGIN * bh)))
        pixels = read_image(Path(image_root) / info["file_name"])[y0:y1, x0:x1]
        own_parts = parts_of.get(int(ann["id"]), [])
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
            index=index,
            image=np.ascontiguousarray(pixels),
            object_mask=mask[y0:y1, x0:x1],
            part_masks=part_masks,
            part_names=[part_names[p["category_id"]] for p in own_parts],
            category=names[ann["category_id"]],
            source=f"{Path(objects_json).name}#{ann['id']}",
        )


def build_base_bank(
    objects_json: str | Path,
    parts_json: str | Path,
    image_root: str | Path,
    *,
    categories: Sequence[str],
    extractor: FeatureExtractor,
    config: ParsingConfig,
) -> BaseBank:
    """A bank of every annotated instance of the base ``categories``
    (``config.image_size``/``batch_size``)."""
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
        raise InputError(f"{objects_json}: no annotated instance of {list(categories)} with parts")
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
    config: ParsingConfig,
    extractor: FeatureExtractor,
    detector: VLPartDetector | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Path:
    """Parse this rank's share of the instances of the novel ``categories`` into parts.

    Crops are written to ``out_dir/images/`` and the parts to ``out_dir/parsed_parts.json``
    (its :func:`~vlpart.core.coco.shard_path` when ``world_size > 1``). With ``detector``, part
    boxes are snapped to its proposals on the crop (IoU > 0.3) and dropped otherwise; proposals are
    computed for this rank's crops only.

    Returns:
        The parsed-parts file (or this rank's shard).
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    remove_orphans(out / "images")
    parser = Parser(
        extractor,
        bank,
        vocabulary,
        image_size=config.image_size,
        batch_size=config.batch_size,
        include_masks=config.include_masks,
    )
    target = out / PARSED_PARTS
    if world_size > 1:
        target = shard_path(target, rank, world_size)
    finished = parser.finished(target)  # a resumed run computes no proposals for these
    if detector is not None:
        detector.eval()
        device = next(detector.parameters()).device
    items = []
    for crop in object_crops(
        objects_json, image_root, categories=categories, rank=rank, world_size=world_size
    ):
        path = (out / "images" / f"{crop.index + 1:06d}.png").resolve()
        if not path.is_file():  # a resumed run keeps the crops it wrote
            atomic_write(path, lambda tmp, c=crop: Image.fromarray(c.image).save(tmp, "PNG"))
        proposals = None
        if detector is not None and crop.index + 1 not in finished:
            tensor = torch.from_numpy(crop.image).permute(2, 0, 1).to(device)
            with torch.inference_mode():
                found = detector.propose([tensor])[0]
            proposals = Proposals(found["boxes"].cpu(), found["scores"].cpu())
        items.append(
            ParseItem(
                crop.index + 1,
                path,
                crop.category,
                proposals=proposals,
                object_mask=crop.object_mask,
            )
        )
    if not items and world_size == 1:
        raise InputError(f"{objects_json}: no instance of {list(categories)} to parse")
    logger.info("parsing %d instances of %s", len(items), sorted(set(categories)))
    return parser.run(items, target)


def run_parse(config: ParsingConfig, out_dir: str | Path, *, device: str = "cpu") -> Path:
    """The whole ``vlpart parse`` run (see the module docstring), resumable.

    Args:
        config: the ``parse:`` section of an experiment config.
        out_dir: gets ``parsed_parts.json`` and ``images/``.
        device: ``cpu`` or ``cuda`` (under ``torchrun``, each rank its local GPU).

    Returns:
        ``out_dir/parsed_parts.json`` (on every rank, once rank 0 has merged the shards).

    Raises:
        ValueError: a required path or category list is not set, or no instance to parse.
    """
    for key in ("base_objects", "base_parts", "novel_objects"):
        if not getattr(config, key):
            raise ConfigError(f"parse.{key} is not set")
    if not config.base_categories:
        raise ConfigError("parse.base_categories is empty")
    out = Path(out_dir)
    info = init_distributed("cuda" if device.startswith("cuda") else "cpu")
    run_device = str(info.device) if info.distributed else device
    try:
        extractor = build_feature_extractor(
            config.backend, weights=config.weights, stride=config.stride, device=run_device
        )
        bank_dir = out / "bank"
        if not info.distributed or info.is_main:
            bank = build_base_bank(
                config.base_objects,
                config.base_parts,
                config.base_image_root,
                categories=config.base_categories,
                extractor=extractor,
                config=config,
            )
        if info.distributed:
            if info.is_main:
                bank.save(bank_dir)
            dist.barrier()
            if not info.is_main:
                bank = BaseBank.load(bank_dir)
        detector = None
        if config.detector:
            detector = load_checkpoint(config.detector)[0].to(run_device)
        written = parse_novel_objects(
            config.novel_objects,
            config.novel_image_root,
            categories=config.novel_categories,
            bank=bank,
            vocabulary=parse_vocabulary(config.vocabulary),
            out_dir=out,
            config=config,
            extractor=extractor,
            detector=detector,
            rank=info.rank,
            world_size=info.world_size,
        )
        if info.distributed:
            dist.barrier()
            if info.is_main:
                written = merge_shards(out / PARSED_PARTS, info.world_size)
            dist.barrier()
            written = out / PARSED_PARTS
        return written
    finally:
        shutdown_distributed()
