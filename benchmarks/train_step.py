"""Seconds per training step, split by stage, of the quickstart model, the R50 model and
torchvision's Mask R-CNN at the same batch and image size.

    python benchmarks/train_step.py [--steps 6] [--warmup 2] [--threads 1] \
        [--variants quickstart,tv_quickstart,r50,tv_r50] [--compare-src DIR] [--out FILE]

Each variant runs in its own subprocess (``--variant NAME`` runs one in this process), on a
small synthetic parts world drawn once into a temporary folder:

* ``quickstart``: ``configs/quickstart.yaml``'s model (EfficientNet-Lite0 with its packaged
  ImageNet weights, MiniLM text rows) on the base-parts source, 4 images of 128 px;
* ``r50``: the paper's R50 Mask R-CNN (default heads: 512 RoIs per image, 256-channel mask
  head; random backbone init, text rows 384-d) on the same data, 2 images of 256 px;
* ``quickstart_amp`` / ``r50_amp``: the same with ``train.amp: true`` (bfloat16 autocast on
  the CPU): other numerics, so their losses differ from fp32 beyond float rounding;
* ``tv_quickstart`` / ``tv_r50``: ``torchvision.models.detection.maskrcnn_resnet50_fpn(
  weights=None, weights_backbone=None)`` (trainable BatchNorm, every layer trained), same
  images, boxes, masks, batch and size, AdamW with the same learning rate.

Our variants step through the trainer's own ``_Run.step`` (everything ``vlpart train`` does per
iteration) on batches from its DataLoader. The first ``--warmup`` steps are not counted. Stages
(mean seconds per step): ``data`` (next batch from the loader), forward of each top-level
module (``transform``, ``backbone``, ``rpn``, ``roi_heads``) and inside them the heads
(``rpn.head``, ``box_roi_pool``, ``box_head``, ``box_predictor``, ``mask_roi_pool``,
``mask_head``, ``mask_predictor``); ``rpn.rest`` and ``roi_heads.rest`` are anchors, proposal
selection, matching, sampling, targets and the losses; ``backward``; ``optimizer`` (its
``step``); ``other`` is the rest of the step (loss sum, finiteness check, zero_grad, scheduler).
The per-step losses are printed too (``losses``): with ``--compare-src`` every variant also runs
with ``PYTHONPATH=DIR`` (an older checkout's ``src``), interleaved, and the two sets of losses
and step times are compared (``max_loss_diff``, ``speedup``; ``speedup_vs_compare_fp32``: a
``*_amp`` variant against the older checkout's fp32 step).

Prints one JSON object. Times are wall-clock on whatever else the machine is running: compare
numbers within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

VARIANTS = ("quickstart", "quickstart_amp", "tv_quickstart", "r50", "r50_amp", "tv_r50")
# (images per step, side in pixels) of each model's setting.
SETTINGS = {"quickstart": (4, 128), "r50": (2, 256)}
WORLD_IMAGES = 48
LR = 3.0e-4

HEAD_MODULES = (
    "rpn.head",
    "roi_heads.box_roi_pool",
    "roi_heads.box_head",
    "roi_heads.box_predictor",
    "roi_heads.mask_roi_pool",
    "roi_heads.mask_head",
    "roi_heads.mask_predictor",
)
TOP_MODULES = ("transform", "backbone", "rpn", "roi_heads")


class StageClock:
    """Wall time per named stage, summed over a step (CPU ops are synchronous)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: dict[str, list[float]] = defaultdict(list)

    def start(self, name: str) -> None:
        self._open[name].append(time.perf_counter())

    def stop(self, name: str) -> None:
        self.seconds[name] += time.perf_counter() - self._open[name].pop()

    def reset(self) -> dict[str, float]:
        out, self.seconds = dict(self.seconds), defaultdict(float)
        return out


def _hook_modules(model, clock: StageClock) -> None:
    modules = dict(model.named_modules())
    for name in TOP_MODULES + HEAD_MODULES:
        module = modules[name]
        module.register_forward_pre_hook(lambda *_, n=name: clock.start(n))
        module.register_forward_hook(lambda *_, n=name: clock.stop(n))


def _hook_backward(clock: StageClock) -> None:
    import torch

    backward = torch.Tensor.backward

    def timed(self, *args, **kwargs):
        clock.start("backward")
        try:
            return backward(self, *args, **kwargs)
        finally:
            clock.stop("backward")

    torch.Tensor.backward = timed


def _hook_optimizer(optimizer, clock: StageClock) -> None:
    step = optimizer.step

    def timed(*args, **kwargs):
        clock.start("optimizer")
        try:
            return step(*args, **kwargs)
        finally:
            clock.stop("optimizer")

    optimizer.step = timed


def _stages(raw: dict[str, float], total: float) -> dict[str, float]:
    """Exclusive stage times: heads inside their parents, ``rest`` = parent minus heads."""
    out = {"data": raw.get("data", 0.0)}
    for top in TOP_MODULES:
        inner = [h for h in HEAD_MODULES if h.startswith(top + ".")]
        for head in inner:
            out[head] = raw.get(head, 0.0)
        own = raw.get(top, 0.0) - sum(raw.get(h, 0.0) for h in inner)
        out[f"{top}.rest" if inner else top] = own
    out["backward"] = raw.get("backward", 0.0)
    out["optimizer"] = raw.get("optimizer", 0.0)
    counted = sum(raw.get(k, 0.0) for k in (*TOP_MODULES, "backward", "optimizer"))
    out["other"] = total - counted
    return out


def _world(root: Path) -> Path:
    from vlpart.apps.quickstart.synth import synthesize_world

    world = root / "world"
    if not (world / "world.json").is_file():
        synthesize_world(world, seed=0, num_images=WORLD_IMAGES, image_size=128)
    return world


def _config(world: Path, variant: str):
    from vlpart.apps.quickstart.run import load_quickstart_config
    from vlpart.core.config import config_from_dict

    model_name = variant.removesuffix("_amp")
    data = load_quickstart_config()
    batch, size = SETTINGS[model_name]
    source = next(s for s in data["data"] if s["name"] == "base_parts")
    source.update(
        ann_file=str(world / source["ann_file"]),
        image_root=str(world),
        batch_size=batch,
        min_size=[size],
        max_size=size,
        ratio=1.0,
    )
    data["data"] = [source]
    data["train"].update(
        max_iter=10_000, warmup_iters=0, lr=LR, seed=0, amp=variant.endswith("_amp")
    )
    if model_name == "r50":
        text_dim = data["model"]["text_dim"]
        data["model"] = {
            "backbone": "resnet50",
            "backbone_weights": None,
            "text_dim": text_dim,
            "min_size": size,
            "max_size": size,
        }
    return config_from_dict(data, source="benchmarks/train_step.py")


def _run_ours(model_name: str, world: Path, steps: int, warmup: int) -> dict:
    import torch

    from vlpart.core.distributed import DistInfo
    from vlpart.training.sources import build_loader, build_sampler, build_sources
    from vlpart.training.train import _build_run

    cfg = _config(world, model_name)
    dist = DistInfo()
    torch.manual_seed(cfg.train.seed)
    sources = build_sources(cfg)
    run = _build_run(cfg, world / "out", dist, sources, checkpoint=None, init_weights=None)
    sampler = build_sampler(sources, cfg, dist)
    sampler.set_epoch(0, start_batch=0)
    batches = iter(build_loader(sources, sampler, cfg.train))
    clock = StageClock()
    _hook_modules(run.model, clock)
    _hook_backward(clock)
    _hook_optimizer(run.optimizer, clock)
    records = []
    for _ in range(warmup + steps):
        clock.reset()
        start = time.perf_counter()
        clock.start("data")
        images, targets = next(batches)
        clock.stop("data")
        _, total, _ = run.step(images, targets)
        seconds = time.perf_counter() - start
        records.append((seconds, clock.reset(), float(total)))
    return _summary(records, warmup)


def _run_torchvision(model_name: str, world: Path, steps: int, warmup: int) -> dict:
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from vlpart.core.distributed import DistInfo
    from vlpart.training.sources import build_loader, build_sampler, build_sources

    cfg = _config(world, model_name)
    batch, size = SETTINGS[model_name]
    dist = DistInfo()
    torch.manual_seed(0)
    sources = build_sources(cfg)
    sampler = build_sampler(sources, cfg, dist)
    sampler.set_epoch(0, start_batch=0)
    batches = iter(build_loader(sources, sampler, cfg.train))
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=size, max_size=size
    ).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=cfg.train.weight_decay)
    clock = StageClock()
    _hook_modules(model, clock)
    _hook_backward(clock)
    _hook_optimizer(optimizer, clock)
    records = []
    for _ in range(warmup + steps):
        clock.reset()
        start = time.perf_counter()
        clock.start("data")
        images, targets = next(batches)
        images = [im.float() / 255 for im in images]
        targets = [
            {"boxes": t["boxes"], "labels": t["labels"] + 1, "masks": t["masks"]} for t in targets
        ]
        clock.stop("data")
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        seconds = time.perf_counter() - start
        records.append((seconds, clock.reset(), float(total)))
    return _summary(records, warmup)


def _summary(records: list[tuple[float, dict, float]], warmup: int) -> dict:
    timed = records[warmup:]
    step_s = [r[0] for r in timed]
    stages = [_stages(raw, total) for total, raw, _ in timed]
    return {
        "step_s": statistics.median(step_s),
        "step_s_mean": statistics.fmean(step_s),
        "step_s_all": [round(s, 4) for s in step_s],
        "stages_s": {k: round(statistics.fmean(s[k] for s in stages), 4) for k in stages[0]},
        "losses": [r[2] for r in records],
    }


def run_variant(name: str, root: Path, steps: int, warmup: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    world = _world(root)
    if name.startswith("tv_"):
        result = _run_torchvision(name[3:], world, steps, warmup)
    else:
        result = _run_ours(name, world, steps, warmup)
    batch, size = SETTINGS[name.removeprefix("tv_").removesuffix("_amp")]
    return {"variant": name, "batch": batch, "image_size": size, "threads": threads, **result}


def _subprocess(name: str, args, root: Path, src: str | None) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        __file__,
        "--variant",
        name,
        "--root",
        str(root),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--root", help="folder for the synthetic world (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (quickstart: 1)")
    parser.add_argument("--compare-src", help="also run each variant with this src on PYTHONPATH")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.variant is not None:
        result = run_variant(args.variant, Path(args.root), args.steps, args.warmup, args.threads)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        results: dict[str, dict] = {}
        for name in args.variants.split(","):
            results[name] = _subprocess(name, args, root, None)
            if args.compare_src and not name.startswith("tv_"):
                results[name + "@compare"] = _subprocess(name, args, root, args.compare_src)
    report = {
        "command": "python benchmarks/train_step.py " + " ".join(sys.argv[1:]),
        "torch_threads": args.threads,
        "results": results,
    }
    for name in ("quickstart", "r50"):
        if name in results and name + "_amp" in results:
            results[name + "_amp"]["vs_fp32"] = round(
                results[name]["step_s"] / results[name + "_amp"]["step_s"], 3
            )
        if name in results and "tv_" + name in results:
            results[name]["vs_torchvision"] = round(
                results["tv_" + name]["step_s"] / results[name]["step_s"], 3
            )
    for name in [n for n in results if n + "@compare" in results]:
        new, old = results[name], results[name + "@compare"]
        new["speedup"] = round(old["step_s"] / new["step_s"], 3)
        new["max_loss_diff"] = max(
            abs(a - b) for a, b in zip(new["losses"], old["losses"], strict=True)
        )
    for name in ("quickstart", "r50"):
        # bf16 now against the fp32 step of the older checkout: the speed-up at other numerics.
        if name + "_amp" in results and name + "@compare" in results:
            results[name + "_amp"]["speedup_vs_compare_fp32"] = round(
                results[name + "@compare"]["step_s"] / results[name + "_amp"]["step_s"], 3
            )
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
