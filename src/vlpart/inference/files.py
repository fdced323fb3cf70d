"""Batch inference over files for ``vlpart predict``: COCO results, overlays, instance masks.

Outputs in ``out_dir``:

* ``results.json``: COCO results (a list; ``pycocotools`` ``COCO.loadRes`` reads it) with RLE
  masks; every entry also carries ``label`` (the category name) and ``parent``;
* ``dataset.json``: the COCO ``images`` and ``categories`` the results refer to, so that
  ``COCO("dataset.json").loadRes("results.json")`` works;
* ``overlays/<name>.png``: masks, boxes and ``label score`` tags drawn on each image;
* ``masks/<name>/<k>_<label>.png``: one binary PNG per instance, with ``save_masks``.

Unreadable images are logged and skipped; the rest are still processed. The outputs are one set
(:class:`vlpart.core.fileio.OutputSet`): written under temporary names, flushed, and moved into
place only once every image is done, replacing the previous run's ``overlays/`` (and ``masks/``) as
a whole. A run that processed no image, a full disk or a crash leaves ``out_dir`` as it was.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vlpart.core.coco import category_records, write_coco
from vlpart.core.fileio import OutputSet, remove_orphans
from vlpart.core.vocab import Vocabulary
from vlpart.inference.pipeline import Decoded, predict_pipelined
from vlpart.inference.prediction import Prediction
from vlpart.inference.segmenter import PartSegmenter

__all__ = ["IMAGE_SUFFIXES", "PredictSummary", "expand_inputs", "predict_files"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class PredictSummary:
    """What a run did: images processed, failures ``(path, reason)``, instances written."""

    processed: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    num_instances: int = 0


def expand_inputs(
    inputs: Sequence[str], *, recursive: bool = False
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (their images, sorted; with ``recursive`` also those of every subfolder)
    and glob patterns (``**`` matches subfolders with ``recursive``) → image paths.

    Returns:
        The paths in order without duplicates, and ``(input, reason)`` for inputs that matched
        nothing.
    """
    paths: list[Path] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = p.rglob("*") if recursive else p.iterdir()
            found = sorted(f for f in files if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                missing.append((item, "folder holds no images"))
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(item):
            found = sorted(
                Path(f) for f in glob.glob(item, recursive=recursive) if Path(f).is_file()
            )
            if not found:
                missing.append((item, "pattern matched no files"))
            paths.extend(found)
        else:
            missing.append((item, "no such file or folder"))
    return list(dict.fromkeys(paths)), missing


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def predict_files(
    segmenter: PartSegmenter,
    paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    out_dir: str | Path,
    score_threshold: float | None = None,
    batch_size: int = 1,
    save_masks: bool = False,
    num_workers: int = 1,
    writers: int = 1,
) -> PredictSummary:
    """Run ``segmenter`` over ``paths`` and write the outputs described in the module docstring.

    Every image goes through :meth:`PartSegmenter.predict` (``score_threshold`` as there), in
    the pipeline of :mod:`vlpart.inference.pipeline`: ``num_workers`` DataLoader processes (one
    torch thread each; 0: decode in this process) decode the next images and ``writers``
    threads (0: this thread) encode the results and draw and write the pictures of the last
    ones while the model runs; the files are the same byte for byte whatever the two numbers
    are. JPEGs of more than
    :data:`vlpart.core.fileio.DRAFT_MIN_PIXELS` pixels are decoded at a reduced scale (results
    still in their full pixels, overlays at the decoded size).
    Overlay names are the image file stems, made unique with a numeric suffix when two inputs
    share a stem.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_orphans(out)
    with OutputSet() as outputs:
        summary = _predict_into(
            outputs,
            segmenter,
            paths,
            vocabulary=vocabulary,
            out=out,
            score_threshold=score_threshold,
            batch_size=batch_size,
            save_masks=save_masks,
            num_workers=num_workers,
            writers=writers,
        )
        if summary.processed:
            outputs.commit()
    return summary


def _predict_into(
    outputs: OutputSet,
    segmenter: PartSegmenter,
    paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    out: Path,
    score_threshold: float,
    batch_size: int,
    save_masks: bool,
    num_workers: int,
    writers: int,
) -> PredictSummary:
    outputs.folder(out / "overlays")
    if save_masks:
        outputs.folder(out / "masks")
    summary = PredictSummary()
    results: list[dict] = []
    images_info: list[dict] = []
    used_names: set[str] = set()

    def start(image: Decoded) -> Callable[[Prediction], tuple[dict, list[dict], int]]:
        name = _unique_name(image.path.stem, used_names, image.number)
        info = {
            "id": image.number,
            "file_name": str(image.path),
            "height": image.size[0],
            "width": image.size[1],
            "overlay": f"overlays/{name}.png",
        }

        def finish(pred: Prediction) -> tuple[dict, list[dict], int]:
            records = pred.to_coco(image.number)
            _write_pictures(outputs, out, name, image.array, pred, save_masks=save_masks)
            return info, records, len(pred)

        return finish

    done = predict_pipelined(
        segmenter,
        paths,
        vocabulary=vocabulary,
        start=start,
        score_threshold=score_threshold,
        batch_size=batch_size,
        num_workers=num_workers,
        writers=writers,
    )
    with tqdm(total=len(paths), desc="predict", unit="img", dynamic_ncols=True) as bar:
        for item in done:
            bar.update(1)
            if item.error is not None:
                logger.warning("skipping %s", item.error)
                summary.failed.append((str(item.path), item.error))
                continue
            info, records, count = item.value
            images_info.append(info)
            results.extend(records)
            summary.processed.append(item.path)
            summary.num_instances += count
    write_coco(
        out / "dataset.json",
        images=images_info,
        categories=category_records(vocabulary),
        annotations=[],
        outputs=outputs,
    )
    outputs.write_json(out / "results.json", results)
    return summary


def _unique_name(stem: str, used: set[str], image_id: int) -> str:
    """A file-safe name for ``stem`` not in ``used`` (suffixed with ``image_id`` until it is
    free); added to ``used``."""
    name = _safe_name(stem)
    while name in used:
        name = f"{name}_{image_id}"
    used.add(name)
    return name


def _write_pictures(
    outputs: OutputSet,
    out: Path,
    name: str,
    array: np.ndarray,
    pred: Prediction,
    *,
    save_masks: bool,
) -> None:
    """``overlays/<name>.png`` (``pred`` drawn on ``array``, ``np.ndarray[H, W, 3]`` uint8 RGB)
    and with ``save_masks`` one ``masks/<name>/<k>_<label>.png`` per instance."""
    overlay = pred.render(array)
    outputs.write(out / "overlays" / f"{name}.png", lambda tmp: overlay.save(tmp, "PNG"))
    if not save_masks:
        return
    for k, (mask, label) in enumerate(zip(pred.masks, pred.labels, strict=True)):
        picture = Image.fromarray(mask.astype(np.uint8) * 255)
        outputs.write(
            out / "masks" / name / f"{k:03d}_{_safe_name(label)}.png",
            lambda tmp, im=picture: im.save(tmp, "PNG"),
        )
