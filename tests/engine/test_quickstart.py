import json

import pytest
from PIL import Image

from vlpart.cli import main
from vlpart.engine.quickstart import (
    QuickstartSettings,
    budget_iterations,
    row_iterations,
    run_quickstart,
)
from vlpart.model import load_checkpoint


def test_rows_share_the_part_batches_and_the_budget_cuts_them_equally():
    # Base parts have ratio 2; B adds objects (1) and image labels (0.5); C adds parsed (0.5).
    assert [row_iterations(r, 300) for r in "ABC"] == [300, 525, 600]
    assert budget_iterations(0.3, 15, 300) == 300
    # 4.75 steps per part batch x 2 s: 0.75 x 15 min holds 71 part batches per row.
    assert budget_iterations(2.0, 15, 300) == 71
    assert budget_iterations(1000.0, 1, 300) == 1


def test_toy_quickstart_produces_every_stage(tmp_path):
    settings = QuickstartSettings(num_images=24, image_size=96, part_iterations=4, batch_size=2)
    result = run_quickstart(tmp_path, settings)
    # World, three trainings, parsing, evaluation, renders, final model.
    assert (tmp_path / "world" / "world.json").is_file()
    assert [r["row"] for r in result["rows"]] == ["A", "B", "C"]
    assert [row["iterations"] for row in result["rows"]] == [4, 7, 8]
    for row in result["rows"]:
        for key in ("AP", "AP_base", "AP_novel", "AP50", "AP50_base", "AP50_novel"):
            assert 0.0 <= row["mask"][key] <= 100.0
    for key, iterations in zip("ABC", [4, 7, 8], strict=True):
        metrics = (tmp_path / "runs" / key / "metrics.jsonl").read_text().splitlines()
        assert json.loads(metrics[-1])["iteration"] == iterations
    sources_c = {
        json.loads(line)["source"]
        for line in (tmp_path / "runs" / "C" / "metrics.jsonl").read_text().splitlines()
    }
    assert sources_c <= {"base_parts", "objects", "image_labels", "parsed_parts"}
    parsed = json.loads((tmp_path / "parsed" / "parsed_parts.json").read_text())
    assert result["parsed"] == {
        "images": len(parsed["images"]),
        "parts": len(parsed["annotations"]),
    }
    assert result["parsed"]["images"] > 0
    assert all(c["name"].split(":")[0] in {"dog", "bus"} for c in parsed["categories"])
    report = (tmp_path / "report.md").read_text()
    assert "| A. base parts |" in report and "| C. + parsed novel parts |" in report
    renders = sorted((tmp_path / "renders").glob("*.png"))
    assert renders and all(f"renders/{p.name}" in report for p in renders)
    assert Image.open(renders[0]).size == (384, 384)
    model, info = load_checkpoint(tmp_path / "model.safetensors")
    assert info.text_encoder == "minilm:all-MiniLM-L6-v2" and model.text_dim == 384
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["rows"] == result["rows"]


def test_quickstart_cli_rejects_bad_budget(capsys):
    assert main(["quickstart", "--budget-minutes", "0"]) == 2
    assert "--budget-minutes must be positive" in capsys.readouterr().err


@pytest.mark.slow
def test_full_quickstart_trains_every_row(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| C. + parsed novel parts |" in out
    result = json.loads((tmp_path / "metrics.json").read_text())
    # Its wall time against the budget is measured by benchmarks/quickstart_wall_time.py.
    assert result["part_iterations"] >= 100
    # Trained rows must beat an untrained detector on the base parts they saw.
    assert all(row["mask"]["AP50_base"] > 5.0 for row in result["rows"])
