"""``vlpart label --ray``: the same training set as one process, on a Ray cluster this test
starts on 127.0.0.1 (2 CPUs, 2 segmenter actors) and the CLI joins by its address, also when an
actor is killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from label_helpers import VOCAB, make_photos

import vlpart

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster (head on 127.0.0.1, 2 CPUs), shut down after the module."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def _label(photos: Path, weights: Path, out: Path, **kwargs):
    return vlpart.label(
        [photos],
        out,
        weights=weights,
        vocabulary=VOCAB,
        min_score=0.0,
        formats=["coco", "yolo"],
        shard_size=1,
        recursive=True,
        **kwargs,
    )


def _same_set(a: Path, b: Path) -> None:
    for name in ("annotations.json", "skipped.txt", "data.yaml"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for folder in ("labels", "images"):
        names = sorted(p.name for p in (a / folder).iterdir())
        assert sorted(p.name for p in (b / folder).iterdir()) == names
        for n in names:
            assert (a / folder / n).read_bytes() == (b / folder / n).read_bytes()


@pytest.fixture(scope="module")
def single(label_weights, tmp_path_factory):
    photos = make_photos(tmp_path_factory.mktemp("ray_photos"), 7)
    out = tmp_path_factory.mktemp("single") / "set"
    _label(photos, label_weights, out)
    return photos, out


def test_the_cli_on_a_running_cluster_writes_what_one_process_writes(
    ray_cluster, single, label_weights, tmp_path
):
    photos, expected = single
    address = ray.get_runtime_context().gcs_address
    argv = ["label", str(photos), "-r", "--weights", str(label_weights), "--vocab", VOCAB]
    argv += ["--out", str(tmp_path / "ray"), "--min-score", "0", "--format", "coco,yolo"]
    argv += ["--shard-size", "1", "--ray", address, "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "vlpart.apps.cli", *argv], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(8 of 8 shards done by this run" in run.stdout
    _same_set(tmp_path / "ray", expected)


def _labeler_pids() -> list[int]:
    """Process ids of this machine's Ray workers that hold a ``ShardLabeler`` actor (Ray
    names them in their process title)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"ShardLabeler" in cmdline and entry.name != str(os.getpid()):
            pids.append(int(entry.name))
    return pids


def test_a_killed_actor_is_restarted_and_its_shard_redone(
    ray_cluster, single, label_weights, tmp_path
):
    photos, expected = single
    out = tmp_path / "ray"
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = _label(photos, label_weights, out, ray_address="local", workers=2)
        except Exception as err:  # reported by the assertion below
            result["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:
        shards = list((out / "shards").glob("*.json")) if (out / "shards").is_dir() else []
        pids = _labeler_pids()
        if shards and pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    thread.join(timeout=600)
    assert killed is not None, "no actor was killed: the run ended before one was seen"
    assert "error" not in result, result.get("error")
    assert result["summary"].shards_total == 8
    _same_set(out, expected)
