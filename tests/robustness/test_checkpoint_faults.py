"""Issue 20: a checkpoint is the weights and the training state together, or nothing.

The trainer is SIGKILLed at every disk operation of its checkpoint saves (before, between and
after the files, and half-way through every write); ``--resume`` must then end with exactly the
weights of an uninterrupted run, every time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("train_fault_driver.py")
FINAL_ENTRIES = ["ckpt-000004", "latest", "metrics.jsonl", "model.json", "model.safetensors"]


@pytest.mark.slow
def test_kill_at_every_checkpoint_write_boundary_then_resume(fast_train_yaml, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.run(
        [sys.executable, str(DRIVER), str(fast_train_yaml), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    kinds = {tuple(run["at"]) for run in report["runs"]}
    # Two saves (iterations 2 and 4): four files each, the pointer, the export, the pruning.
    assert report["points"] >= 25, report["points"]
    assert {("write", "before"), ("write", "half"), ("replace", "before")} <= kinds
    assert {("mkdir", "before"), ("link", "before"), ("rmtree", "before")} <= kinds
    assert ("train", "after") in kinds
    for run in report["runs"]:
        assert run["killed"], run
        assert run["resume_status"] == 0, run
        assert run["identical"], run
        assert run["metrics_iterations"] == [1, 2, 3, 4], run
        assert run["entries"] == FINAL_ENTRIES, run  # no temporary file survives
