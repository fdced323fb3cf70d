"""Run a segmenter over a COCO-format dataset and evaluate it (``vlpart eval --weights``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from vlpart.data.coco import load_coco_json, load_rgb_image, vocabulary_from_categories
from vlpart.engine.evaluate import EvalReport, evaluate_results
from vlpart.prediction import coco_results
from vlpart.predictor import PartSegmenter

__all__ = ["evaluate_model", "predict_dataset"]


def predict_dataset(
    segmenter: PartSegmenter,
    ann_file: str | Path,
    image_root: str | Path,
    *,
    batch_size: int = 1,
    progress: bool = True,
) -> list[dict]:
    """Detect in every image of a COCO-format file, with the file's categories (in id order)
    as the vocabulary.

    Args:
        segmenter: the model and the text encoder of the categories' prompts.
        ann_file: COCO-format JSON.
        image_root: the folder ``file_name`` is relative to.

    Returns:
        COCO results (RLE masks) with the file's image and category ids.
    """
    data = load_coco_json(Path(ann_file))
    vocab = vocabulary_from_categories(data["categories"], name=Path(ann_file).stem)
    embeddings = segmenter.text_embeddings(vocab)
    category_ids = [c.id for c in vocab]
    images = data["images"]
    results: list[dict] = []
    for start in tqdm(
        range(0, len(images), batch_size),
        desc="eval",
        unit="batch",
        disable=not progress,
        dynamic_ncols=True,
    ):
        infos = images[start : start + batch_size]
        batch = [load_rgb_image(Path(image_root) / info["file_name"]) for info in infos]
        for info, out in zip(infos, segmenter.predict_tensors(batch, embeddings), strict=True):
            results += coco_results(
                int(info["id"]),
                out["boxes"].cpu().numpy(),
                out["scores"].cpu().numpy(),
                out["labels"].cpu().numpy(),
                out["masks"].cpu().numpy(),
                category_ids,
            )
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
    """:func:`predict_dataset` then :func:`~vlpart.engine.evaluate.evaluate_results` (box and
    mask AP, base/novel means when the categories have a split)."""
    results = predict_dataset(
        segmenter, ann_file, image_root, batch_size=batch_size, progress=progress
    )
    return evaluate_results(ann_file, results, split=split, objects=objects, lvis_style=lvis_style)
