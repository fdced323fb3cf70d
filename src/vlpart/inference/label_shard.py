"""One shard of a labelling job (:mod:`vlpart.inference.label`): the job's settings and the
labelling of one shard of images into one atomically written file; shared by the
single-process path and the Ray workers (:mod:`vlpart.inference.label_ray`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlpart.core.coco import instance_records
from vlpart.core.fileio import read_image, read_image_size, write_json_atomic
from vlpart.core.vocab import Vocabulary
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
    from vlpart.core.yolo import polygon_lines

    min_side = segmenter.backend.transform.min_size if segmenter.refiner is None else None
    seconds = dict.fromkeys(STAGES, 0.0)
    images, annotations, skipped, yolo = [], [], [], []
    for offset, source in enumerate(paths):
        path = Path(source)
        image_id = index * job.shard_size + offset + 1
        start = time.perf_counter()
        try:
            size = read_image_size(path)
            array = read_image(path, min_side=min_side)
        except (ValueError, OSError) as err:
            logger.warning("skipping %s", err)
            skipped.append([str(path), " ".join(str(err).split())])
            array = None
        decoded = time.perf_counter()
        seconds["decode"] += decoded - start
        if array is None:
            continue
        pred = segmenter.predict(
            array, vocabulary=job.vocabulary, score_threshold=job.min_score, image_sizes=[size]
        )
        predicted = time.perf_counter()
        seconds["model"] += predicted - decoded
        images.append(
            {
                "id": image_id,
                "file_name": os.path.relpath(path.resolve(), job.image_root),
                "height": size[0],
                "width": size[1],
            }
        )
        records = instance_records(
            image_id,
            pred.masks,
            pred.scores,
            pred.category_ids,
            pred.parent,
            first_id=len(annotations) + 1,
        )
        annotations.extend(records)
        if "yolo" in job.formats:
            kept = [i for i, m in enumerate(pred.masks) if m.any()]
            yolo.append(polygon_lines(pred.masks[kept], pred.label_ids[kept]))
        seconds["encode"] += time.perf_counter() - predicted
    shard = {"images": images, "annotations": annotations, "skipped": skipped, "yolo": yolo}
    start = time.perf_counter()
    write_json_atomic(shard, job.shard_file(index))
    seconds["write"] = time.perf_counter() - start
    return seconds
