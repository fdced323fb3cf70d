"""Parse novel-object images into parts and write them as a COCO annotation file.

For each novel image (its object category known): the nearest base image by global-descriptor
cosine, a dense correspondence to it, the base part masks carried over and cut to the novel
foreground, each reduced to its largest connected component, boxed, snapped to the detector's
best-overlapping proposal (IoU > 0.3, else dropped) and renamed to the novel object.

Runs are batched, shardable (``rank``/``world_size`` of :meth:`Parser.run`;
:func:`vlpart.core.coco.merge_shards` joins the shards; :mod:`vlpart.parsing.run` drives whole
runs, under ``torchrun`` too) and resumable: every finished image is appended to
``OUT.progress.jsonl`` and skipped on the next run; the COCO file is written atomically at the
end.
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
from torch import Tensor
from tqdm import tqdm

from vlpart.core.coco import (
    BOX_DECIMALS,
    SCORE_DECIMALS,
    category_ids,
    category_records,
    encode_mask,
    rank_share,
    shard_path,
    write_records,
    xywh_box,
)
from vlpart.core.errors import InputError
from vlpart.core.fileio import errors_name, read_image, remove_orphans, write_text_atomic
from vlpart.core.vocab import Vocabulary
from vlpart.parsing.bank import BaseBank
from vlpart.parsing.features import (
    FeatureExtractor,
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

__all__ = ["ParseItem", "Parser", "Proposals"]

logger = logging.getLogger(__name__)

# Saliency (min-max normalised CLS attention) above which a pixel counts as the novel object when
# no object mask is given. Our choice; the paper does not state its foreground rule.
SALIENCY_THRESH = 0.3
PROGRESS_SUFFIX = ".progress.jsonl"


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
class ParseItem:
    """One image to parse.

    Attributes:
        image_id: unique integer id (the COCO image id).
        image: path of an RGB image, or ``np.ndarray[H, W, 3]`` uint8.
        object: the object category shown (``dog``).
        proposals: detector proposals for snapping; ``None`` keeps the transferred boxes.
        object_mask: ``np.ndarray[H, W]`` bool foreground; ``None`` uses the saliency.
    """

    image_id: int
    image: str | Path | np.ndarray
    object: str
    proposals: Proposals | None = None
    object_mask: np.ndarray | None = None


def _as_tensor(x: np.ndarray | Tensor, shape_tail: tuple[int, ...], what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).float()
    if t.ndim != 1 + len(shape_tail) or tuple(t.shape[1:]) != shape_tail:
        raise InputError(f"{what} must have shape [N, {', '.join(map(str, shape_tail))}]")
    return t.cpu()


class Parser:
    """Parses novel-object images against a base bank (no per-image state; see module docstring).

    Args:
        extractor: the feature extractor the bank was built with.
        bank: base images with part masks.
        vocabulary: target vocabulary; parts it cannot name are dropped.
        image_size: side S that images are resized to for features and transfer (the bank's).
        batch_size: images per feature-extraction batch in :meth:`run`.
        chunk_size: novel cells per similarity matrix product.
        saliency_thresh: foreground threshold on the saliency when no object mask is given.
        snap_iou_thresh: minimum IoU (exclusive) between a part box and its proposal.
        include_masks: also write the transferred masks as RLE ``segmentation``.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        bank: BaseBank,
        vocabulary: Vocabulary,
        *,
        image_size: int = 224,
        batch_size: int = 8,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        saliency_thresh: float = SALIENCY_THRESH,
        snap_iou_thresh: float = SNAP_IOU_THRESH,
        include_masks: bool = False,
    ) -> None:
        bank.check_compatible(extractor, image_size)
        self.extractor = extractor
        self.bank = bank
        self.vocabulary = vocabulary
        self.image_size = image_size
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.saliency_thresh = saliency_thresh
        self.snap_iou_thresh = snap_iou_thresh
        self.include_masks = include_masks
        self.category_ids = {
            c.name: i for c, i in zip(vocabulary, category_ids(vocabulary), strict=True)
        }

    @property
    def categories(self) -> list[dict]:
        """COCO ``categories`` of the target vocabulary."""
        return category_records(self.vocabulary)

    def fingerprint(self) -> dict:
        """Everything that changes the output; resumed runs must match it."""
        vocab = json.dumps(self.vocabulary.to_json(), sort_keys=True)
        bank = json.dumps([asdict(e) for e in self.bank.entries], sort_keys=True)
        return {
            "extractor": self.extractor.identity,
            "image_size": self.image_size,
            "saliency_thresh": self.saliency_thresh,
            "snap_iou_thresh": self.snap_iou_thresh,
            "include_masks": self.include_masks,
            "vocabulary": hashlib.sha256(vocab.encode()).hexdigest()[:16],
            "bank": hashlib.sha256(bank.encode()).hexdigest()[:16],
        }

    def parse_batch(self, items: Sequence[ParseItem]) -> list[dict]:
        """Parse a batch of images.

        Returns:
            One record per item: ``{"image": COCO image dict, "annotations": [COCO annotation
            dicts without "id"]}``.
        """
        images = [read_image(item.image) for item in items]
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
        if items:
            for record, anns in zip(records, self._transfer(items, images), strict=True):
                record["annotations"] = anns
        return records

    def _annotation(
        self, item: ParseItem, name: str, box: Tensor, score: float, *, source: str
    ) -> dict:
        xywh = xywh_box(box.tolist())
        return {
            "image_id": int(item.image_id),
            "category_id": self.category_ids[name],
            "bbox": xywh,
            "area": round(xywh[2] * xywh[3], BOX_DECIMALS),
            "score": round(score, SCORE_DECIMALS),
            "iscrowd": 0,
            "object": item.object,
            "source": source,
        }

    def _transfer(
        self, items: Sequence[ParseItem], images: Sequence[np.ndarray]
    ) -> list[list[dict]]:
        bank = self.bank
        size = self.image_size
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
                        raise InputError(
                            f"image {item.image_id}: object_mask {item.object_mask.shape} does "
                            f"not match the image {image.shape[:2]}"
                        )
                    foreground = prepare_masks(item.object_mask, size).to(cls.device)
                else:
                    saliency = cells_to_pixels(feats.saliency[b], size, **geometry)
                    foreground = saliency > self.saliency_thresh
                base = nearest[b]
                masks = transfer_masks(
                    feats.dense[b],
                    bank.dense[base].to(cls.device),
                    bank.foreground[base].to(cls.device),
                    bank.part_masks(base).to(cls.device),
                    novel_foreground=foreground,
                    chunk_size=self.chunk_size,
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
                iou_thresh=self.snap_iou_thresh,
            )
            kept = keep.tolist()
            names = [n for n, k in zip(names, kept, strict=True) if k]
            components = [c for c, k in zip(components, kept, strict=True) if k]
        anns = []
        for name, box, score, component in zip(names, boxes_t, scores, components, strict=True):
            ann = self._annotation(item, name, box, float(score), source="transfer")
            ann["base"] = entry.source or f"bank[{base}]"
            if self.include_masks:
                resized = F.interpolate(
                    torch.from_numpy(component)[None, None].float(),
                    size=(height, width),
                    mode="nearest-exact",
                )[0, 0].numpy()
                ann["segmentation"] = encode_mask(resized > 0.5)
            anns.append(ann)
        return anns

    def finished(self, out_path: str | Path) -> set[int]:
        """Image ids a run of these settings into ``out_path`` (the file :meth:`run` writes) has
        already parsed; what a resumed run skips.

        Raises:
            ValueError: the progress file was left by a run with different settings.
        """
        progress_file = Path(out_path).with_name(Path(out_path).name + PROGRESS_SUFFIX)
        return set(_read_progress(progress_file, self.fingerprint()))

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
        ``out_path``; otherwise :func:`vlpart.core.coco.shard_path` of it (join them with
        :func:`vlpart.core.coco.merge_shards`).

        Returns:
            The path written.

        Raises:
            ValueError: duplicate image ids, bad rank/world size, or a progress file left by a run
                with different settings.
        """
        items = list(items)
        ids = [item.image_id for item in items]
        if len(set(ids)) != len(ids):
            raise InputError("image ids must be unique")
        mine = rank_share(items, rank, world_size)
        known = {c.object.lower() for c in self.vocabulary if c.is_part}
        unnamed = sorted({i.object for i in mine if i.object.lower() not in known})
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
            for start in range(0, len(pending), self.batch_size):
                batch = pending[start : start + self.batch_size]
                for record in self.parse_batch(batch):
                    done[record["image"]["id"]] = record
                    log.write(json.dumps(record) + "\n")
                log.flush()
                os.fsync(log.fileno())
                bar.update(len(batch))
        records = [done[item.image_id] for item in mine]
        info = {"description": "parts parsed by vlpart", **fingerprint}
        write_records(
            target,
            [r["image"] for r in records],
            {r["image"]["id"]: r["annotations"] for r in records},
            self.categories,
            info,
        )
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
                raise InputError(
                    f"{path}: progress of a run with other settings ({obj.get('fingerprint')}); "
                    "delete it to start over or write to another output path"
                )
        else:
            records[obj["image"]["id"]] = obj
        good.append(line)
    if len(good) != sum(1 for line in lines if line):
        write_text_atomic(path, "".join(line + "\n" for line in good))
    return records
