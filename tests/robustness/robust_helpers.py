"""Helpers of the robustness suite: run the CLI and check its one error line, snapshot
folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vlpart.cli import main

TINY_MODEL = {
    "backbone": "efficientnet_lite0",
    "backbone_weights": None,
    "fpn_channels": 32,
    "min_size": 96,
    "max_size": 96,
    "text_dim": 384,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 100,
    "roi_batch_size_per_image": 32,
    "mask_rois_per_image": 8,
    "score_thresh": 0.0,
}


def cli_error(capsys, args: list[str]) -> str:
    """Run ``vlpart ARGS``; assert a non-zero exit with exactly one ``vlpart: error:`` line and
    no traceback; return that line."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vlpart: error:")]
    assert code != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
