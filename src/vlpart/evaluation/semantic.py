"""Semantic part segmentation metrics of the OV-PARTS benchmark: mIoU over seen and unseen
classes and their harmonic mean h-IoU (``vlpart eval --semantic``).

The numbers follow OV-PARTS' evaluator (``GeneralizedSemSegEvaluator`` of OpenRobotLab/OV_PARTS,
built on detectron2's ``SemSegEvaluator``) rule for rule, its quirks included:

1. A label map holds one class per pixel: ``c`` in ``0..C-1`` is row ``c`` of the vocabulary and
   :data:`IGNORE_LABEL` (255) is *ignore*, in the ground truth (unlabelled pixels) as in the
   prediction (pixels a method leaves open). Any other value is an error.
2. Oracle-Obj: predicted pixels outside the ground-truth object mask become ignore.
3. One confusion matrix ``M[C + 1, C + 1]`` (rows: prediction, columns: ground truth; the last
   row and column: ignore) is summed over all images.
4. Only its ``C x C`` block counts: ``TP_c = M[c, c]``, ``GT_c = sum_p M[p, c]`` and
   ``Pred_c = sum_g M[c, g]`` over ``p, g < C``. So a ground-truth pixel predicted as ignore is
   no miss, and a prediction on an unlabelled pixel is no false positive.
5. ``IoU_c = TP_c / (GT_c + Pred_c - TP_c)``, defined where ``GT_c > 0``.
6. ``mIoU`` = the sum of the defined IoUs / the number of classes with ``GT_c + Pred_c > 0``: a
   class predicted but absent from the ground truth counts as 0; one absent from both does not
   count.
7. ``mIoU_seen`` and ``mIoU_unseen``: rule 6 over the seen (``split == "base"``) and the other
   (unseen) classes; ``hIoU = 2 * seen * unseen / (seen + unseen)``.
8. Values are percentages, as the benchmark prints them; a mean over no class is ``None``.

Because of rule 4 a method that leaves pixels open is not penalised for them; the reports add
``coverage``, the share of ground-truth part pixels that received a prediction (not an OV-PARTS
number), so that this stays visible.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import OutputSet, read_label_map
from vlpart.core.vocab import Vocabulary

__all__ = [
    "IGNORE_LABEL",
    "SemanticEvaluator",
    "SemanticScores",
    "confusion_matrix",
    "evaluate_label_maps",
    "label_map_files",
    "semantic_scores",
]

logger = logging.getLogger(__name__)

# The ignore value of the benchmark's PNGs (Pascal-Part-116; ADE20K-Part-234's 16-bit 65535 is
# rewritten to it by ``vlpart data convert-ov-parts``).
IGNORE_LABEL = 255

LabelSource = str | Path | Callable[[str], np.ndarray]


@cache
def _lookup(dtype: str, num_classes: int, ignore_label: int, scale: int) -> np.ndarray:
    """Label value -> ``scale * class index`` (ignore -> ``scale * C``, invalid -> -1) for every
    value of an 8- or 16-bit dtype; read-only."""
    size = np.iinfo(np.dtype(dtype)).max + 1
    table = np.full(size, -1, dtype=np.intp)
    table[: min(num_classes, size)] = np.arange(min(num_classes, size)) * scale
    if ignore_label < size:
        table[ignore_label] = num_classes * scale
    table.setflags(write=False)
    return table


def _class_index(labels: np.ndarray, num_classes: int, ignore_label: int, scale: int, name: str):
    """``scale * class`` per pixel with ignore as class ``C`` (rule 1), ``np.ndarray[H, W]``."""
    if labels.dtype.kind not in "ui":
        raise InputError(f"{name}: label map of dtype {labels.dtype}; expected integer labels")
    if labels.dtype.itemsize <= 2:
        index = _lookup(labels.dtype.str, num_classes, ignore_label, scale)[labels]
        bad = index < 0
    else:
        values = labels.astype(np.intp)
        ignored = values == ignore_label
        bad = ((values < 0) | (values >= num_classes)) & ~ignored
        index = np.where(ignored, num_classes, values) * scale
    if bad.any():
        found = np.unique(labels[bad])
        shown = ", ".join(str(v) for v in found[:5]) + (", ..." if len(found) > 5 else "")
        raise InputError(
            f"{name}: label values {shown} are outside the vocabulary (0..{num_classes - 1}, "
            f"{ignore_label} = ignore)"
        )
    return index


def confusion_matrix(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    *,
    object_mask: np.ndarray | None = None,
    ignore_label: int = IGNORE_LABEL,
    name: str = "prediction",
) -> np.ndarray:
    """The confusion matrix of one image (rules 1-3 of the module docstring).

    Args:
        gt (np.ndarray[H, W], integer): ground-truth labels.
        pred (np.ndarray[H, W], integer): predicted labels.
        num_classes: ``C``, the vocabulary size.
        object_mask (np.ndarray[H, W], bool): Oracle-Obj: predictions outside it become ignore.
        ignore_label: the ignore value of both maps.
        name: how errors name the prediction (its file).

    Returns:
        np.ndarray[C + 1, C + 1], int64: ``M[p, g]`` pixels predicted ``p`` with ground truth
        ``g``; index ``C`` is ignore.

    Raises:
        ValueError: maps of different sizes, or a value that is neither a class nor ignore.
    """
    if pred.shape != gt.shape or pred.ndim != 2:
        raise InputError(
            f"{name}: label map is {_size(pred)} but its ground truth is {_size(gt)}; "
            "predict at the ground truth's size"
        )
    if object_mask is not None and object_mask.shape != gt.shape:
        raise InputError(
            f"{name}: object mask is {_size(object_mask)} but the ground truth is {_size(gt)}"
        )
    n = num_classes + 1
    rows = _class_index(pred, num_classes, ignore_label, n, name)
    cols = _class_index(gt, num_classes, ignore_label, 1, f"ground truth of {name}")
    if object_mask is not None:
        rows = np.where(object_mask, rows, num_classes * n)
    return np.bincount((rows + cols).ravel(), minlength=n * n).reshape(n, n)


def _size(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}" if a.ndim == 2 else f"an array of shape {list(a.shape)}"


@dataclass(frozen=True)
class SemanticScores:
    """The OV-PARTS numbers of one evaluation, in percent.

    Attributes:
        vocabulary: the vocabulary name (``pascal_part_116``).
        setting: ``"Oracle-Obj"`` (predictions cut to the ground-truth objects) or
            ``"whole image"``.
        names (list[str]): the C class names, in label order.
        seen (np.ndarray[C], bool): seen classes (``split == "base"``).
        iou (np.ndarray[C], float64): per-class IoU, NaN where the class is not in the ground
            truth (rule 5).
        miou, miou_seen, miou_unseen, hiou: rules 6-7; ``None`` when undefined (no class to
            average, or no split in the vocabulary for the last three).
        coverage: share of ground-truth part pixels with a prediction (not an OV-PARTS number).
        num_images: images evaluated.
    """

    vocabulary: str
    setting: str
    names: list[str]
    seen: np.ndarray
    iou: np.ndarray
    miou: float | None
    miou_seen: float | None
    miou_unseen: float | None
    hiou: float | None
    coverage: float | None
    num_images: int

    def to_json(self) -> dict[str, Any]:
        """``metrics.json``: the means, ``IoU`` per class (``null`` where undefined) and the
        split of each class."""
        return {
            "protocol": "OV-PARTS semantic part segmentation",
            "vocabulary": self.vocabulary,
            "setting": self.setting,
            "unit": "percent",
            "num_images": self.num_images,
            "mIoU": self.miou,
            "mIoU_seen": self.miou_seen,
            "mIoU_unseen": self.miou_unseen,
            "hIoU": self.hiou,
            "coverage": self.coverage,
            "IoU": {n: _finite(v) for n, v in zip(self.names, self.iou, strict=True)},
            "seen": [n for n, s in zip(self.names, self.seen, strict=True) if s],
        }

    def to_markdown(self) -> str:
        """The OV-PARTS table (seen, unseen, harmonic) of this setting, then per-class IoU."""
        lines = [
            f"OV-PARTS semantic part segmentation, {self.vocabulary}, {self.num_images} images",
            "",
            "| setting | seen mIoU | unseen mIoU | h-IoU | mIoU (all) | coverage |",
            "|---|---:|---:|---:|---:|---:|",
            f"| {self.setting} | {_pct(self.miou_seen)} | {_pct(self.miou_unseen)} | "
            f"{_pct(self.hiou)} | {_pct(self.miou)} | {_pct(self.coverage)} |",
            "",
            "| class | split | IoU |",
            "|---|---|---:|",
        ]
        for name, seen, iou in zip(self.names, self.seen, self.iou, strict=True):
            split = "seen" if seen else "unseen"
            lines.append(f"| {name} | {split} | {_pct(_finite(iou))} |")
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``metrics.json`` and ``metrics.md`` into ``directory``, both or neither."""
        directory = Path(directory)
        json_path, md_path = directory / "metrics.json", directory / "metrics.md"
        text = json.dumps(self.to_json(), indent=2) + "\n"
        with OutputSet() as out:
            out.write(json_path, lambda tmp: tmp.write_text(text))
            out.write(md_path, lambda tmp: tmp.write_text(self.to_markdown()))
            out.commit()
        return json_path, md_path


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _mean(iou: np.ndarray, counted: np.ndarray, subset: np.ndarray) -> float | None:
    """Rule 6 over ``subset``: defined IoUs summed / classes in the ground truth or prediction."""
    num = int(np.count_nonzero(counted & subset))
    if num == 0:
        return None
    return float(np.nansum(iou[subset]) / num)


def semantic_scores(
    confusion: np.ndarray,
    vocabulary: Vocabulary,
    *,
    setting: str = "whole image",
    num_images: int = 0,
) -> SemanticScores:
    """The OV-PARTS numbers of a summed confusion matrix (rules 4-8 of the module docstring).

    Args:
        confusion (np.ndarray[C + 1, C + 1], integer): rows prediction, columns ground truth,
            index ``C`` = ignore (:func:`confusion_matrix`, summed over images).
        vocabulary: the C classes, their splits giving seen (``base``) and unseen (the rest).
    """
    num_classes = len(vocabulary)
    if confusion.shape != (num_classes + 1, num_classes + 1):
        raise InputError(
            f"confusion matrix of shape {list(confusion.shape)} for {num_classes} classes; "
            f"expected {[num_classes + 1] * 2}"
        )
    block = confusion[:-1, :-1].astype(np.float64)
    tp = np.diagonal(block)
    pos_gt, pos_pred = block.sum(axis=0), block.sum(axis=1)
    iou = np.full(num_classes, np.nan)
    defined = pos_gt > 0
    iou[defined] = tp[defined] / (pos_gt + pos_pred - tp)[defined]
    iou *= 100.0
    counted = (pos_gt + pos_pred) > 0
    everything = np.ones(num_classes, dtype=bool)
    seen = np.array([c.split == "base" for c in vocabulary], dtype=bool)
    has_split = any(c.split is not None for c in vocabulary)
    miou_seen = _mean(iou, counted, seen) if has_split else None
    miou_unseen = _mean(iou, counted, ~seen) if has_split else None
    hiou = None
    if miou_seen is not None and miou_unseen is not None and miou_seen + miou_unseen > 0:
        hiou = 2 * miou_seen * miou_unseen / (miou_seen + miou_unseen)
    gt_pixels = confusion[:, :-1].sum()
    return SemanticScores(
        vocabulary=vocabulary.name,
        setting=setting,
        names=vocabulary.names,
        seen=seen,
        iou=iou,
        miou=_mean(iou, counted, everything),
        miou_seen=miou_seen,
        miou_unseen=miou_unseen,
        hiou=hiou,
        coverage=100.0 * float(block.sum() / gt_pixels) if gt_pixels else None,
        num_images=num_images,
    )


class SemanticEvaluator:
    """Sums the confusion matrices of images; :meth:`scores` gives the OV-PARTS numbers.

    Example::

        ev = SemanticEvaluator(load_builtin("pascal_part_116"))
        for gt, pred, obj in maps:
            ev.add(gt, pred, object_mask=obj)
        print(ev.scores().to_markdown())
    """

    def __init__(self, vocabulary: Vocabulary, *, ignore_label: int = IGNORE_LABEL) -> None:
        self.vocabulary = vocabulary
        self.ignore_label = ignore_label
        n = len(vocabulary) + 1
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self.num_images = 0
        self._oracle: bool | None = None

    def add(
        self,
        gt: np.ndarray,
        pred: np.ndarray,
        *,
        object_mask: np.ndarray | None = None,
        name: str = "prediction",
    ) -> None:
        """Add one image (see :func:`confusion_matrix` for the arguments)."""
        oracle = object_mask is not None
        if self._oracle is not None and oracle != self._oracle:
            raise InputError(f"{name}: give an object mask for every image or for none")
        self.confusion += confusion_matrix(
            gt,
            pred,
            len(self.vocabulary),
            object_mask=object_mask,
            ignore_label=self.ignore_label,
            name=name,
        )
        self._oracle = oracle
        self.num_images += 1

    def scores(self) -> SemanticScores:
        setting = "Oracle-Obj" if self._oracle else "whole image"
        return semantic_scores(
            self.confusion, self.vocabulary, setting=setting, num_images=self.num_images
        )


def label_map_files(folder: str | Path) -> list[Path]:
    """The ``*.png`` label maps of a folder, sorted by name.

    Raises:
        FileNotFoundError: no such folder, or no PNG in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: folder not found")
    files = sorted(folder.glob("*.png"))
    if not files:
        raise MissingFileError(f"{folder}: no .png label maps")
    return files


def evaluate_label_maps(
    gt_dir: str | Path,
    predictions: LabelSource,
    vocabulary: Vocabulary,
    *,
    object_dir: str | Path | None = None,
    ignore_label: int = IGNORE_LABEL,
    progress: bool = True,
) -> SemanticScores:
    """The OV-PARTS numbers of a folder of ground-truth label PNGs.

    Args:
        gt_dir: ``<stem>.png`` ground-truth label maps (the datasets' own format:
            ``annotations_detectron2_part/val``).
        predictions: a folder of ``<stem>.png`` predicted label maps, or a function
            ``stem -> np.ndarray[H, W]`` that predicts them (a model,
            :func:`vlpart.evaluation.model_eval.semantic_predictor`).
        vocabulary: the classes; label ``c`` is row ``c``.
        object_dir: Oracle-Obj: ``<stem>.png`` object label maps (``annotations_detectron2_obj``);
            every value but ``ignore_label`` is an object pixel.

    Raises:
        FileNotFoundError: a folder, or a prediction or object mask of a ground-truth image, is
            missing.
        ValueError: see :func:`confusion_matrix`, and :func:`vlpart.core.fileio.read_label_map`.
    """
    evaluator = SemanticEvaluator(vocabulary, ignore_label=ignore_label)
    gt_files = label_map_files(gt_dir)
    if not callable(predictions) and Path(predictions).is_dir():
        extra = {p.name for p in Path(predictions).glob("*.png")} - {p.name for p in gt_files}
        if extra:
            logger.info(
                "%s: %d label maps without ground truth, not scored", predictions, len(extra)
            )
    for gt_path in tqdm(gt_files, desc="semantic eval", disable=None if progress else True):
        stem = gt_path.stem
        gt = read_label_map(gt_path)
        if callable(predictions):
            pred, name = predictions(stem), f"prediction of {gt_path}"
        else:
            pred_path = Path(predictions) / gt_path.name
            if not pred_path.is_file():
                raise MissingFileError(f"{pred_path}: no prediction for ground truth {gt_path}")
            pred, name = read_label_map(pred_path), str(pred_path)
        mask = None
        if object_dir is not None:
            obj_path = Path(object_dir) / gt_path.name
            if not obj_path.is_file():
                raise MissingFileError(f"{obj_path}: no object mask for ground truth {gt_path}")
            mask = read_label_map(obj_path) != ignore_label
        evaluator.add(gt, pred, object_mask=mask, name=name)
    return evaluator.scores()
