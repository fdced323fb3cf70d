"""Run a segmenter over a COCO-format dataset and evaluate it (``vlpart eval --weights``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from vlpart.core.coco import category_vocabulary, load_coco
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import OutputSet, read_image, read_label_map
from vlpart.core.vocab import Vocabulary
from vlpart.evaluation.coco_eval import evaluate_results
from vlpart.evaluation.proposals import PROPOSAL_KS, proposal_recall
from vlpart.evaluation.report import EvalReport
from vlpart.evaluation.semantic import IGNORE_LABEL, SemanticScores, evaluate_label_maps
from vlpart.inference.segmenter import SCORE_THRESH, PartSegmenter
from vlpart.model import VLPartDetector

__all__ = [
    "dataset_proposal_recall",
    "dataset_vocabulary",
    "evaluate_model",
    "evaluate_semantic_model",
    "predict_dataset",
    "semantic_predictor",
]

# Photo extensions looked for, in this order, beside a ground-truth label map's stem.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def dataset_vocabulary(ann_file: str | Path) -> Vocabulary:
    """The categories of a COCO-format file, in id order, as the vocabulary a model is
    evaluated with (named after the file)."""
    return category_vocabulary(load_coco(Path(ann_file))["categories"], name=Path(ann_file).stem)


def predict_dataset(
    segmenter: PartSegmenter,
    ann_file: str | Path,
    image_root: str | Path,
    *,
    batch_size: int = 1,
    progress: bool = True,
) -> list[dict]:
    """Detect in every image of a COCO-format file, with the file's categories (in id order)
    as the vocabulary, through :meth:`PartSegmenter.predict` keeping every detection the model
    returns (``score_threshold=0``).

    Args:
        segmenter: the model and the text encoder of the categories' prompts.
        ann_file: COCO-format JSON.
        image_root: the folder ``file_name`` is relative to.

    Returns:
        COCO results (RLE masks) with the file's image and category ids.
    """
    vocab = dataset_vocabulary(ann_file)
    images = load_coco(Path(ann_file))["images"]
    results: list[dict] = []
    for start in tqdm(
        range(0, len(images), batch_size),
        desc="eval",
        unit="batch",
        disable=not progress,
        dynamic_ncols=True,
    ):
        infos = images[start : start + batch_size]
        batch = [read_image(Path(image_root) / info["file_name"]) for info in infos]
        preds = segmenter.predict(batch, vocabulary=vocab, score_threshold=0.0)
        for info, pred in zip(infos, preds, strict=True):
            results += pred.to_coco(int(info["id"]))
    return results


def evaluate_model(
    segmenter: PartSegmenter,
    ann_file: str | Path,
    image_root: str | Path,
    *,
    split: str | Path | Mapping[str, Sequence[str]] | None = None,
    objects: Sequence[str] = (),
    lvis_style: bool = False,
    batch_size: int = 1,
    progress: bool = True,
) -> EvalReport:
    """:func:`predict_dataset` then :func:`~vlpart.evaluation.coco_eval.evaluate_results` (box and
    mask AP, base/novel means when the categories have a split)."""
    results = predict_dataset(
        segmenter, ann_file, image_root, batch_size=batch_size, progress=progress
    )
    return evaluate_results(ann_file, results, split=split, objects=objects, lvis_style=lvis_style)


def dataset_proposal_recall(
    model: VLPartDetector,
    ann_file: str | Path,
    image_root: str | Path,
    *,
    ks: Sequence[int] = PROPOSAL_KS,
    progress: bool = True,
) -> dict[int, float]:
    """Class-agnostic proposal recall AR@k of ``model``'s RPN on a COCO-format file (``vlpart
    eval --proposals``): :meth:`VLPartDetector.propose` on every image, then
    :func:`~vlpart.evaluation.coco_eval.proposal_recall`."""
    data = load_coco(Path(ann_file))
    model.eval()
    device = next(model.parameters()).device
    proposals = {}
    for info in tqdm(data["images"], desc="proposals", unit="img", disable=not progress):
        pixels = read_image(Path(image_root) / info["file_name"])
        tensor = torch.from_numpy(pixels).permute(2, 0, 1).to(device)
        with torch.inference_mode():
            proposals[info["id"]] = model.propose([tensor])[0]["boxes"].cpu()
    return proposal_recall(data, proposals, ks=ks)


def semantic_predictor(
    segmenter: PartSegmenter,
    image_root: str | Path,
    vocabulary: Vocabulary,
    *,
    score_thresh: float = SCORE_THRESH,
    object_dir: str | Path | None = None,
    object_names: Sequence[str] | None = None,
    ignore_label: int = IGNORE_LABEL,
) -> Callable[[str], np.ndarray]:
    """``stem -> np.ndarray[H, W]``: the label map of image ``image_root/<stem>.jpg`` (or
    another of :data:`IMAGE_SUFFIXES`), :meth:`PartSegmenter.predict` with ``vocabulary`` and
    ``score_thresh``, then :meth:`~vlpart.inference.prediction.Prediction.semantic_map`.

    Oracle-Obj (``object_dir`` and ``object_names``): the ground-truth objects are given, as
    OV-PARTS gives them to its models. Inside the pixels of object ``k`` of
    ``object_dir/<stem>.png`` only the parts of object ``object_names[k]`` compete; pixels of
    no object get ``ignore_label``.

    Raises (when called):
        FileNotFoundError: no image, or no object map, of that stem.
        ValueError: an object map of another size than the image, or an object index beyond
            ``object_names``.
    """
    root = Path(image_root)
    part_object = [c.object.lower() for c in vocabulary]

    def predict(stem: str) -> np.ndarray:
        path = next(
            (root / (stem + s) for s in IMAGE_SUFFIXES if (root / (stem + s)).is_file()), None
        )
        if path is None:
            raise MissingFileError(f"{root / (stem + '.jpg')}: no image for ground truth {stem}")
        pred = segmenter.predict(path, vocabulary=vocabulary, score_threshold=score_thresh)
        if object_dir is None or object_names is None:
            return pred.semantic_map(ignore_label=ignore_label)
        obj_path = Path(object_dir) / f"{stem}.png"
        if not obj_path.is_file():
            raise MissingFileError(f"{obj_path}: no object map for image {path}")
        objects = read_label_map(obj_path)
        if objects.shape != pred.image_size:
            raise InputError(f"{obj_path}: object map is not the size of its image {path}")
        out = np.full(
            objects.shape, ignore_label, dtype=np.uint8 if ignore_label < 256 else np.int32
        )
        for k in np.unique(objects[objects != ignore_label]):
            if k >= len(object_names):
                raise InputError(
                    f"{obj_path}: object index {k}, but only {len(object_names)} names"
                )
            name = object_names[k].lower()
            keep = [i for i, row in enumerate(pred.label_ids) if part_object[row] == name]
            region = objects == k
            out[region] = pred.subset(keep).semantic_map(ignore_label=ignore_label)[region]
        return out

    return predict


def evaluate_semantic_model(
    segmenter: PartSegmenter,
    gt_dir: str | Path,
    image_root: str | Path,
    vocabulary: Vocabulary,
    *,
    object_dir: str | Path | None = None,
    object_names: Sequence[str] | None = None,
    score_thresh: float = SCORE_THRESH,
    pred_dir: str | Path | None = None,
    progress: bool = True,
) -> SemanticScores:
    """The OV-PARTS numbers of a model (``vlpart eval --semantic --weights``): a
    :func:`semantic_predictor` label map for every ground-truth PNG of ``gt_dir``, scored by
    :func:`~vlpart.evaluation.semantic.evaluate_label_maps`.

    Args:
        object_dir: Oracle-Obj: the object maps (``objects/`` of ``vlpart data
            convert-ov-parts``).
        object_names: the object of each index of those maps; given, the model is told the
            objects (see :func:`semantic_predictor`), else only the evaluator cuts its
            predictions to them (which, with every ground-truth part inside an object, changes
            no number).
        pred_dir: also write the predicted maps there as ``<stem>.png`` (all of them, replacing
            the folder, once every image is evaluated), to score again with ``--pred``.
    """
    predict = semantic_predictor(
        segmenter,
        image_root,
        vocabulary,
        score_thresh=score_thresh,
        object_dir=object_dir,
        object_names=object_names,
    )
    with OutputSet() as out:
        if pred_dir is not None:
            out.folder(pred_dir)

        def predict_and_keep(stem: str) -> np.ndarray:
            label_map = predict(stem)
            if pred_dir is not None:
                image = Image.fromarray(label_map)
                out.write(Path(pred_dir) / f"{stem}.png", lambda tmp: image.save(tmp, "PNG"))
            return label_map

        scores = evaluate_label_maps(
            gt_dir, predict_and_keep, vocabulary, object_dir=object_dir, progress=progress
        )
        out.commit()
    return scores
