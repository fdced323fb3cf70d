"""The quickstart's band over seeds and the conclusions it supports (hand-computed numbers)."""

import re
import statistics
from pathlib import Path

import pytest

from vlpart.apps.quickstart.report import TABLE_KEYS, RowResult, band_text, changes_text
from vlpart.apps.quickstart.run import ROW_LABELS
from vlpart.apps.quickstart.spread import Band, band_cells, changes, load_reference

ROOT = Path(__file__).resolve().parents[2]


def _band(**per_row: dict[str, list[float]]) -> Band:
    seeds = len(next(iter(next(iter(per_row.values())).values())))
    return Band(tuple(range(seeds)), per_row, "test CPU", "2026-12-06")


def test_a_cell_is_inside_within_two_sample_stds():
    band = _band(A={"AP50": [9.0, 10.0, 11.0, 10.0, 10.0]})  # mean 10, sample std 0.7071
    assert band.mean_std("A", "AP50") == pytest.approx((10.0, 0.70711), abs=1e-5)
    inside, outside = (band_cells({"A": {"AP50": v, "AP": 3.0}}, band)[0] for v in (11.41, 8.58))
    assert inside.inside and not outside.inside
    # Metrics the band lacks (and missing values) are not compared.
    assert [c.key for c in band_cells({"A": {"AP50": None, "AP": 3.0}}, band)] == []


def test_paired_changes_use_students_t_over_the_seeds():
    band = _band(
        A={"AP50": [10.0, 12.0, 8.0, 11.0, 9.0], "AP": [5.0, 5.0, 5.0, 5.0, 5.0]},
        B={"AP50": [11.0, 13.0, 9.0, 12.0, 11.0], "AP": [6.0, 4.0, 5.0, 6.0, 4.0]},
        C={"AP50": [10.0, 12.0, 8.0, 11.0, 9.0], "AP": [6.5, 3.0, 5.5, 5.0, 4.5]},
    )
    found = {
        (c.before, c.after, c.key): c
        for c in changes(band, [("A", "B"), ("B", "C")], ("AP50", "AP"))
    }
    # B - A on AP50: differences 1, 1, 1, 1, 2: mean 1.2, sample std 0.4472; t(0.975, 4) = 2.7764.
    rise = found["A", "B", "AP50"]
    assert rise.mean == pytest.approx(1.2)
    assert rise.half_width == pytest.approx(2.7764 * 0.44721 / 5**0.5, abs=1e-3)
    assert rise.verdict == "rises"
    # The unpaired spread of A's AP50 (std 1.58) would hide this change; pairing by seed does not.
    assert statistics.stdev(band.per_seed["A"]["AP50"]) > rise.mean
    assert found["A", "B", "AP"].verdict == "unresolved"  # +1, -1, 0, +1, -1
    assert found["B", "C", "AP50"].verdict == "falls"  # -1, -1, -1, -1, -2
    assert found["B", "C", "AP"].verdict == "unresolved"  # +.5, -1, +.5, -1, +.5


def _rows(values: dict[str, float]) -> list[RowResult]:
    return [
        RowResult(row, ROW_LABELS[row], 300, "ImageNet", 1.0, {k: values[row] for k in TABLE_KEYS})
        for row in "AB"
    ]


def test_band_text_marks_the_cells_outside_and_counts_them():
    per_seed = {k: [9.0, 10.0, 11.0, 10.0, 10.0] for k in TABLE_KEYS}
    band = _band(A=per_seed, B=per_seed)
    text = band_text(_rows({"A": 10.5, "B": 12.0}), band)
    assert "| A. base parts | 10.5 (10.0 ± 0.7) |" in text
    assert text.count("12.0 (10.0 ± 0.7) ✗") == 6 and text.count("✗") == 6 + 1  # + the legend
    assert "6 of 12 cells lie outside it: B AP, B AP_base" in text
    assert "seeds 0–4 (test CPU, 2026-12-06)" in text
    assert "all 12 cells lie inside it." in band_text(_rows({"A": 10.0, "B": 9.0}), band)


def test_changes_text_states_only_the_supported_conclusions():
    base = [10.0, 12.0, 8.0, 11.0, 9.0]
    band = _band(
        A={k: base for k in TABLE_KEYS},
        B={**{k: base for k in TABLE_KEYS}, "AP50_novel": [b + 1 for b in base[:4]] + [11.0]},
    )
    text = changes_text(band, ROW_LABELS)
    assert "| B − A (+ object data (boxes, masks, image labels)) |" in text
    assert "+1.2 ± 0.6 ↑" in text and text.count("+0.0 ± 0.0 |") == 5
    assert "Supported at 95%: row B raises novel-part mask AP50 over row A (+1.2 ± 0.6)." in text
    flat = _band(A={k: base for k in TABLE_KEYS}, B={k: base for k in TABLE_KEYS})
    assert "No change is supported at 95%" in changes_text(flat, ROW_LABELS)


def test_packaged_reference_is_the_docs_table():
    band = load_reference()
    assert list(band.per_seed) == ["A", "B", "C"] and len(band.seeds) >= 5
    for row in band.per_seed.values():
        assert set(row) == set(TABLE_KEYS)
        assert all(len(v) == len(band.seeds) for v in row.values())
    # docs/benchmarks.md shows the band as "mean ± std" per cell, from this file.
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    for key, label in zip(
        "ABC", ["A. base parts", "B. + object data", "C. + parsed novel"], strict=True
    ):
        line = next(x for x in docs.splitlines() if x.startswith(f"| {label}") and "±" in x)
        shown = re.findall(r"(\d+\.\d) ± (\d+\.\d)", line)
        expected = [band.mean_std(key, k) for k in TABLE_KEYS]
        assert shown == [(f"{m:.1f}", f"{s:.1f}") for m, s in expected], line


def test_readme_shows_the_packaged_band_of_mask_ap50():
    band = load_reference()
    readme = (ROOT / "README.md").read_text().splitlines()
    for key, label in zip("ABC", ["A. base parts", "B. + object", "C. + parsed"], strict=True):
        line = next(x for x in readme if x.startswith(f"| {label}") and "±" in x)
        shown = re.findall(r"(\d+\.\d) ± (\d+\.\d)", line)
        expected = [band.mean_std(key, k) for k in ("AP50", "AP50_base", "AP50_novel")]
        assert shown == [(f"{m:.1f}", f"{s:.1f}") for m, s in expected], line
