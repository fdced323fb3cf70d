"""The plots of ``docs/benchmarks.md``, drawn from the recorded numbers in ``benchmarks/results``.

::

    python tools/make_plots.py [--out docs/img]

writes ``latency_by_stage.png`` (seconds per inference stage, one bar per variant) from
``inference_latency.json`` and ``quickstart_rows.png`` (mask AP50 on all / base / novel parts of
the quickstart's rows A, B, C, mean ± std over seeds) from ``quickstart.json``. The JSON files
hold what the benchmark commands printed (and the docs' tables show); update them with a new
measurement and rerun.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def _caption(fig, data: dict) -> None:
    fig.text(0.01, 0.01, f"{data['command']} · {data['machine']} · {data['date']}", fontsize=7)


def plot_latency(data: dict, path: Path) -> Path:
    """Stacked horizontal bars: one per variant, one segment per stage (seconds)."""
    names = list(data["variants"])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    left = [0.0] * len(names)
    colours = plt.get_cmap("tab10").colors
    for k, stage in enumerate(data["stages"]):
        widths = [data["variants"][n].get(stage, 0.0) for n in names]
        ax.barh(names, widths, left=left, color=colours[k % 10], label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, name in enumerate(names):
        total = data["variants"][name]["total"]
        ax.text(total + 0.03, y, f"{total:.2f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per image (median)")
    ax.legend(ncol=4, fontsize=7, loc="lower right")
    ax.set_xlim(0, max(v["total"] for v in data["variants"].values()) * 1.2)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _caption(fig, data)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_quickstart(data: dict, path: Path) -> Path:
    """Grouped bars: mask AP50 of rows A, B, C on all / base / novel parts (mean over seeds,
    error bars one sample std)."""
    rows, columns = list(data["rows"]), data["columns"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(rows)
    for r, row in enumerate(rows):
        xs = [c + (r - (len(rows) - 1) / 2) * width for c in range(len(columns))]
        values, stds = data["rows"][row]["AP50"], data["rows"][row]["AP50_std"]
        bars = ax.bar(xs, values, width, yerr=stds, capsize=2, label=row)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(columns)), [f"{c} parts" for c in columns])
    ax.set_ylabel("mask AP50 (%)")
    ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _caption(fig, data)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS_IMG, help="folder for the PNGs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    def load(name: str) -> dict:
        return json.loads((args.results / name).read_text(encoding="utf-8"))

    return [
        plot_latency(load("inference_latency.json"), args.out / "latency_by_stage.png"),
        plot_quickstart(load("quickstart.json"), args.out / "quickstart_rows.png"),
    ]


if __name__ == "__main__":
    main()
