"""tools/make_plots.py draws its PNGs, and its JSON inputs hold the benchmarks page's numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def make_plots():
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("make_plots", ROOT / "tools" / "make_plots.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _table_row(label: str) -> list[str]:
    """The cells of the benchmarks page's table row whose first cell contains ``label``."""
    for line in PAGE.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and label in cells[0]:
            return cells
    raise AssertionError(f"no row {label!r} in docs/benchmarks.md")


def test_plots_are_written(make_plots, tmp_path):
    paths = make_plots.main(["--out", str(tmp_path)])
    assert [p.name for p in paths] == ["latency_by_stage.png", "quickstart_rows.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_latency_json_matches_the_page():
    data = json.loads((RESULTS / "inference_latency.json").read_text())
    labels = {
        "torchvision maskrcnn_resnet50_fpn": "torchvision",
        "vlpart before": "vlpart before",
        "vlpart fp32": "vlpart fp32",
        "vlpart bf16": "vlpart bf16",
    }
    for name, values in data["variants"].items():
        cells = _table_row(labels[name])
        assert float(cells[1]) == values["total"]
        for k, stage in enumerate(data["stages"], start=2):
            if stage in values:
                assert float(cells[k].split()[0]) == values[stage], (name, stage)
        assert cells[-1] == f"{values['peak_rss_gb']:.2f} GB"


def test_quickstart_json_matches_the_page():
    data = json.loads((RESULTS / "quickstart.json").read_text())
    for row, values in data["rows"].items():
        cells = [c.split(" ± ") for c in _table_row(row)[1:]]
        assert [float(m) for m, _ in cells] == values["AP"] + values["AP50"], row
        assert [float(s) for _, s in cells] == values["AP_std"] + values["AP50_std"], row
