"""Run a detector over a COCO-format dataset and evaluate it (``vlpart eval --config``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from vlpart.data.coco import load_coco_json, load_rgb_image
from vlpart.engine.evaluate import EvalReport, evaluate_results
from vlpart.model import VLPartDetector
from vlpart.prediction import Prediction
from vlpart.predictor import MASK_THRESH

__all__ = ["evaluate_model", "predict_dataset"]


@torch.inference_mode()
def predict_dataset(
    model: VLPartDetector,
    ann_file: str | Path,
    image_root: str | Path,
    *,
    text_embeddings: Tensor,
    batch_size: int = 1,
    progress: bool = True,
) -> list[dict]:
    """Detect in every image of a COCO-format file with the file's own category list.

    Args:
        model: the detector (put in eval mode here).
        ann_file: COCO-format JSON; its categories in id order are the rows of
            ``text_embeddings``.
        image_root: the folder ``file_name`` is relative to.
        text_embeddings: ``Tensor[C, D]`` of the file's categories.

    Returns:
        COCO results (RLE masks) with the file's image and category ids.
    """
    data = load_coco_json(Path(ann_file))
    category_ids = [c["id"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    if len(category_ids) != text_embeddings.shape[0]:
        raise ValueError(
            f"{ann_file}: {len(category_ids)} categories but "
            f"{text_embeddings.shape[0]} text embeddings"
        )
    model.eval()
    device = next(model.parameters()).device
    text_embeddings = text_embeddings.to(device)
    results: list[dict] = []
    images = data["images"]
    for start in tqdm(
        range(0, len(images), batch_size),
        desc="eval",
        unit="batch",
        disable=not progress,
        dynamic_ncols=True,
    ):
        infos = images[start : start + batch_size]
        batch = [load_rgb_image(Path(image_root) / info["file_name"]) for info in infos]
        outputs = model([im.to(device) for im in batch], text_embeddings=text_embeddings)
        for info, out in zip(infos, outputs, strict=True):
            pred = Prediction(
                boxes=out["boxes"].cpu().numpy(),
                scores=out["scores"].cpu().numpy(),
                labels=["" for _ in range(len(out["scores"]))],
                label_ids=out["labels"].cpu().numpy(),
                masks=(out["masks"][:, 0] >= MASK_THRESH).cpu().numpy(),
                parent=out["labels"].new_full((len(out["labels"]),), -1).cpu().numpy(),
            )
            for r in pred.to_coco(int(info["id"]), category_ids):
                del r["label"], r["parent"]
                results.append(r)
    return results


def evaluate_model(
    model: VLPartDetector,
    ann_file: str | Path,
    image_root: str | Path,
    *,
    text_embeddings: Tensor,
    split: str | Path | Mapping[str, Sequence[str]] | None = None,
    objects: Sequence[str] = (),
    lvis_style: bool = False,
    batch_size: int = 1,
    progress: bool = True,
) -> EvalReport:
    """:func:`predict_dataset` then :func:`~vlpart.engine.evaluate.evaluate_results` (box and
    mask AP, base/novel means when the categories have a split)."""
    results = predict_dataset(
        model,
        ann_file,
        image_root,
        text_embeddings=text_embeddings,
        batch_size=batch_size,
        progress=progress,
    )
    return evaluate_results(ann_file, results, split=split, objects=objects, lvis_style=lvis_style)
