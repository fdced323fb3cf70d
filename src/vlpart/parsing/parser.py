"""Parse novel-object images into parts and write them as a COCO annotation file.

For each novel image (its object category known): the nearest base image by global-descriptor
cosine, a dense correspondence to it, the base part masks carried over and cut to the novel
foreground, each reduced to its largest connected component, boxed, snapped to the detector's
best-overlapping proposal (IoU > 0.3, else dropped) and renamed to the novel object. Base-object
images can instead come with the detector's own detections (the hybrid parser), which pass
through unchanged.

Runs are batched, shardable (``rank``/``world_size``; :func:`merge_shards` joins the shards)
and resumable: every finished image is appended to ``OUT.progress.jsonl`` and skipped on the next
run; the COCO file is written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torch import Tensor
from tqdm import tqdm

from vlpart._io import errors_name, read_rgb, remove_orphans, write_text_atomic
from vlpart.parsing.bank import BaseBank
from vlpart.parsing.features import (
    PRETRAINED,
    FeatureExtractor,
    build_feature_extractor,
    prepare_images,
    prepare_masks,
)
from vlpart.parsing.transfer import (
    DEFAULT_CHUNK_SIZE,
    SNAP_IOU_THRESH,
    cells_to_pixels,
    largest_component,
    mask_box,
    rename_part,
    snap_to_proposals,
    transfer_masks,
)
from vlpart.vocab import Vocabulary, parse_vocabulary

__all__ = [
    "Detections",
    "ParseConfig",
    "ParseItem",
    "Parser",
    "Proposals",
    "merge_shards",
    "parse_images",
    "shard_path",
]

logger = logging.getLogger(__name__)

# Saliency (min-max normalised CLS attention) above which a pixel counts as the novel object when
# no object mask is given. Our choice; the paper does not state its foreground rule.
SALIENCY_THRESH = 0.3
PROGRESS_SUFFIX = ".progress.jsonl"


@dataclass(frozen=True)
class ParseConfig:
    """Settings of a parsing run (plain values, so a CLI/YAML layer can fill them).

    Attributes:
        backend: feature backend (``dino_vits8`` or ``efficientnet_lite0``).
        weights: ``"pretrained"``, a weights file, or ``None`` for random init (tests only).
        stride: DINO patch stride (8 or 4); ``None`` = the backend's own.
        image_size: side S that images are resized to for features and transfer.
        batch_size: images per feature-extraction batch.
        chunk_size: novel cells per similarity matrix product.
        saliency_thresh: foreground threshold on the saliency when no object mask is given.
        snap_iou_thresh: minimum IoU (exclusive) between a part box and its proposal.
        include_masks: also write the transferred masks as RLE ``segmentation``.
        device: where features are computed and matched.
    """

    backend: str = "dino_vits8"
    weights: str | None = PRETRAINED
    stride: int | None = None
    image_size: int = 224
    batch_size: int = 8
    chunk_size: int = DEFAULT_CHUNK_SIZE
    saliency_thresh: float = SALIENCY_THRESH
    snap_iou_thresh: float = SNAP_IOU_THRESH
    include_masks: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class Proposals:
    """Detector proposals of one image.

    Attributes:
        boxes: ``[R, 4]`` float XYXY in image pixels.
        scores: ``[R]`` float.
    """

    boxes: np.ndarray | Tensor
    scores: np.ndarray | Tensor


@dataclass(frozen=True)
class Detections:
    """The part detector's output on a base-object image (hybrid parser).

    Attributes:
        boxes: ``[K, 4]`` float XYXY in image pixels.
        scores: ``[K]`` float.
        labels: K category names (``cat:head``); names outside the vocabulary are dropped.
    """

    boxes: np.ndarray | Tensor
    scores: np.ndarray | Tensor
    labels: Sequence[str]


@dataclass(frozen=True)
class ParseItem:
    """One image to parse.

    Attributes:
        image_id: unique integer id (the COCO image id).
        image: path of an RGB image, or ``np.ndarray[H, W, 3]`` uint8.
        object: the object category shown (``dog``).
        proposals: detector proposals for snapping; ``None`` keeps the transferred boxes.
        object_mask: ``np.ndarray[H, W]`` bool foreground; ``None`` uses the saliency.
        detections: the part detector's detections (base-object images): passed through instead
            of parsing.
    """

    image_id: int
    image: str | Path | np.ndarray
    object: str
    proposals: Proposals | None = None
    object_mask: np.ndarray | None = None
    detections: Detections | None = None


def _as_tensor(x: np.ndarray | Tensor, shape_tail: tuple[int, ...], what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).float()
    if t.ndim != 1 + len(shape_tail) or tuple(t.shape[1:]) != shape_tail:
        raise ValueError(f"{what} must have shape [N, {', '.join(map(str, shape_tail))}]")
    return t.cpu()


def _xywh(box: Tensor) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]


def _category_ids(vocabulary: Vocabulary) -> dict[str, int]:
    ids = [c.id for c in vocabulary]
    if len(set(ids)) != len(ids) or min(ids) < 1:
        ids = list(range(1, len(vocabulary) + 1))
    return {c.name: i for c, i in zip(vocabulary, ids, strict=True)}


def _load_image(image: str | Path | np.ndarray) -> np.ndarray:
    return image if isinstance(image, np.ndarray) else read_rgb(image)


class Parser:
    """Parses novel-object images against a base bank (no per-image state; see module docstring).

    Args:
        extractor: the feature extractor the bank was built with.
        bank: base images with part masks.
        vocabulary: target vocabulary; parts it cannot name are dropped.
        config: run settings (``backend``/``weights``/``stride``/``device`` are not used here:
            the extractor is already built).
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        bank: BaseBank,
        vocabulary: Vocabulary,
        *,
        config: ParseConfig = ParseConfig(),
    ) -> None:
        bank.check_compatible(extractor, config.image_size)
        self.extractor = extractor
        self.bank = bank
        self.vocabulary = vocabulary
        self.config = config
        self.category_ids = _category_ids(vocabulary)

    @property
    def categories(self) -> list[dict]:
        """COCO ``categories`` of the target vocabulary."""
        return [
            {"id": self.category_ids[c.name], "name": c.name, "object": c.object, "part": c.part}
            for c in self.vocabulary
        ]

    def fingerprint(self) -> dict:
        """Everything that changes the output; resumed runs must match it."""
        vocab = json.dumps(self.vocabulary.to_json(), sort_keys=True)
        bank = json.dumps([asdict(e) for e in self.bank.entries], sort_keys=True)
        cfg = self.config
        return {
            "extractor": self.extractor.identity,
            "image_size": cfg.image_size,
            "saliency_thresh": cfg.saliency_thresh,
            "snap_iou_thresh": cfg.snap_iou_thresh,
            "include_masks": cfg.include_masks,
            "vocabulary": hashlib.sha256(vocab.encode()).hexdigest()[:16],
            "bank": hashlib.sha256(bank.encode()).hexdigest()[:16],
        }

    def parse_batch(self, items: Sequence[ParseItem]) -> list[dict]:
        """Parse a batch of images.

        Returns:
            One record per item: ``{"image": COCO image dict, "annotations": [COCO annotation
            dicts without "id"]}``.
        """
        images = [_load_image(item.image) for item in items]
        records = [
            {
                "image": {
                    "id": int(item.image_id),
                    "file_name": "" if isinstance(item.image, np.ndarray) else str(item.image),
                    "height": int(img.shape[0]),
                    "width": int(img.shape[1]),
                    "object": item.object,
                },
                "annotations": [],
            }
            for item, img in zip(items, images, strict=True)
        ]
        to_parse = [i for i, item in enumerate(items) if item.detections is None]
        for i, item in enumerate(items):
            if item.detections is not None:
                records[i]["annotations"] = self._pass_through(item)
        if to_parse:
            parsed = self._transfer([items[i] for i in to_parse], [images[i] for i in to_parse])
            for i, anns in zip(to_parse, parsed, strict=True):
                records[i]["annotations"] = anns
        return records

    def _pass_through(self, item: ParseItem) -> list[dict]:
        det = item.detections
        boxes = _as_tensor(det.boxes, (4,), f"image {item.image_id}: detection boxes")
        scores = torch.as_tensor(np.asarray(det.scores)).float().reshape(-1)
        if not len(boxes) == len(scores) == len(det.labels):
            raise ValueError(f"image {item.image_id}: detections have unequal lengths")
        anns = []
        for box, score, label in zip(boxes, scores, det.labels, strict=True):
            if label not in self.vocabulary:
                continue
            name = self.vocabulary[self.vocabulary.index(label)].name
            anns.append(self._annotation(item, name, box, float(score), source="detector"))
        return anns

    def _annotation(
        self, item: ParseItem, name: str, box: Tensor, score: float, *, source: str
    ) -> dict:
        xywh = _xywh(box)
        return {
            "image_id": int(item.image_id),
            "category_id": self.category_ids[name],
            "bbox": xywh,
            "area": round(xywh[2] * xywh[3], 3),
            "score": round(score, 6),
            "iscrowd": 0,
            "object": item.object,
            "source": source,
        }

    def _transfer(
        self, items: Sequence[ParseItem], images: Sequence[np.ndarray]
    ) -> list[list[dict]]:
        cfg, bank = self.config, self.bank
        size = cfg.image_size
        batch = prepare_images(images, size, self.extractor).to(self.extractor.device)
        with torch.inference_mode():
            feats = self.extractor(batch)
            cls = F.normalize(feats.cls.float(), dim=-1)
            nearest = (cls @ bank.cls.to(cls.device).T).argmax(dim=1).tolist()
            geometry = dict(stride=feats.stride, patch_size=feats.patch_size)
            results = []
            for b, (item, image) in enumerate(zip(items, images, strict=True)):
                if item.object_mask is not None:
                    if item.object_mask.shape != image.shape[:2]:
                        raise ValueError(
                            f"image {item.image_id}: object_mask {item.object_mask.shape} does "
                            f"not match the image {image.shape[:2]}"
                        )
                    foreground = prepare_masks(item.object_mask, size).to(cls.device)
                else:
                    saliency = cells_to_pixels(feats.saliency[b], size, **geometry)
                    foreground = saliency > cfg.saliency_thresh
                base = nearest[b]
                masks = transfer_masks(
                    feats.dense[b],
                    bank.dense[base].to(cls.device),
                    bank.foreground[base].to(cls.device),
                    bank.part_masks(base).to(cls.device),
                    novel_foreground=foreground,
                    chunk_size=cfg.chunk_size,
                    **geometry,
                )
                results.append(self._boxes(item, image.shape[:2], masks.cpu(), base))
        return results

    def _boxes(
        self, item: ParseItem, image_hw: tuple[int, int], masks: Tensor, base: int
    ) -> list[dict]:
        """Rename, merge, keep the largest component, box and snap the transferred masks."""
        entry = self.bank.entries[base]
        merged: dict[str, Tensor] = {}
        for name, mask in zip(entry.part_names, masks, strict=True):
            target = rename_part(name, item.object, self.vocabulary)
            if target is not None:
                merged[target] = merged[target] | mask if target in merged else mask
        names, boxes, components = [], [], []
        height, width = image_hw
        size = masks.shape[-1]
        scale = torch.tensor([width / size, height / size, width / size, height / size])
        for name, mask in merged.items():
            component = largest_component(mask.numpy())
            if not component.any():
                continue
            names.append(name)
            boxes.append(mask_box(component) * scale)
            components.append(component)
        if not names:
            return []
        boxes_t = torch.stack(boxes)
        scores = torch.ones(len(names))
        if item.proposals is not None:
            keep, boxes_t, scores = snap_to_proposals(
                boxes_t,
                _as_tensor(item.proposals.boxes, (4,), f"image {item.image_id}: proposal boxes"),
                torch.as_tensor(np.asarray(item.proposals.scores)).float().reshape(-1),
                iou_thresh=self.config.snap_iou_thresh,
            )
            kept = keep.tolist()
            names = [n for n, k in zip(names, kept, strict=True) if k]
            components = [c for c, k in zip(components, kept, strict=True) if k]
        anns = []
        for name, box, score, component in zip(names, boxes_t, scores, components, strict=True):
            ann = self._annotation(item, name, box, float(score), source="transfer")
            ann["base"] = entry.source or f"bank[{base}]"
            if self.config.include_masks:
                resized = F.interpolate(
                    torch.from_numpy(component)[None, None].float(),
                    size=(height, width),
                    mode="nearest-exact",
                )[0, 0].numpy()
                rle = mask_utils.encode(np.asfortranarray(resized > 0.5))
                ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            anns.append(ann)
        return anns

    def run(
        self,
        items: Iterable[ParseItem],
        out_path: str | Path,
        *,
        rank: int = 0,
        world_size: int = 1,
        progress: bool = True,
    ) -> Path:
        """Parse this rank's share of ``items`` into a COCO file, resuming earlier progress.

        Rank r takes items ``r, r + world_size, ...``. With ``world_size == 1`` the output is
        ``out_path``; otherwise :func:`shard_path` of it (join them with :func:`merge_shards`).

        Returns:
            The path written.

        Raises:
            ValueError: duplicate image ids, bad rank/world size, or a progress file left by a run
                with different settings.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        items = list(items)
        ids = [item.image_id for item in items]
        if len(set(ids)) != len(ids):
            raise ValueError("image ids must be unique")
        mine = items[rank::world_size]
        known = {c.object.lower() for c in self.vocabulary if c.is_part}
        unnamed = sorted(
            {i.object for i in mine if i.detections is None and i.object.lower() not in known}
        )
        if unnamed:
            logger.warning(
                "the vocabulary names no parts of %s; those images get no parsed parts",
                ", ".join(unnamed),
            )
        target = shard_path(out_path, rank, world_size) if world_size > 1 else Path(out_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        progress_file = target.with_name(target.name + PROGRESS_SUFFIX)
        fingerprint = self.fingerprint()
        done = _read_progress(progress_file, fingerprint)
        pending = [item for item in mine if item.image_id not in done]
        if done:
            logger.info(
                "%s: resuming, %d of %d images done",
                progress_file,
                len(mine) - len(pending),
                len(mine),
            )
        remove_orphans(target.parent)
        with (
            errors_name(progress_file),
            progress_file.open("a", encoding="utf-8") as log,
            tqdm(
                total=len(mine),
                initial=len(mine) - len(pending),
                desc=f"parse [{rank}/{world_size}]",
                unit="img",
                disable=not progress,
            ) as bar,
        ):
            if log.tell() == 0:
                log.write(json.dumps({"fingerprint": fingerprint}) + "\n")
            for start in range(0, len(pending), self.config.batch_size):
                batch = pending[start : start + self.config.batch_size]
                for record in self.parse_batch(batch):
                    done[record["image"]["id"]] = record
                    log.write(json.dumps(record) + "\n")
                log.flush()
                os.fsync(log.fileno())
                bar.update(len(batch))
        records = [done[item.image_id] for item in mine]
        info = {"description": "parts parsed by vlpart", **fingerprint}
        _write_coco(target, records, self.categories, info)
        return target


def _read_progress(path: Path, fingerprint: dict) -> dict[int, dict]:
    """Records of images already parsed (by image id); a torn last line is discarded."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").split("\n")
    good: list[str] = []
    records: dict[int, dict] = {}
    for line in lines:
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s: dropping a torn line (interrupted write)", path)
            break
        if not good:
            if obj.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{path}: progress of a run with other settings ({obj.get('fingerprint')}); "
                    "delete it to start over or write to another output path"
                )
        else:
            records[obj["image"]["id"]] = obj
        good.append(line)
    if len(good) != sum(1 for line in lines if line):
        write_text_atomic(path, "".join(line + "\n" for line in good))
    return records


def _write_coco(path: Path, records: Sequence[dict], categories: list[dict], info: dict) -> None:
    """Write records as a COCO file: images by id, annotation ids 1.. in image order."""
    records = sorted(records, key=lambda r: r["image"]["id"])
    annotations = []
    for record in records:
        for ann in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, **ann})
    coco = {
        "info": info,
        "images": [r["image"] for r in records],
        "categories": categories,
        "annotations": annotations,
    }
    write_text_atomic(path, json.dumps(coco))


def shard_path(out_path: str | Path, rank: int, world_size: int) -> Path:
    """``parts.json`` -> ``parts.shard003-of-008.json``."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}.shard{rank:03d}-of-{world_size:03d}{out.suffix}")


def merge_shards(out_path: str | Path, world_size: int) -> Path:
    """Join the shard files of a ``world_size``-rank run into ``out_path``.

    Raises:
        FileNotFoundError: a shard is missing (its rank has not finished).
        ValueError: shards of different runs (categories or settings differ).
    """
    paths = [shard_path(out_path, r, world_size) for r in range(world_size)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing parse shards (unfinished ranks?): {', '.join(missing)}")
    shards = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    first = shards[0]
    records = []
    for path, shard in zip(paths, shards, strict=True):
        if shard["categories"] != first["categories"] or shard["info"] != first["info"]:
            raise ValueError(f"{path}: shard of a different run than {paths[0]}")
        per_image: dict[int, list[dict]] = {img["id"]: [] for img in shard["images"]}
        for ann in sorted(shard["annotations"], key=lambda a: a["id"]):
            per_image[ann["image_id"]].append({k: v for k, v in ann.items() if k != "id"})
        records += [{"image": img, "annotations": per_image[img["id"]]} for img in shard["images"]]
    ids = [r["image"]["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"shards of {out_path} share image ids; were they made with one item list?"
        )
    out = Path(out_path)
    _write_coco(out, records, first["categories"], first["info"])
    return out


def _env_rank() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` as set by torchrun, ``(0, 1)`` without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def parse_images(
    items: Iterable[ParseItem],
    out_path: str | Path,
    *,
    bank: BaseBank | str | Path,
    vocabulary: Vocabulary | str,
    config: ParseConfig = ParseConfig(),
    extractor: FeatureExtractor | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> Path:
    """Entry point: parse images into a COCO file of parts (this rank's shard under torchrun).

    Args:
        items: the images to parse (every rank gets the same list).
        out_path: the COCO JSON to write (a shard of it when ``world_size > 1``).
        bank: a base bank or its path.
        vocabulary: target vocabulary or a spec for :func:`~vlpart.vocab.parse_vocabulary`.
        config: run settings; the extractor is built from them unless ``extractor`` is given.
        extractor: a ready feature extractor.
        rank, world_size: this process's shard; ``None`` reads torchrun's ``RANK`` and
            ``WORLD_SIZE`` (default 0 and 1).

    Returns:
        The file written; after all ranks finish, :func:`merge_shards` joins shards.
    """
    if rank is None or world_size is None:
        env_rank, env_world = _env_rank()
        rank = env_rank if rank is None else rank
        world_size = env_world if world_size is None else world_size
    if not isinstance(bank, BaseBank):
        bank = BaseBank.load(bank)
    if extractor is None:
        extractor = build_feature_extractor(
            config.backend, weights=config.weights, stride=config.stride, device=config.device
        )
    parser = Parser(extractor, bank, parse_vocabulary(vocabulary), config=config)
    return parser.run(items, out_path, rank=rank, world_size=world_size)
