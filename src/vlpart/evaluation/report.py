"""The record of a COCO/LVIS evaluation (:class:`EvalReport`, one :class:`CategoryRow` per
category) and how it is written: ``metrics.json`` and the paper-style ``metrics.md`` table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlpart.core.fileio import write_text_atomic
from vlpart.core.vocab import name_key

__all__ = ["COCO_MAX_DETS", "LVIS_MAX_DETS", "CategoryRow", "EvalReport"]

# COCO's detections per image (pycocotools' largest maxDets).
COCO_MAX_DETS = 100
# LVIS / PACO: detections kept per image across all categories (lvis-api ``LVISResults``).
LVIS_MAX_DETS = 300

# Summary rows: metric key -> label in the markdown table.
_METRIC_LABELS = {
    "AP": "AP",
    "AP50": "AP50",
    "AP75": "AP75",
    "AP_base": "AP (base)",
    "AP50_base": "AP50 (base)",
    "AP_novel": "AP (novel)",
    "AP50_novel": "AP50 (novel)",
    "AP_obj": "AP (objects)",
    "AP50_obj": "AP50 (objects)",
    "AP_part": "AP (parts)",
    "AP50_part": "AP50 (parts)",
    "AP_part_hier": "AP (parts, hierarchical)",
    "AP50_part_hier": "AP50 (parts, hierarchical)",
}


@dataclass(frozen=True)
class CategoryRow:
    """Per-category result.

    Attributes:
        id: the ground truth's category id.
        name: the ground truth's category name.
        object: the object the category is or belongs to.
        part: the part name, ``None`` for an object category.
        split: ``"base"``, ``"novel"`` or ``None`` (no split, or not listed in it).
        num_gt: non-crowd ground-truth instances.
        ap: IoU type -> AP@[.5:.95] in [0, 1]; ``None`` when ``num_gt`` is 0.
        ap50: IoU type -> AP@.5 in [0, 1]; ``None`` when ``num_gt`` is 0.
    """

    id: int
    name: str
    object: str
    part: str | None
    split: str | None
    num_gt: int
    ap: dict[str, float | None]
    ap50: dict[str, float | None]


@dataclass(frozen=True)
class EvalReport:
    """Everything :func:`evaluate_results` measured.

    Attributes:
        iou_types: the evaluated IoU types (``"bbox"``, ``"segm"``).
        metrics: IoU type -> metric key (``AP``, ``AP50``, ``AP75``, ``AP_base``, ``AP50_base``,
            ``AP_novel``, ``AP50_novel``, ``AP_obj``, ``AP_part``, ``AP_part_hier`` and their
            ``AP50_*`` twins, where they apply) -> value in [0, 1], or ``None`` when no category
            of that group has ground truth.
        categories: one row per ground-truth category, in id order.
        objects: objects whose per-part AP is detailed, as the caller spelled them.
        lvis_style: whether the LVIS protocol was used.
        split_source: where the base/novel split came from (a taxonomy name, a file, ``"mapping"``),
            or ``None``.
        num_images: images in the ground truth.
        num_detections: detections evaluated (after the LVIS per-image cap).
    """

    iou_types: tuple[str, ...]
    metrics: dict[str, dict[str, float | None]]
    categories: tuple[CategoryRow, ...]
    objects: tuple[str, ...]
    lvis_style: bool
    split_source: str | None
    num_images: int
    num_detections: int

    def parts_of(self, obj: str) -> list[CategoryRow]:
        """The part rows of object ``obj`` (case-insensitive), in id order."""
        key = name_key(obj)
        return [r for r in self.categories if r.part is not None and name_key(r.object) == key]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (values in [0, 1], ``None`` for "no ground truth")."""
        details = {
            obj: {
                t: {r.part: {"AP": r.ap[t], "AP50": r.ap50[t]} for r in self.parts_of(obj)}
                for t in self.iou_types
            }
            for obj in self.objects
        }
        return {
            "protocol": "lvis" if self.lvis_style else "coco",
            "max_dets_per_image": LVIS_MAX_DETS if self.lvis_style else COCO_MAX_DETS,
            "iou_types": list(self.iou_types),
            "split_source": self.split_source,
            "num_images": self.num_images,
            "num_detections": self.num_detections,
            "metrics": self.metrics,
            "objects": details,
            "categories": [
                {
                    "id": r.id,
                    "name": r.name,
                    "object": r.object,
                    "part": r.part,
                    "split": r.split,
                    "num_gt": r.num_gt,
                    **{t: {"AP": r.ap[t], "AP50": r.ap50[t]} for t in self.iou_types},
                }
                for r in self.categories
            ],
        }

    def to_markdown(self) -> str:
        """Summary, per-object part tables and the per-category table, AP in percent."""
        protocol = "LVIS" if self.lvis_style else "COCO"
        max_dets = LVIS_MAX_DETS if self.lvis_style else COCO_MAX_DETS
        lines = [
            f"# Evaluation ({protocol} protocol, at most {max_dets} detections per image)",
            "",
            f"{self.num_images} images, {self.num_detections} detections, "
            f"{sum(r.num_gt > 0 for r in self.categories)}/{len(self.categories)} categories "
            f"with ground truth; AP in %"
            + (f"; base/novel split from {self.split_source}" if self.split_source else ""),
            "",
            _md_row(["metric", *self.iou_types]),
            _md_row(["---", *["---:"] * len(self.iou_types)]),
        ]
        keys = [k for k in _METRIC_LABELS if any(k in self.metrics[t] for t in self.iou_types)]
        for key in keys:
            values = [_pct(self.metrics[t].get(key)) for t in self.iou_types]
            lines.append(_md_row([_METRIC_LABELS[key], *values]))
        for obj in self.objects:
            rows = self.parts_of(obj)
            lines += ["", f"## {obj}: {', '.join(str(r.part) for r in rows)}", ""]
            lines.append(_md_row(["", *(str(r.part) for r in rows)]))
            lines.append(_md_row(["---", *["---:"] * len(rows)]))
            for t in self.iou_types:
                lines.append(_md_row([f"{t} AP", *(_pct(r.ap[t]) for r in rows)]))
                lines.append(_md_row([f"{t} AP50", *(_pct(r.ap50[t]) for r in rows)]))
        header = ["id", "category", "split", "GT"]
        for t in self.iou_types:
            header += [f"{t} AP", f"{t} AP50"]
        lines += ["", "## Per category", "", _md_row(header)]
        lines.append(_md_row(["---:", "---", "---", "---:", *["---:"] * 2 * len(self.iou_types)]))
        for r in self.categories:
            cells = [str(r.id), r.name, r.split or "-", str(r.num_gt)]
            for t in self.iou_types:
                cells += [_pct(r.ap[t]), _pct(r.ap50[t])]
            lines.append(_md_row(cells))
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``metrics.json`` and ``metrics.md`` into ``directory`` (created if needed).

        Each file is written to a temporary file in the same directory and renamed, so an
        interrupted run never leaves a truncated file behind.

        Returns:
            The paths of ``metrics.json`` and ``metrics.md``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path, md_path = directory / "metrics.json", directory / "metrics.md"
        write_text_atomic(json_path, json.dumps(self.to_json(), indent=2) + "\n")
        write_text_atomic(md_path, self.to_markdown())
        return json_path, md_path


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
