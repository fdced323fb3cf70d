"""Auto-labelling an image collection into a training set (``vlpart label``, :func:`label`).

The output folder ``DIR``:

* ``annotations.json``: COCO *instances* (``images`` with ``file_name`` relative to
  ``info.image_root``; ``categories`` with ``supercategory`` = the object for parts;
  ``annotations`` with RLE ``segmentation``, ``bbox``, ``area``, ``iscrowd: 0``, ``score`` and
  ``parent_id``, the id of the object annotation a part lies in, or null);
* with ``yolo`` in ``formats``: ``images/`` (hard links to, or copies of, the inputs),
  ``labels/*.txt`` and ``data.yaml`` (:mod:`vlpart.core.yolo`);
* ``skipped.txt``: ``path<TAB>reason`` of each unreadable input;
* ``label.json`` (the manifest: model identity, vocabulary, settings, a hash of the input list),
  ``inputs.txt`` (the input list) and ``shards/`` (the finished shards).

The inputs are cut into shards of ``shard_size`` images in input order (shard ``k`` holds
images ``k*S+1 .. (k+1)*S`` by id). Each finished shard is one file written atomically, so a
run stopped in any way (Ctrl-C, ``kill -9``, a lost machine) keeps all it finished, and the next
run over the same ``DIR`` does only the missing shards. Image and annotation ids depend only on
the input list, so the final files equal those of an uninterrupted run. Memory holds one shard's
annotations per process; the merge reads the shards one at a time. A ``DIR`` made with another
model, vocabulary, settings or input list is refused.

With ``ray_address`` the shards run on Ray Data (:mod:`vlpart.inference.label_ray`); this module
is the single-process path and everything both share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlpart.core.coco import category_records, read_json, write_coco_stream
from vlpart.core.errors import InputError, RunError
from vlpart.core.fileio import (
    OutputSet,
    remove_orphans,
    write_json_atomic,
    write_text_atomic,
)
from vlpart.core.vocab import Vocabulary, parse_vocabulary
from vlpart.core.weights import is_name
from vlpart.inference.label_shard import SHARDS, STAGES, LabelJob, label_shard, shard_paths
from vlpart.inference.segmenter import SCORE_THRESH, SegmenterSpec

__all__ = ["FORMATS", "SHARD_SIZE", "LabelJob", "LabelSummary", "label", "label_shard"]

logger = logging.getLogger(__name__)

FORMATS = ("coco", "yolo")
# Images per shard: what a kill loses at most per worker, and the unit of work Ray schedules.
SHARD_SIZE = 64
MANIFEST_VERSION = 1
MANIFEST, INPUTS = "label.json", "inputs.txt"
ANNOTATIONS, SKIPPED = "annotations.json", "skipped.txt"


@dataclass
class LabelSummary:
    """What a run did: images labelled and skipped (all shards), shards done by this run,
    annotations written; for each shard this run did, its seconds in each of :data:`STAGES`
    (``decode``, ``model``, ``encode``, ``write``), and the seconds of the final merge."""

    num_images: int = 0
    num_skipped: int = 0
    num_annotations: int = 0
    shards_done: int = 0
    shards_total: int = 0
    shard_seconds: list[dict[str, float]] = field(default_factory=list)
    merge_seconds: float = 0.0

    def stage_seconds(self) -> dict[str, float]:
        """Seconds in each of :data:`STAGES`, summed over this run's shards (over all its
        processes), and ``merge``."""
        total = {stage: sum(s[stage] for s in self.shard_seconds) for stage in STAGES}
        return {**total, "merge": self.merge_seconds}


def label(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    weights: str | Path | SegmenterSpec,
    vocabulary: str | Vocabulary,
    min_score: float = SCORE_THRESH,
    formats: Sequence[str] = ("coco",),
    shard_size: int = SHARD_SIZE,
    recursive: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> LabelSummary:
    """Label images, folders or glob patterns into the training set described in the module
    docstring, resuming whatever an earlier run over ``out`` finished.

    Args:
        inputs: image files, folders (their images, sorted) and patterns.
        out: the output folder.
        weights: a model name, a checkpoint file, or a full :class:`SegmenterSpec`.
        vocabulary: what to label (``"dog:head,torso"``, ``"pascal_part"``, ...).
        min_score: keep instances scoring at least this.
        formats: ``"coco"`` (always written) and/or ``"yolo"``.
        shard_size: images per shard (part of the run's identity).
        recursive: also take the images of the folders' subfolders.
        ray_address: None runs in this process; ``"local"`` starts Ray on this machine; else
            the address of a running Ray cluster (``"10.0.0.1:6379"``, ``"auto"``).
        workers: with Ray, the number of segmenter actors (default 2).
        threads: torch threads per process (per actor with Ray; default 1 there).

    Raises:
        InputError: no images, a bad option, or ``out`` holds a run with other settings.
        RunError: shards still missing after a Ray run (their workers failed twice).
    """
    from vlpart.inference.files import expand_inputs

    formats = _check_formats(formats)
    if shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}")
    if workers is not None and (ray_address is None or workers < 1):
        raise InputError(f"workers={workers}: needs Ray (--ray) and must be at least 1")
    paths, missing = expand_inputs([str(p) for p in inputs], recursive=recursive)
    for item, reason in missing:
        logger.warning("%s: %s", item, reason)
    if not paths:
        raise InputError("no input images found")
    spec = weights if isinstance(weights, SegmenterSpec) else SegmenterSpec(weights)
    vocab = parse_vocabulary(vocabulary)
    job = LabelJob(
        spec=spec,
        vocabulary=vocab,
        min_score=float(min_score),
        formats=formats,
        shard_size=int(shard_size),
        image_root=Path(os.path.commonpath([p.resolve().parent for p in paths])),
        out=Path(out),
    )
    _claim(job, paths)
    num_shards = -(-len(paths) // job.shard_size)
    pending = [k for k in range(num_shards) if not job.shard_file(k).is_file()]
    logger.info("%s: %d of %d shards to do", job.out, len(pending), num_shards)
    if pending and ray_address is not None:
        from vlpart.inference.label_ray import run_on_ray

        seconds = run_on_ray(
            job, paths, pending, address=ray_address, workers=workers or 2, threads=threads
        )
    elif pending:
        seconds = _run_here(job, paths, pending, threads=threads)
    else:
        seconds = []
    left = [k for k in pending if not job.shard_file(k).is_file()]
    if left:
        raise RunError(
            f"{job.out}: {len(left)} shards failed (first: {left[0]}); run again to retry them"
        )
    start = time.perf_counter()
    summary = merge(job, num_shards)
    summary.merge_seconds = time.perf_counter() - start
    summary.shards_done, summary.shard_seconds = len(pending), seconds
    return summary


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in formats or f == "coco")


def _claim(job: LabelJob, paths: Sequence[Path]) -> None:
    """Write the manifest and input list of a new run, or check that ``job.out`` holds this
    same run (else refuse: a resume must never mix two runs)."""
    listing = "".join(f"{p}\n" for p in paths)
    manifest = {
        "version": MANIFEST_VERSION,
        "model": _model_identity(job.spec),
        "vocabulary": [c.name for c in job.vocabulary],
        "settings": {
            "min_score": job.min_score,
            "formats": list(job.formats),
            "shard_size": job.shard_size,
            "image_root": str(job.image_root),
        },
        "inputs": {"count": len(paths), "sha256": hashlib.sha256(listing.encode()).hexdigest()},
    }
    path = job.out / MANIFEST
    if path.is_file():
        found = read_json(path, what="label manifest")
        differ = [key for key in manifest if found.get(key) != manifest[key]]
        if differ:
            raise InputError(
                f"{job.out}: holds a labelling run with another {', '.join(differ)}; choose a "
                f"new --out, or delete {job.out} to start over"
            )
        remove_orphans(job.out)  # what a killed merge staged
        remove_orphans(job.out / SHARDS)
        return
    if job.out.exists() and any(job.out.iterdir()):
        raise InputError(f"{job.out}: not empty and not a labelling run; choose a new --out")
    (job.out / SHARDS).mkdir(parents=True, exist_ok=True)
    write_text_atomic(job.out / INPUTS, listing)
    write_json_atomic(manifest, path)


def _model_identity(spec: SegmenterSpec) -> dict[str, Any]:
    """What decides the labels apart from the vocabulary and settings: the weights (a name,
    or the file's SHA-256), the text options and the precision. Not the device: a run may
    resume on another machine."""
    weights = str(spec.weights) if is_name(spec.weights) else _sha256(Path(spec.weights))
    text = {k: str(v) for k, v in dataclasses.asdict(spec.text).items() if v is not None}
    if spec.text.embeddings:
        text["embeddings"] = _sha256(Path(spec.text.embeddings))
    text.pop("cache_dir", None)
    refiner = None if spec.refiner is None else repr(spec.refiner)
    return {"weights": weights, "text": text, "precision": spec.precision, "refiner": refiner}


def _sha256(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_here(
    job: LabelJob, paths: Sequence[Path], pending: Sequence[int], *, threads: int | None
) -> list[dict[str, float]]:
    """Do the ``pending`` shards in this process; returns each shard's seconds by stage."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    segmenter = job.spec.build()
    seconds = []
    with tqdm(total=len(pending), desc="label", unit="shard", dynamic_ncols=True) as bar:
        for k in pending:
            seconds.append(label_shard(segmenter, job, k, shard_paths(job, paths, k)))
            bar.update(1)
    return seconds


def merge(job: LabelJob, num_shards: int) -> LabelSummary:
    """Write the final files from the shards, reading one shard at a time: annotation ids
    run 1.. over the shards in order (``parent_id`` follows). The files are one
    :class:`OutputSet`: all replaced together or, on any failure, none."""
    summary = LabelSummary(shards_total=num_shards)

    def shards() -> Iterator[dict]:
        for k in range(num_shards):
            yield read_json(job.shard_file(k), what="label shard")

    def images() -> Iterator[dict]:
        for shard in shards():
            summary.num_images += len(shard["images"])
            yield from shard["images"]

    def annotations() -> Iterator[dict]:
        offset = 0
        for shard in shards():
            for ann in shard["annotations"]:
                parent = ann["parent_id"]
                yield {
                    **ann,
                    "id": ann["id"] + offset,
                    "parent_id": None if parent is None else parent + offset,
                }
            offset += len(shard["annotations"])
        summary.num_annotations = offset

    info = {
        "description": "vlpart label",
        "image_root": str(job.image_root),
        "vocabulary": [c.name for c in job.vocabulary],
        "min_score": job.min_score,
    }
    with OutputSet() as outputs:
        outputs.write(
            job.out / ANNOTATIONS,
            lambda tmp: write_coco_stream(
                tmp,
                images=images(),
                categories=category_records(job.vocabulary),
                annotations=annotations(),
                info=info,
            ),
        )
        outputs.write(job.out / SKIPPED, lambda tmp: _write_skipped(tmp, shards(), summary))
        if "yolo" in job.formats:
            _stage_yolo(outputs, job, shards())
        outputs.commit()
    return summary


def _write_skipped(path: Path, shards: Iterator[dict], summary: LabelSummary) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for shard in shards:
            for source, reason in shard["skipped"]:
                f.write(f"{source}\t{reason}\n")
                summary.num_skipped += 1


def _stage_yolo(outputs: OutputSet, job: LabelJob, shards: Iterator[dict]) -> None:
    """Stage ``images/``, ``labels/`` and ``data.yaml`` (:mod:`vlpart.core.yolo`)."""
    from vlpart.core.yolo import data_yaml, label_name

    outputs.folder(job.out / "images")
    outputs.folder(job.out / "labels")
    for shard in shards:
        for image, lines in zip(shard["images"], shard["yolo"], strict=True):
            source = job.image_root / image["file_name"]
            name = label_name(image["id"], source)
            target = job.out / "images" / f"{name}{source.suffix.lower()}"
            outputs.write(target, lambda tmp, src=source: _link_or_copy(src, tmp))
            text = "".join(f"{line}\n" for line in lines)
            outputs.write(
                job.out / "labels" / f"{name}.txt",
                lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"),
            )
    yaml_text = data_yaml([c.name for c in job.vocabulary])
    outputs.write(job.out / "data.yaml", lambda tmp: tmp.write_text(yaml_text, encoding="utf-8"))


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link to ``source`` at ``target`` (no copy of the pixels), or a copy where the
    two are on different file systems."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
