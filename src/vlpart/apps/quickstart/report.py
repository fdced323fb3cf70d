"""The quickstart's tables and ``report.md`` text (the numbers come from
:mod:`vlpart.apps.quickstart.run`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlpart.apps.quickstart.spread import BAND_STDS, CONFIDENCE, Band, band_cells, changes
from vlpart.evaluation.report import EvalReport

__all__ = [
    "TABLE_HEAD",
    "TABLE_KEYS",
    "RowResult",
    "band_text",
    "changes_text",
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
METRIC_NAMES = {
    "AP": "all-parts mask AP",
    "AP_base": "base-part mask AP",
    "AP_novel": "novel-part mask AP",
    "AP50": "all-parts mask AP50",
    "AP50_base": "base-part mask AP50",
    "AP50_novel": "novel-part mask AP50",
}
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


def _seed_range(seeds: tuple[int, ...] | list[int]) -> str:
    return (
        f"{seeds[0]}–{seeds[-1]}"
        if list(seeds) == list(range(seeds[0], seeds[-1] + 1))
        else (", ".join(map(str, seeds)))
    )


def band_text(rows: list[RowResult], band: Band) -> str:
    """One run's table beside the README's band: each cell as ``value (mean ± std)``, marked
    ✗ when it lies more than ``BAND_STDS`` sample stds from the mean."""
    cells = {(c.row, c.key): c for c in band_cells({r.row: r.mask for r in rows}, band)}
    lines = [TABLE_HEAD]
    for r in rows:
        out = []
        for k in TABLE_KEYS:
            c = cells.get((r.row, k))
            if c is None:
                out.append("–" if r.mask[k] is None else f"{r.mask[k]:.1f}")
            else:
                mark = "" if c.inside else " ✗"
                out.append(f"{c.value:.1f} ({c.mean:.1f} ± {c.std:.1f}){mark}")
        lines.append(f"| {r.row}. {r.data} | {' | '.join(out)} |")
    outside = [f"{c.row} {c.key}" for c in cells.values() if not c.inside]
    verdict = (
        f"all {len(cells)} cells lie inside it."
        if not outside
        else f"{len(outside)} of {len(cells)} cells lie outside it: {', '.join(outside)}."
    )
    return (
        f"This run beside the README's band: mean ± sample std over seeds "
        f"{_seed_range(band.seeds)} ({band.machine}, {band.date}); ✗ marks a cell more than "
        f"{BAND_STDS:g} std from the mean. Same machine and seed give the same digits; another "
        f"CPU's float kernels move them within the band. Here {verdict}\n\n" + "\n".join(lines)
    )


def changes_text(band: Band, labels: dict[str, str]) -> str:
    """What adding each row's sources does, over the band's seeds: the mean paired change
    (after − before, same seed; each row against the one before it, and the last against the
    first) with its ``CONFIDENCE`` interval, and the conclusions it supports."""
    rows = list(band.per_seed)
    pairs = list(zip(rows, rows[1:], strict=False))
    if len(rows) > 2:
        pairs.append((rows[0], rows[-1]))  # every extra source at once
    found = {(c.before, c.after, c.key): c for c in changes(band, pairs, TABLE_KEYS)}
    arrows = {"rises": " ↑", "falls": " ↓", "unresolved": ""}
    lines = [TABLE_HEAD.replace("training data", "change")]
    for before, after in pairs:
        cells = []
        for k in TABLE_KEYS:
            c = found.get((before, after, k))
            cells.append(
                "–" if c is None else f"{c.mean:+.1f} ± {c.half_width:.1f}{arrows[c.verdict]}"
            )
        added = labels[after] if rows.index(after) == rows.index(before) + 1 else "every source"
        lines.append(f"| {after} − {before} ({added}) | {' | '.join(cells)} |")
    supported = [c for c in found.values() if c.verdict != "unresolved"]
    said = "; ".join(
        f"row {c.after} {'raises' if c.verdict == 'rises' else 'lowers'} {METRIC_NAMES[c.key]} "
        f"over row {c.before} ({c.mean:+.1f} ± {c.half_width:.1f})"
        for c in supported
    )
    return (
        f"What each row's extra sources change, over seeds {_seed_range(band.seeds)}: mean of the "
        f"per-seed differences (both rows of a seed share its world) ± the half-width of its "
        f"{CONFIDENCE:.0%} interval (Student's t, {len(band.seeds) - 1} degrees of freedom); "
        f"↑/↓: the interval excludes zero.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + (
            f"Supported at {CONFIDENCE:.0%}: {said}. Every other change is within the seed "
            "spread: not a conclusion at this number of seeds."
            if supported
            else f"No change is supported at {CONFIDENCE:.0%}: every one is within the seed "
            "spread at this number of seeds."
        )
    )


def _schedule_text(result: dict, rows: list[RowResult]) -> str:
    s = result["settings"]
    per_row = ", ".join(f"{r.row}: {r.iterations} from {r.init}" for r in rows)
    ratios = " : ".join(f"{v:g}" for v in result["ratios"].values())
    names = " : ".join(result["ratios"])
    return (
        f"Each row trains EfficientNet-Lite0 + FPN with MiniLM text embeddings "
        f"(`configs/quickstart.yaml`, {s['batch_size']} images per step at {s['image_size']} px; "
        f"iterations {per_row}; source ratios {names} = {ratios})"
        + (", trained with bfloat16 autocast (`--amp`)." if s.get("amp") else ".")
    )


def quickstart_report(
    result: dict,
    rows: list[RowResult],
    renders: list[Path],
    out: Path,
    *,
    prompts: str,
    band: Band | None,
    labels: dict[str, str],
) -> str:
    """The Markdown ``report.md`` of one quickstart run (``result``: its ``metrics.json``);
    ``band``: the README's spread over seeds for runs of the default schedule, shown beside the
    table with the conclusions it supports (None for other settings)."""
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
    if band is not None:
        lines += [band_text(rows, band), "", changes_text(band, labels), ""]
    if "C" in novel:
        gained = novel["C"] is not None and novel["B"] is not None and novel["C"] > novel["B"]
        lines += [
            f"Parsing turned {result['parsed']['images']} novel-object instances into "
            f"{result['parsed']['parts']} part boxes; in this run, training on them "
            f"{'raised' if gained else 'did not raise'} novel mask AP50 over row B "
            f"({novel['B']} → {novel['C']}): one seed, read it against the spread.",
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
        Markdown report, with the conclusions the spread supports (:func:`changes_text`).
    """
    band = Band.from_runs(runs, seeds, TABLE_KEYS)
    spread: dict[str, dict[str, dict[str, float] | None]] = {}
    for key in rows:
        spread[key] = {}
        for k in TABLE_KEYS:
            if k not in band.per_seed[key]:
                spread[key][k] = None
                continue
            mean, std = band.mean_std(key, k)
            spread[key][k] = {"mean": round(mean, 2), "std": round(std, 2)}
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
        + "\n\n"
        + changes_text(band, labels)
        + f"\n\nTime: {total / 60:.1f} minutes in all.\n"
    )
    return spread, report
