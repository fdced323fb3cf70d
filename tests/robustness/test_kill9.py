"""``kill -9`` at random moments during ``vlpart train`` and ``vlpart parse``, then resume: no
corrupt file, training continues from the last checkpoint and ends with the uninterrupted
weights, parsing skips finished images and writes valid JSON."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vlpart.apps.cli import main

SRC = Path(__file__).parents[2] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
POLL_SECONDS = 0.01


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill_when(args: list[str], progress: Path, lines: int, extra_polls: int) -> bool:
    """Start ``vlpart ARGS``, SIGKILL it once ``progress`` has ``lines`` lines and another
    ``extra_polls`` polls have passed; False if it finished first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlpart.apps.cli", *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    polls = None
    while proc.poll() is None:
        if polls is None and _count_lines(progress) >= lines:
            polls = 0
        if polls is not None:
            if polls >= extra_polls:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            polls += 1
        time.sleep(POLL_SECONDS)  # waiting for the child, not for time to pass
    return False


@pytest.mark.slow
def test_train_killed_at_random_moments_resumes_to_the_same_weights(fast_train_yaml, tmp_path):
    config = yaml.safe_load(fast_train_yaml.read_text())
    config["train"].update(max_iter=8, checkpoint_period=2, keep_checkpoints=2)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    threads = torch.get_num_threads()
    reference = tmp_path / "reference"
    # One thread everywhere: the thread count changes floating-point reduction order.
    try:
        assert main(["train", str(path), "--out", str(reference), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)

    run = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    resume: list[str] = []
    for target in sorted(rng.sample(range(1, 8), 3)):
        args = ["train", str(path), "--out", str(run), "--threads", "1", *resume]
        kills += _kill_when(args, run / "metrics.jsonl", target, rng.randrange(0, 60))
        resume = ["--resume"]
        # After every kill: at most the newest checkpoint may be missing, none is corrupt.
        for ckpt in run.glob("ckpt-*"):
            assert (ckpt / "manifest.json").is_file(), ckpt
    assert kills >= 2
    try:
        assert main(["train", str(path), "--out", str(run), "--resume", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = load_file(reference / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    iterations = [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").open()]
    assert iterations == list(range(1, 9))
    assert sorted(p.name for p in run.iterdir()) == [
        "ckpt-000006",
        "ckpt-000008",
        "latest",
        "metrics.jsonl",
        "model.json",
        "model.safetensors",
    ]


@pytest.mark.slow
def test_parse_killed_then_rerun_skips_finished_images(synthetic_world, caplog, tmp_path):
    settings = {
        "backend": "efficientnet_lite0",
        "image_size": 64,
        "batch_size": 1,
        "base_objects": str(synthetic_world / "objects_train.json"),
        "base_parts": str(synthetic_world / "parts_base_train.json"),
        "base_image_root": str(synthetic_world),
        "base_categories": ["cat", "cow", "horse", "sheep", "bird", "aeroplane", "car"],
        "novel_objects": str(synthetic_world / "objects_train.json"),
        "novel_image_root": str(synthetic_world),
    }
    cfg = tmp_path / "parse.yaml"
    cfg.write_text(yaml.safe_dump({"parse": settings}))
    reference = tmp_path / "reference"
    assert main(["parse", str(cfg), "--out", str(reference)]) == 0
    expected = json.loads((reference / "parsed_parts.json").read_text())
    assert len(expected["images"]) >= 3

    out = tmp_path / "parsed"
    progress = out / "parsed_parts.json.progress.jsonl"
    # The fingerprint line, then one line per finished image: kill after the first image.
    assert _kill_when(["parse", str(cfg), "--out", str(out)], progress, 2, 0)
    assert not (out / "parsed_parts.json").exists()
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(["parse", str(cfg), "--out", str(out)]) == 0
    resumed = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert len(resumed) == 1
    done = int(resumed[0].split("resuming, ")[1].split(" of ")[0])
    assert 1 <= done < len(expected["images"])
    parsed = json.loads((out / "parsed_parts.json").read_text())
    assert parsed["annotations"] == expected["annotations"]
    assert [im["id"] for im in parsed["images"]] == [im["id"] for im in expected["images"]]
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary file left
