"""One shard of a labelling job (:mod:`vlpart.inference.label`): the job's settings and the
labelling of one shard of images into one atomically written file; shared by the
single-process path and the Ray workers (:mod:`vlpart.inference.label_ray`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from vlpart.core.coco import instance_records
from vlpart.core.fileio import write_json_atomic
from vlpart.core.vocab import Vocabulary
from vlpart.inference.pipeline import Decoded, predict_pipelined
from vlpart.inference.prediction import Prediction
from vlpart.inference.segmenter import PartSegmenter, SegmenterSpec

__all__ = ["SHARDS", "STAGES", "LabelJob", "label_shard", "shard_paths"]

logger = logging.getLogger(__name__)

SHARDS = "shards"
# Where a shard's time goes: reading and decoding the images, the segmenter, turning its masks
# into RLE records (and YOLO polygons), writing the shard file.
STAGES = ("decode", "model", "encode", "write")


@dataclass(frozen=True)
class LabelJob:
    """What every worker of one labelling run needs (picklable, sent to Ray actors).

    Attributes:
        spec: how the segmenter is built.
        vocabulary: what is labelled.
        min_score: instances scoring below this are not written.
        formats: output layouts (:data:`FORMATS`).
        shard_size: images per shard.
        image_root: folder the COCO ``file_name`` entries are relative to.
        out: the output folder.
    """

    spec: SegmenterSpec
    vocabulary: Vocabulary
    min_score: float
    formats: tuple[str, ...]
    shard_size: int
    image_root: Path
    out: Path

    def shard_file(self, index: int) -> Path:
        return self.out / SHARDS / f"{index:08d}.json"


def shard_paths(job: LabelJob, paths: Sequence[Path], index: int) -> list[Path]:
    """The inputs of shard ``index``."""
    return list(paths[index * job.shard_size : (index + 1) * job.shard_size])


def label_shard(
    segmenter: PartSegmenter, job: LabelJob, index: int, paths: Sequence[str | Path]
) -> dict[str, float]:
    """Label shard ``index`` (inputs ``paths``) and commit it as one file, atomically.

    The file holds the shard's COCO ``images`` and ``annotations`` (ids 1.. within the shard;
    the merge offsets them), the unreadable inputs and, for YOLO, each image's label lines.

    Returns:
        The seconds the shard spent in each of :data:`STAGES`.
    """

    def start(image: Decoded) -> Callable[[Prediction], tuple]:
        return partial(_records, job, index * job.shard_size + image.index + 1, image)

    seconds = dict.fromkeys(STAGES, 0.0)
    images, annotations, skipped, yolo = [], [], [], []
    for item in predict_pipelined(
        segmenter,
        [Path(p) for p in paths],
        vocabulary=job.vocabulary,
        start=start,
        score_threshold=job.min_score,
        num_workers=0,
        seconds=seconds,
    ):
        if item.error is not None:
            logger.warning("skipping %s", item.error)
            skipped.append([str(item.path), " ".join(item.error.split())])
            continue
        image, records, lines, encoding = item.value
        seconds["encode"] += encoding
        images.append(image)
        for rec in records:  # ids 1.. within the image: shift them after the shard's so far
            rec["id"] += len(annotations)
            if rec["parent_id"] is not None:
                rec["parent_id"] += len(annotations)
        annotations.extend(records)
        if lines is not None:
            yolo.append(lines)
    shard = {"images": images, "annotations": annotations, "skipped": skipped, "yolo": yolo}
    start_write = time.perf_counter()
    write_json_atomic(shard, job.shard_file(index))
    seconds["write"] = time.perf_counter() - start_write
    return seconds


def _records(
    job: LabelJob, image_id: int, image: Decoded, pred: Prediction
) -> tuple[dict, list[dict], list[str] | None, float]:
    """One image's COCO ``images`` entry, its annotations (ids 1.., empty masks left out),
    for YOLO its label lines (None without), and the seconds this took."""
    from vlpart.core.yolo import polygon_lines

    start = time.perf_counter()
    info = {
        "id": image_id,
        "file_name": os.path.relpath(image.path.resolve(), job.image_root),
        "height": image.size[0],
        "width": image.size[1],
    }
    records = instance_records(
        image_id, pred.masks, pred.scores, pred.category_ids, pred.parent, first_id=1
    )
    lines = None
    if "yolo" in job.formats:
        kept = [i for i, m in enumerate(pred.masks) if m.any()]
        lines = polygon_lines(pred.masks[kept], pred.label_ids[kept])
    return info, records, lines, time.perf_counter() - start
