"""``vlpart eval --semantic``: label folders, a model on the fly, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vlpart.apps.cli import main
from vlpart.data.ov_parts import coco_to_label_maps


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


@pytest.fixture
def maps(tmp_path):
    # Classes 0 and 2 of pascal_part_116 (aeroplane: seen), 32 (car:wheel, unseen).
    _png(tmp_path / "gt" / "a.png", [[0, 0, 32, 32]])
    _png(tmp_path / "pred" / "a.png", [[0, 2, 32, 255]])
    return tmp_path


def test_label_folders_write_metrics_and_print_the_table(maps, capsys):
    out = maps / "out"
    args = ["eval", "--semantic", "--gt", str(maps / "gt"), "--pred", str(maps / "pred")]
    assert main([*args, "--vocab", "pascal_part_116", "--out", str(out)]) == 0
    # class 0: TP 1, GT 2, Pred 1 -> 50; class 2 predicted only -> 0; class 32: 1/1 (its
    # second pixel is predicted ignore). Seen (50 + 0) / 2 = 25, unseen 100, h = 40.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU_seen"] == pytest.approx(25.0)
    assert metrics["mIoU_unseen"] == pytest.approx(100.0)
    assert metrics["hIoU"] == pytest.approx(40.0)
    assert metrics["mIoU"] == pytest.approx(50.0)
    assert metrics["IoU"]["car:wheel"] == pytest.approx(100.0)
    assert metrics["unit"] == "percent" and metrics["setting"] == "whole image"
    assert "| whole image | 25.0 | 100.0 | 40.0 | 50.0 | 75.0 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--vocab", "pascal_part_116", "--oracle-objects", "{d}/none"], "none/a.png: no object"),
        (["--vocab", "pascal_part_11"], "unknown vocabulary 'pascal_part_11'"),
        ([], "--semantic needs --vocab"),
    ],
)
def test_errors_are_one_line(maps, capsys, extra, message):
    args = ["eval", "--semantic", "--gt", str(maps / "gt"), "--pred", str(maps / "pred")]
    code = main([*args, *[e.format(d=maps) for e in extra]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_pred_needs_semantic_and_results_do_not_mix(maps, capsys):
    assert main(["eval", "--gt", str(maps / "gt"), "--pred", str(maps / "pred")]) == 2
    assert "add --semantic" in capsys.readouterr().err
    assert main(["eval", "--semantic", "--gt", "g", "--results", "r.json", "--vocab", "voc"]) == 2
    assert "give --pred PRED_DIR or --weights" in capsys.readouterr().err
    assert main(["eval", "--gt", "g.json", "--results", "r.json", "--vocab", "voc"]) == 2
    assert "--vocab goes with --semantic" in capsys.readouterr().err


def test_a_model_on_the_fly_writes_its_maps(synthetic_world, tiny_checkpoint, tmp_path, capsys):
    summary, vocab = coco_to_label_maps(
        synthetic_world / "parts_val.json",
        tmp_path / "world",
        objects_json=synthetic_world / "objects_val.json",
    )
    vocab_file = tmp_path / "world.txt"
    vocab_file.write_text("\n".join(vocab.names))
    out = tmp_path / "eval"
    args = ["eval", "--semantic", "--gt", str(summary.gt_dir), "--weights", str(tiny_checkpoint)]
    args += ["--image-root", str(synthetic_world / "images"), "--vocab", str(vocab_file)]
    args += ["--oracle-objects", str(summary.objects_dir), "--score-thresh", "0", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["setting"] == "Oracle-Obj" and metrics["num_images"] == summary.num_images
    # An untrained model: whatever it predicts, the share of GT pixels it covers is defined.
    assert 0.0 <= metrics["coverage"] <= 100.0
    # The predicted maps are kept and score the same through --pred.
    preds = sorted(p.name for p in (out / "pred").iterdir())
    assert preds == sorted(p.name for p in summary.gt_dir.iterdir())
    again = ["eval", "--semantic", "--gt", str(summary.gt_dir), "--pred", str(out / "pred")]
    again += ["--vocab", str(vocab_file), "--oracle-objects", str(summary.objects_dir)]
    again += ["--out", str(tmp_path / "again")]
    assert main(again) == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["IoU"] == metrics["IoU"]
    # Without images the run fails naming the missing photo.
    args[args.index("--image-root") + 1] = str(tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    assert "no image for ground truth" in capsys.readouterr().err
