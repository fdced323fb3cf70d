"""Throughput, memory and the cost of a kill of ``vlpart label``; prints JSON.

Measured on generated noise images (``--size`` px squares) with the test suite's tiny detector
(random init, EfficientNet-Lite0 FPN-32 at 96 px, 10 detections, a mask head that draws
non-empty masks) and the MiniLM text encoder, so it measures the labelling machinery (decode,
model, RLE/polygon encoding, shard commits, merge, Ray scheduling), not a real model's speed:

* images/s over ``--images`` images: one process; ``--actors`` Ray actors (1 thread each) on a
  local Ray started by the run (the Ray time includes starting Ray and the actors);
* peak RSS (``VmHWM``) of the process that labels: the driver of a single-process run and a Ray
  actor, at ``--images`` and at ``--images-large`` images (flat when memory does not grow with
  the number of images);
* the time lost to a ``kill -9`` at 50 %: (time to the kill + time of the resumed run) minus the
  uninterrupted run's time.

Usage::

    flock /tmp/cpu.lock python benchmarks/label_throughput.py --images 500 --images-large 5000
"""

from __future__ import annotations

import argparse
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


def _command(images: Path, weights: Path, out: Path, shard_size: int, extra=()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vlpart.apps.cli",
        "label",
        str(images),
        "--weights",
        str(weights),
        "--vocab",
        VOCAB,
        "--out",
        str(out),
        "--min-score",
        "0",
        "--shard-size",
        str(shard_size),
        "--threads",
        "1",
        *extra,
    ]


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ShardLabeler" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _run(cmd: list[str], env: dict, *, watch_actors: bool = False) -> dict:
    """Run ``cmd``; its seconds, the driver's peak RSS and (with Ray) the largest actor's."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks = {"driver": 0.0, "actor": 0.0}

    def watch() -> None:
        while proc.poll() is None:
            peaks["driver"] = max(peaks["driver"], _peak_rss_mb(proc.pid))
            if watch_actors:
                for pid in _actor_pids():
                    peaks["actor"] = max(peaks["actor"], _peak_rss_mb(pid))
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    rc = proc.wait()
    thread.join()
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {rc}")
    result = {"seconds": round(time.perf_counter() - start, 2)}
    result["driver_peak_rss_mb"] = round(peaks["driver"], 1)
    if watch_actors:
        result["actor_peak_rss_mb"] = round(peaks["actor"], 1)
    return result


def _kill_at_half(cmd: list[str], env: dict, out: Path, num_shards: int) -> float:
    """Seconds from start to a kill -9 once half the shards are on disk."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        shards = out / "shards"
        if shards.is_dir() and len(list(shards.glob("*.json"))) >= num_shards // 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--images-large", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64, help="side of the generated images")
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="label_bench_") as tmp:
        root = Path(tmp)
        weights = _weights(root)
        small = _images(root / "small", args.images, args.size)
        large = _images(root / "large", args.images_large, args.size)
        shard = args.shard_size
        one = _run(_command(small, weights, root / "one", shard), env)
        ray_extra = ("--ray", "--workers", str(args.actors))
        on_ray = _run(
            _command(small, weights, root / "ray", shard, ray_extra), env, watch_actors=True
        )
        one_large = _run(_command(large, weights, root / "one_large", shard), env)
        ray_large = _run(
            _command(large, weights, root / "ray_large", shard, ray_extra), env, watch_actors=True
        )
        num_shards = -(-args.images // shard)
        killed_out = root / "killed"
        cmd = _command(small, weights, killed_out, shard)
        to_kill = _kill_at_half(cmd, env, killed_out, num_shards)
        resumed = _run(cmd, env)
        same = (killed_out / "annotations.json").read_bytes() == (
            root / "one" / "annotations.json"
        ).read_bytes()
    report = {
        "machine": f"{os.cpu_count()} CPUs (shared), torch {torch.__version__}",
        "images": args.images,
        "images_large": args.images_large,
        "image_size": args.size,
        "model_input": TINY["min_size"],
        "shard_size": shard,
        "single_process": {**one, "images_per_s": round(args.images / one["seconds"], 2)},
        f"ray_{args.actors}_actors": {
            **on_ray,
            "images_per_s": round(args.images / on_ray["seconds"], 2),
        },
        "single_process_large": {
            **one_large,
            "images_per_s": round(args.images_large / one_large["seconds"], 2),
        },
        f"ray_{args.actors}_actors_large": {
            **ray_large,
            "images_per_s": round(args.images_large / ray_large["seconds"], 2),
        },
        "kill_9_at_50_percent": {
            "seconds_to_kill": round(to_kill, 2),
            "seconds_resumed_run": resumed["seconds"],
            "seconds_lost": round(to_kill + resumed["seconds"] - one["seconds"], 2),
            "equal_to_uninterrupted": same,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
