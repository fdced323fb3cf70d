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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from vlpart.core.coco import category_records, write_coco
from vlpart.core.distributed import one_torch_thread
from vlpart.core.fileio import OutputSet, read_image, read_image_size, remove_orphans
from vlpart.core.vocab import Vocabulary
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


class _ImageFiles(torch.utils.data.Dataset):
    """Decoded images for the DataLoader: ``(index, np.ndarray[h, w, 3] uint8 | None, full
    (H, W) | None, error | None)``; huge JPEGs are decoded at a reduced scale whose short side
    stays at least ``min_side`` (see :func:`vlpart.core.fileio.read_image`)."""

    def __init__(self, paths: Sequence[Path], min_side: int | None) -> None:
        self.paths = list(paths)
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        path = self.paths[index]
        try:
            size = read_image_size(path)
            return index, read_image(path, min_side=self.min_side), size, None
        except (ValueError, FileNotFoundError) as err:
            return index, None, None, str(err)


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
) -> PredictSummary:
    """Run ``segmenter`` over ``paths`` and write the outputs described in the module docstring.

    Every image goes through :meth:`PartSegmenter.predict` (``score_threshold`` as there).
    ``num_workers`` DataLoader processes (one torch thread each; 0: decode in this process)
    decode the next images while the model runs. JPEGs of more than
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
) -> PredictSummary:
    outputs.folder(out / "overlays")
    if save_masks:
        outputs.folder(out / "masks")
    summary = PredictSummary()
    results: list[dict] = []
    images_info: list[dict] = []
    used_names: set[str] = set()
    transform = segmenter.backend.transform
    # Huge JPEGs may be decoded at a reduced scale, except for a refiner, which needs every pixel.
    reduce = segmenter.refiner is None
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, transform.min_size if reduce else None),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        worker_init_fn=one_torch_thread,
    )
    with tqdm(total=len(paths), desc="predict", unit="img", dynamic_ncols=True) as bar:
        for items in loader:
            chunk, arrays, sizes = [], [], []
            for index, array, size, error in items:
                if error is not None:
                    logger.warning("skipping %s", error)
                    summary.failed.append((str(paths[index]), error))
                    bar.update(1)
                    continue
                chunk.append(paths[index])
                arrays.append(array)
                sizes.append(size)
            if not chunk:
                continue
            preds = segmenter.predict(
                arrays, vocabulary=vocabulary, score_threshold=score_threshold, image_sizes=sizes
            )
            for path, array, size, pred in zip(chunk, arrays, sizes, preds, strict=True):
                image_id = len(images_info) + 1
                name = _unique_name(path.stem, used_names, image_id)
                images_info.append(
                    {
                        "id": image_id,
                        "file_name": str(path),
                        "height": size[0],
                        "width": size[1],
                        "overlay": f"overlays/{name}.png",
                    }
                )
                results.extend(pred.to_coco(image_id))
                _write_pictures(outputs, out, name, array, pred, save_masks=save_masks)
                summary.processed.append(path)
                summary.num_instances += len(pred)
                bar.update(1)
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
