"""Run a segmenter over a COCO-format dataset and evaluate it (``vlpart eval --weights``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from vlpart.core.coco import category_vocabulary, load_coco
from vlpart.core.fileio import read_image
from vlpart.core.vocab import Vocabulary
from vlpart.evaluation.coco_eval import evaluate_results
from vlpart.evaluation.proposals import PROPOSAL_KS, proposal_recall
from vlpart.evaluation.report import EvalReport
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import VLPartDetector

__all__ = ["dataset_proposal_recall", "dataset_vocabulary", "evaluate_model", "predict_dataset"]


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
