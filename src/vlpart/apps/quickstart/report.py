"""The quickstart's tables and ``report.md`` text (the numbers come from
:mod:`vlpart.apps.quickstart.run`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from vlpart.evaluation.report import EvalReport

__all__ = [
    "TABLE_HEAD",
    "TABLE_KEYS",
    "RowResult",
    "percent",
    "quickstart_report",
    "seeds_report",
    "table",
]


@dataclass
class RowResult:
    """One row of the table: mask and box AP (percent) on all / base / novel parts."""

    row: str
    data: str
    iterations: int
    init: str
    train_seconds: float
    mask: dict[str, float | None] = field(default_factory=dict)
    box: dict[str, float | None] = field(default_factory=dict)


def percent(report: EvalReport, iou_type: str) -> dict[str, float | None]:
    metrics = report.metrics[iou_type]
    keys = ("AP", "AP_base", "AP_novel", "AP50", "AP50_base", "AP50_novel")
    return {k: None if metrics.get(k) is None else round(100 * metrics[k], 1) for k in keys}


TABLE_KEYS = ("AP", "AP_base", "AP_novel", "AP50", "AP50_base", "AP50_novel")
TABLE_HEAD = (
    "| training data | mask AP all | base | novel | mask AP50 all | base | novel |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)


def table(rows: list[RowResult]) -> str:
    def cell(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    lines = [TABLE_HEAD]
    for r in rows:
        cells = " | ".join(cell(r.mask[k]) for k in TABLE_KEYS)
        lines.append(f"| {r.row}. {r.data} | {cells} |")
    return "\n".join(lines)


def _schedule_text(result: dict, rows: list[RowResult]) -> str:
    s = result["settings"]
    per_row = ", ".join(f"{r.row}: {r.iterations} from {r.init}" for r in rows)
    ratios = " : ".join(f"{v:g}" for v in result["ratios"].values())
    names = " : ".join(result["ratios"])
    return (
        f"Each row trains EfficientNet-Lite0 + FPN with MiniLM text embeddings "
        f"(`configs/quickstart.yaml`, {s['batch_size']} images per step at {s['image_size']} px; "
        f"iterations {per_row}; source ratios {names} = {ratios})."
    )


def quickstart_report(
    result: dict, rows: list[RowResult], renders: list[Path], out: Path, *, prompts: str
) -> str:
    """The Markdown ``report.md`` of one quickstart run (``result``: its ``metrics.json``)."""
    novel = {r.row: r.mask["AP50_novel"] for r in rows}
    split = (
        "validation split of the training images"
        if result["world"]["validation_split"]
        else "held-out images"
    )
    lines = ["# vlpart quickstart: open-vocabulary part segmentation in miniature", ""]
    cut = result["cut_down"]
    if cut is not None:
        lines += [
            f"**Cut-down run:** at {cut['seconds_per_step']:.2f} s per step the schedule was cut "
            f"from {cut['planned'][0]} + {cut['planned'][1]} to {cut['run'][0]} + "
            f"{cut['run'][1]} iterations (row A + each fine-tuned row) to fit "
            f"`--budget-minutes {cut['budget_minutes']:g}`. Its numbers differ from the "
            "README's table; run without `--budget-minutes` for those.",
            "",
        ]
    lines += [
        f"Synthetic parts world: {result['world']['train_images']} training and "
        f"{result['world']['val_images']} evaluation images ({split}); novel objects "
        f"{', '.join(result['world']['novel_objects'])} (their parts are never annotated for "
        "training). " + _schedule_text(result, rows) + " Evaluated on all parts (mask AP, "
        "percent).",
        "",
        table(rows),
        "",
    ]
    if "C" in novel:
        gained = novel["C"] is not None and novel["B"] is not None and novel["C"] > novel["B"]
        lines += [
            f"Parsing turned {result['parsed']['images']} novel-object instances into "
            f"{result['parsed']['parts']} part boxes; training on them "
            f"{'raised' if gained else 'did not raise'} novel mask AP50 over row B "
            f"({novel['B']} → {novel['C']}).",
            "",
        ]
    lines += [
        f"Time: {result['timings_seconds']['total'] / 60:.1f} minutes. Final model: "
        "`model.safetensors` (the last row); try "
        '`vlpart predict IMAGE --weights model.safetensors --vocab "dog:head,leg,tail"`.',
    ]
    if renders:
        lines += ["", f"## Novel-part prompts on held-out images (`{prompts}`)", ""]
        lines += [f"![{p.stem}]({p.relative_to(out)})" for p in renders]
    return "\n".join(lines) + "\n"


def seeds_report(
    runs: list[dict], rows: tuple[str, ...], seeds: list[int], *, labels: dict[str, str]
) -> tuple[dict, str]:
    """Mean ± sample std per row over the ``metrics.json`` contents ``runs`` (one per seed).

    Returns:
        ``spread[row][metric]`` (``{"mean", "std"}``, or None where a run had no value) and the
        Markdown report.
    """
    spread: dict[str, dict[str, dict[str, float | None]]] = {}
    for i, key in enumerate(rows):
        spread[key] = {}
        for k in TABLE_KEYS:
            values = [r["rows"][i]["mask"][k] for r in runs]
            if any(v is None for v in values):
                spread[key][k] = None
                continue
            spread[key][k] = {
                "mean": round(statistics.mean(values), 2),
                "std": round(statistics.stdev(values), 2),
            }
    lines = [TABLE_HEAD]
    for key in rows:
        cells = []
        for k in TABLE_KEYS:
            v = spread[key][k]
            cells.append("–" if v is None else f"{v['mean']:.1f} ± {v['std']:.1f}")
        lines.append(f"| {key}. {labels[key]} | {' | '.join(cells)} |")
    total = sum(r["timings_seconds"]["total"] for r in runs)
    cut = any(r["cut_down"] for r in runs)
    report = (
        "# vlpart quickstart over seeds\n\n"
        + (
            "**Cut-down runs** (`--budget-minutes`): the numbers differ from the README's.\n\n"
            if cut
            else ""
        )
        + f"Mask AP (percent), mean ± sample std over seeds {seeds} (each seed draws its own "
        "world and trains its own rows; per-seed reports in `seed_<k>/`).\n\n"
        + "\n".join(lines)
        + f"\n\nTime: {total / 60:.1f} minutes in all.\n"
    )
    return spread, report
