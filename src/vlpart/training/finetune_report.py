"""Before → after report of a fine-tuning run: ``report.md``, ``metrics.json``, ``overlays/``.

The starting and the fine-tuned model are evaluated on the same validation images
(:func:`vlpart.evaluation.model_eval.evaluate_model`, the validation file's categories as the
vocabulary); the three outputs are committed together (:class:`~vlpart.core.fileio.OutputSet`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from vlpart.core.coco import load_coco
from vlpart.core.fileio import OutputSet, read_image, write_bytes_durable
from vlpart.evaluation.coco_eval import EvalReport
from vlpart.evaluation.model_eval import dataset_vocabulary, evaluate_model
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import load_checkpoint
from vlpart.text import TextOptions

__all__ = ["write_report"]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
METRICS_JSON = "metrics.json"
NUM_OVERLAYS = 4
_TYPES = {"segm": "mask", "bbox": "box"}


def _segmenter(weights: str | Path) -> PartSegmenter:
    model, info = load_checkpoint(weights)
    return PartSegmenter(model, TextOptions().build(recorded=info.text_encoder), info=info)


def _summary(report: EvalReport) -> dict[str, Any]:
    """Mask and box AP / AP50 overall and per category (percent)."""

    def pct(value: float | None) -> float | None:
        return None if value is None else round(100 * value, 2)

    out: dict[str, Any] = {}
    for iou_type, label in _TYPES.items():
        if iou_type not in report.iou_types:
            continue
        m = report.metrics[iou_type]
        out[label] = {
            "AP": pct(m.get("AP")),
            "AP50": pct(m.get("AP50")),
            "categories": {
                r.name: {"AP": pct(r.ap[iou_type]), "AP50": pct(r.ap50[iou_type])}
                for r in report.categories
            },
        }
    return out


def write_report(out: Path, record: dict[str, Any], weights: Path) -> dict[str, Any]:
    """Evaluate start and fine-tuned model on the run's validation file and write the report.

    Args:
        out: the run folder.
        record: its ``plan.json`` (plan, start weights, validation file, image folder).
        weights: the fine-tuned ``model.safetensors``.

    Returns:
        The ``metrics.json`` content plus ``"weights"``.
    """
    metrics: dict[str, Any] = {
        "plan": record["plan"],
        "known_added": record["known_added"],
        "known_seconds": record["known_seconds"],
        "train_seconds": _train_seconds(out),
    }
    val_file, root = record["val_file"], Path(record["image_root"])
    finetuned = _segmenter(weights)
    if val_file is not None:
        started = time.perf_counter()
        before = evaluate_model(_segmenter(record["start_weights"]), val_file, root)
        after = evaluate_model(finetuned, val_file, root)
        metrics.update(
            validation=val_file,
            before=_summary(before),
            after=_summary(after),
            eval_seconds=round(time.perf_counter() - started, 2),
        )
    with OutputSet() as outputs:
        if val_file is not None:
            _overlays(outputs, out / "overlays", finetuned, val_file, root)
        outputs.write_json(out / METRICS_JSON, metrics)
        text = _markdown(metrics)
        outputs.write(out / REPORT_FILE, lambda tmp: write_bytes_durable(tmp, text.encode()))
        outputs.commit()
    logger.info("report: %s", out / REPORT_FILE)
    return {**metrics, "weights": str(weights)}


def _train_seconds(out: Path) -> float | None:
    path = out / "metrics.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]).get("seconds") if lines else None


def _overlays(outputs: OutputSet, folder: Path, segmenter, val_file: str, root: Path) -> None:
    """The fine-tuned model's detections (validation vocabulary) on the first few images."""
    outputs.folder(folder)
    vocab = dataset_vocabulary(val_file)
    for info in load_coco(Path(val_file))["images"][:NUM_OVERLAYS]:
        image = read_image(root / info["file_name"])
        picture = segmenter.predict(image, vocabulary=vocab).render(image)
        name = Path(info["file_name"]).stem + ".png"
        outputs.write(folder / name, lambda tmp, p=picture: p.save(tmp, "PNG"))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _markdown(metrics: dict[str, Any]) -> str:
    plan = metrics["plan"]
    lines = [
        "# Fine-tuning report",
        "",
        f"Start: `{plan['start']}` (text encoder {plan['text_encoder']}); "
        f"{plan['num_annotated']} annotated images, {plan['iterations']} iterations × batch "
        f"{plan['batch_size']} in {_fmt(metrics['train_seconds'])} s on {plan['device']}; "
        f"frozen: {', '.join(plan['freeze']) or 'backbone stem only'}.",
        "",
        "Keep known categories: "
        + (
            f"{metrics['known_added']} detections of the starting model's own categories added "
            f"to the training images ({metrics['known_seconds']} s)."
            if plan["keep_known"]
            else "off."
        ),
        "",
    ]
    if "before" not in metrics:
        lines.append("No validation images (pass --val): no before/after numbers.")
        return "\n".join(lines) + "\n"
    lines += [f"Validation: `{metrics['validation']}`. AP in %, start → fine-tuned.", ""]
    for label in ("mask", "box"):
        before, after = metrics["before"].get(label), metrics["after"].get(label)
        if before is None:
            continue
        lines += [
            f"## {label}",
            "",
            "| category | AP | AP50 |",
            "|---|---:|---:|",
            f"| **all** | {_fmt(before['AP'])} → {_fmt(after['AP'])} | "
            f"{_fmt(before['AP50'])} → {_fmt(after['AP50'])} |",
        ]
        for name, b in before["categories"].items():
            a = after["categories"][name]
            lines.append(
                f"| {name} | {_fmt(b['AP'])} → {_fmt(a['AP'])} | "
                f"{_fmt(b['AP50'])} → {_fmt(a['AP50'])} |"
            )
        lines.append("")
    lines.append("Overlays of the fine-tuned model: `overlays/`.")
    return "\n".join(lines) + "\n"
