"""Throughput, time by stage, memory and the cost of a kill of ``vlpart label``; prints JSON.

Measured on generated noise images (``--size`` px squares) with the test suite's tiny detector
(random init, EfficientNet-Lite0 FPN-32 at 96 px, 10 detections, a mask head that draws
non-empty masks) and the MiniLM text encoder, so it measures the labelling machinery (decode,
model, RLE/polygon encoding, shard commits, merge, Ray scheduling), not a real model's speed.
Each run is a fresh process calling :func:`vlpart.label` (what ``vlpart label`` calls), one
torch thread per process or actor; ``--runs`` picks among:

* ``one``: one process. Its summary gives the seconds by stage (decode, model, encode, write,
  merge) from which ``projection`` extrapolates to N machines.
* ``ray``: ``--actors`` actors on a Ray started by the run on this machine.
* ``kill``: one process ``kill -9``-ed once half the shards are on disk, then run again; the
  time lost is (time to the kill + time of the resumed run) minus the ``one`` run's time.

Per run: wall seconds (from process start, so with start-up); ``labelling_seconds``, from the
first shard's start (its commit time minus a mean shard's time) to the last shard's commit, and
``images_per_s`` over it; peak RSS (``VmHWM``) of the driver and, with Ray, of the largest
actor. With ``--json FILE`` the runs are added to FILE (keyed by run and image count), so the
sizes can be measured by separate commands, and the projection is recomputed from FILE.

Usage (each command well under 12 min on the 2-core machine)::

    flock /tmp/cpu.lock python benchmarks/label_throughput.py --images 500 --runs one ray kill \\
        --json benchmarks/results/label_throughput.json
    flock /tmp/cpu.lock python benchmarks/label_throughput.py --images 5000 --runs one \\
        --json benchmarks/results/label_throughput.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

VOCAB = "dog;dog:head,torso"
TINY = {
    "backbone": "efficientnet_lite0",
    "backbone_weights": None,
    "fpn_channels": 32,
    "min_size": 96,
    "max_size": 96,
    "text_dim": 384,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 100,
    "mask_rois_per_image": 8,
    "score_thresh": 0.0,
    "detections_per_image": 10,
}
# The driver of one run: vlpart.label with the keyword arguments in argv[1]; prints the summary.
DRIVER = """
import dataclasses, json, sys
import vlpart
summary = vlpart.label(**json.loads(sys.argv[1]))
print(json.dumps({**dataclasses.asdict(summary), "stage_seconds": summary.stage_seconds()}))
"""
SIZE = 64  # side of the generated images by default (px)
# Machines and collection size of the projection.
PROJECT_MACHINES = (1, 10, 100, 1000)
PROJECT_IMAGES = 10**6


def _weights(root: Path) -> Path:
    from vlpart.core.config import config_from_dict
    from vlpart.model import build_model, save_checkpoint

    cfg = config_from_dict({"model": TINY}).model
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.normal_(0, 0.05)
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(0.5)
    return save_checkpoint(
        model, root / "model.safetensors", config=cfg, text_encoder="minilm:all-MiniLM-L6-v2"
    )


def _images(root: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(np.roll(base, i, axis=1)).save(root / f"img{i:05d}.jpg", quality=90)
    return root


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _actor_pids() -> list[int]:
    """This machine's Ray workers holding a ``ShardLabeler`` (Ray puts it in their title)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ShardLabeler" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _start(kwargs: dict, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(kwargs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _run(kwargs: dict, env: dict, *, ray: bool = False) -> dict:
    """One run to the end: its summary, seconds and peak RSS."""
    start = time.time()
    proc = _start(kwargs, env)
    peaks = {"driver": 0.0, "actor": 0.0}

    def watch() -> None:
        while proc.poll() is None:
            peaks["driver"] = max(peaks["driver"], _peak_rss_mb(proc.pid))
            if ray:
                for pid in _actor_pids():
                    peaks["actor"] = max(peaks["actor"], _peak_rss_mb(pid))
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    stdout, _ = proc.communicate()
    seconds = time.time() - start
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"label run {kwargs['out']} exited with {proc.returncode}")
    summary = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    shards = [s["decode"] + s["model"] + s["encode"] + s["write"] for s in summary["shard_seconds"]]
    commits = sorted(p.stat().st_mtime for p in Path(kwargs["out"], "shards").glob("*.json"))
    first_start = commits[0] - sum(shards) / len(shards)
    labelling = commits[-1] - first_start
    result = {
        "seconds": round(seconds, 1),
        "startup_seconds": round(first_start - start, 1),
        "labelling_seconds": round(labelling, 1),
        "images_per_s": round(summary["num_images"] / labelling, 2),
        "stage_seconds": {k: round(v, 4) for k, v in summary["stage_seconds"].items()},
        "driver_peak_rss_mb": round(peaks["driver"]),
    }
    if ray:
        result["actor_peak_rss_mb"] = round(peaks["actor"])
    return result


def _kill_at_half(kwargs: dict, env: dict, num_shards: int) -> float:
    """Seconds from start to a ``kill -9`` once half the shards are on disk."""
    start = time.time()
    proc = _start(kwargs, env)
    shards = Path(kwargs["out"], "shards")
    while proc.poll() is None:
        if shards.is_dir() and len(list(shards.glob("*.json"))) >= num_shards // 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    return time.time() - start


def _projection(runs: dict, actors: int) -> dict | None:
    """Images/s on N machines of ``actors`` actors each, from the single-process run's seconds
    by stage (per image, per actor), the Ray run's efficiency against ``actors`` independent
    processes, and the merge (one pass on the driver after the shards: the serial part). The
    stages and the efficiency come from the smallest image count with both runs, the merge's
    time per image from the largest single-process run (its longest, least noisy timing)."""
    both = [
        int(k[4:]) for k in runs if k[:4] == "one_" and k[4:].isdigit() and f"ray_{k[4:]}" in runs
    ]
    both = [n for n in both if runs[f"ray_{n}"]["actors"] == actors]
    if not both:
        return None
    images = min(both)
    one, on_ray = runs[f"one_{images}"], runs[f"ray_{images}"]
    stages = one["stage_seconds"]
    per_image = {k: stages[k] / images for k in ("decode", "model", "encode", "write")}
    shard_s = sum(per_image.values())
    efficiency = on_ray["images_per_s"] / (actors / shard_s)
    largest = max(int(k[4:]) for k in runs if k[:4] == "one_" and k[4:].isdigit())
    merge_s = runs[f"one_{largest}"]["stage_seconds"]["merge"] / largest
    machines = {}
    for n in PROJECT_MACHINES:
        seconds = PROJECT_IMAGES * (shard_s / (n * actors * efficiency) + merge_s)
        machines[str(n)] = round(PROJECT_IMAGES / seconds, 1)
    return {
        "from_runs": [f"one_{images}", f"ray_{images}", f"one_{largest} (merge)"],
        "model": "T(M, N) = M * (shard_s / (N * actors * ray_efficiency) + merge_s), per image",
        "ms_per_image": {k: round(1000 * v, 2) for k, v in per_image.items()},
        "merge_ms_per_image": round(1000 * merge_s, 3),
        "ray_efficiency": round(efficiency, 2),
        "actors_per_machine": actors,
        "images": PROJECT_IMAGES,
        "images_per_s_by_machines": machines,
        "merge_bound_images_per_s": round(1 / merge_s, 1),
        "machines_where_merge_equals_labelling": round(
            shard_s / (actors * efficiency * merge_s), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--runs", nargs="+", choices=("one", "ray", "kill"), default=["one"])
    parser.add_argument("--size", type=int, default=SIZE, help="side of the generated images")
    parser.add_argument("--shard-size", type=int, default=25)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--json", type=Path, help="add the runs to this results file")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs: dict = {}
    with tempfile.TemporaryDirectory(prefix="label_bench_") as tmp:
        root = Path(tmp)
        common = {
            "inputs": [str(_images(root / "images", args.images, args.size))],
            "weights": str(_weights(root)),
            "vocabulary": VOCAB,
            "min_score": 0.0,
            "shard_size": args.shard_size,
            "threads": 1,
        }
        n = args.images
        suffix = "" if args.size == SIZE else f"_{args.size}px"
        if "one" in args.runs or "kill" in args.runs:
            runs["one"] = _run({**common, "out": str(root / "one")}, env)
        if "ray" in args.runs:
            on_ray = {"ray_address": "local", "workers": args.actors, "out": str(root / "ray")}
            runs["ray"] = _run({**common, **on_ray}, env, ray=True)
        if "kill" in args.runs:
            killed = {**common, "out": str(root / "killed")}
            to_kill = _kill_at_half(killed, env, -(-n // args.shard_size))
            resumed = _run(killed, env)
            same = (root / "killed" / "annotations.json").read_bytes() == (
                root / "one" / "annotations.json"
            ).read_bytes()
            runs["kill"] = {
                "seconds_to_kill": round(to_kill, 1),
                "seconds_resumed_run": resumed["seconds"],
                "seconds_lost": round(to_kill + resumed["seconds"] - runs["one"]["seconds"], 1),
                "equal_to_uninterrupted": same,
            }
    report = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    report.update(
        {
            "command": "python benchmarks/label_throughput.py (see runs_commands)",
            "machine": f"{os.cpu_count()}-core shared CPU, loaded; torch {torch.__version__}",
            "note": "tiny random detector on 64 px noise: the labelling machinery, not a real "
            "model; speed only as ratios within one run",
            "settings": {"model_input": TINY["min_size"], "threads_per_process": 1},
        }
    )
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    command = " ".join(["python benchmarks/label_throughput.py", *sys.argv[1:]])
    for kind, value in runs.items():
        key = f"{kind}_{n}{suffix}"
        settings = {"images": n, "image_size": args.size, "shard_size": args.shard_size}
        if kind == "ray":
            settings["actors"] = args.actors
        report.setdefault("runs", {})[key] = {**settings, **value, "date": date}
        report.setdefault("runs_commands", {})[key] = command
    projection = _projection(report["runs"], args.actors)
    if projection is not None:
        report["projection"] = projection
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
