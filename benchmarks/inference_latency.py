"""Inference latency per stage and peak RSS: vlpart (fp32 exact, bf16) against torchvision's
stock Mask R-CNN, each in its own process, in one run. Prints JSON with the ratios.

The image is a Pascal-Part photo resized to 1258×800 (the DESIGN.md measurement), the models are
random-init R50-FPN (vlpart with the released checkpoints' settings; torchvision's
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, box_score_thresh=0)`` so that it
too returns 100 detections). Stages are timed by wrapping the pipeline's modules and functions
(``layout``: the pyramid's copy for RoIAlign; ``paste``: masks to image pixels); ``rest`` is
everything else (box rescaling, bookkeeping, freeing the previous outputs).

    flock /tmp/cpu.lock python benchmarks/inference_latency.py --threads 2 --repeats 5 \\
        [--before-src /path/to/old/vlpart/src] [--compile]

``--before-src`` adds the same measurement of another vlpart source tree (e.g. a checkout of
an older commit), run through its own ``PartSegmenter.predict_tensors``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
PHOTO = Path(__file__).resolve().parents[2] / "shared/data/pascal_part_examples/2008_000700.jpg"
IMAGE_SIZE = (800, 1258)  # H, W
NUM_CLASSES = 20


def _image():
    import numpy as np
    import torch
    from PIL import Image

    if PHOTO.is_file():
        img = Image.open(PHOTO).convert("RGB").resize(IMAGE_SIZE[::-1], Image.BILINEAR)
        array = np.asarray(img).copy()
    else:
        array = np.random.default_rng(0).integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class _Timer:
    """Accumulates wall time per stage of one inference."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.current: dict[str, float] = defaultdict(float)

    def wrap(self, obj, attr: str, stage: str) -> None:
        fn = getattr(obj, attr)

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.current[stage] += time.perf_counter() - start
            return out

        setattr(obj, attr, timed)


def _vlpart_worker(args, timer: _Timer):
    import torch

    from vlpart.core.config import ModelConfig
    from vlpart.inference.segmenter import PartSegmenter
    from vlpart.model import build_model
    from vlpart.text.base import TextEncoder

    class Fixed(TextEncoder):
        identity, dim = "bench:fixed", 1024

        def _encode(self, prompts):
            return torch.randn(len(prompts), self.dim)

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone_weights=None))
    kwargs = {"precision": args.precision} if args.precision != "fp32" else {}
    seg = PartSegmenter(model, Fixed(), device=args.device, **kwargs)
    embeddings = torch.randn(NUM_CLASSES, 1024)
    image = _image()
    if hasattr(seg.backend, "inference_model"):  # the optimised path runs on a copy
        net = seg.backend.inference_model()
        if args.compile:
            net.backbone = torch.compile(net.backbone, options={"freezing": True})
    else:
        net = seg.model
    timer.wrap(net.transform, "forward", "transform")
    timer.wrap(net.backbone, "forward", "backbone")
    timer.wrap(net.rpn, "forward", "rpn")
    timer.wrap(net.roi_heads, "_predict_boxes", "roi_box")
    timer.wrap(net.roi_heads, "_select", "nms")
    timer.wrap(net.roi_heads.mask_roi_pool, "forward", "mask")
    timer.wrap(net.roi_heads.mask_head, "forward", "mask")
    timer.wrap(net.roi_heads.mask_predictor, "forward", "mask")
    import vlpart.inference.segmenter
    import vlpart.model.detector

    if hasattr(vlpart.model.detector, "contiguous_maps"):
        timer.wrap(vlpart.model.detector, "contiguous_maps", "layout")
    if hasattr(vlpart.inference.segmenter, "paste_masks_binary"):
        timer.wrap(vlpart.inference.segmenter, "paste_masks_binary", "paste")
    return lambda: len(seg.predict_tensors([image], embeddings)[0]["scores"])


def _torchvision_worker(args, timer: _Timer):
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0)
    model.eval().to(args.device)
    image = _image().to(args.device).float() / 255.0
    timer.wrap(model.transform, "forward", "transform")
    timer.wrap(model.backbone, "forward", "backbone")
    timer.wrap(model.rpn, "forward", "rpn")
    timer.wrap(model.roi_heads, "forward", "roi_heads")

    def run():
        with torch.inference_mode():
            return len(model([image])[0]["scores"])

    return run


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    timer = _Timer(sync)
    build = _torchvision_worker if args.impl == "torchvision" else _vlpart_worker
    run = build(args, timer)
    start = time.perf_counter()
    num = run()
    first = time.perf_counter() - start
    totals, stages = [], defaultdict(list)
    for _ in range(args.repeats):
        timer.current.clear()
        sync()
        start = time.perf_counter()
        num = run()
        sync()
        total = time.perf_counter() - start
        totals.append(total)
        for name, value in timer.current.items():
            stages[name].append(value)
        stages["rest"].append(total - sum(timer.current.values()))
    return {
        "median_s": round(statistics.median(totals), 4),
        "min_s": round(min(totals), 4),
        "first_call_s": round(first, 3),
        "stages_median_s": {k: round(statistics.median(v), 4) for k, v in stages.items()},
        "num_detections": num,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _run_worker(impl: str, src: Path, args, **extra) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        "--device",
        args.device,
    ]
    for key, value in extra.items():
        cmd += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--before-src", type=Path, help="another vlpart src tree to measure")
    parser.add_argument("--compile", action="store_true", help="also torch.compile's backbone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        args.impl = args.worker
        print(json.dumps(worker(args)))
        return
    results = {"torchvision": _run_worker("torchvision", REPO_SRC, args)}
    if args.before_src:
        results["vlpart_before"] = _run_worker("vlpart", args.before_src, args)
    results["vlpart_fp32"] = _run_worker("vlpart", REPO_SRC, args)
    results["vlpart_bf16"] = _run_worker("vlpart", REPO_SRC, args, precision="bf16")
    if args.compile:
        results["vlpart_fp32_compile"] = _run_worker("vlpart", REPO_SRC, args, compile=True)
    ratios = {}
    for ref_name in ("torchvision", "vlpart_before"):
        ref = results.get(ref_name, {}).get("median_s")
        for key, value in results.items():
            if ref and key != ref_name and "median_s" in value:
                ratios[f"{key}/{ref_name}"] = round(value["median_s"] / ref, 3)
    report = {
        "device": args.device,
        "threads": args.threads,
        "repeats": args.repeats,
        "image_hw": list(IMAGE_SIZE),
        "results": results,
        "ratios": ratios,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
