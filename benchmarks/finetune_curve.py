"""Few-shot curve of ``vlpart finetune`` (prints JSON; also written to ``--out``/curve.json).

1. Train a short quickstart-style base model (EfficientNet-Lite0, MiniLM, 128 px) on the base
   parts of a synthetic world (seed 0): it has never seen a part of ``--novel`` (dog).
2. From a fresh world (seed 1), fine-tune it on K images that contain the novel object, only
   the novel object's parts annotated (``dog:head``, ... as a user writes them), with the
   default plan (``--iterations`` unless given), with and without keep-known.
3. On the fresh world's held-out images: the novel parts' mask AP50 and the base parts' mask
   AP50 (forgetting), start and fine-tuned; wall time of each run.
4. ``--reference K``: the issue's hand-written run on the same data, for comparison: the
   quickstart YAML (lr 3e-4 after a 50-iteration warm-up, batch 4, nothing frozen beyond the
   trunk's own, no decay) with one part source, the K-image file, 150 iterations, started with
   ``vlpart train --init-weights`` (no keep-known).
5. Speed from an official-layout R50 (800 px, random weights): the plan's measured seconds per
   iteration and its estimate for the largest K.

Usage: ``python benchmarks/finetune_curve.py --out /tmp/curve [--ks 1 4 16] [--base-iters 300]``

A later call with the same ``--out`` reuses the worlds and the base model and merges its runs
into ``curve.json`` (so the Ks can run in separate calls; ``--keep-known on|off`` runs one of
the two settings only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from vlpart.apps.quickstart.run import load_quickstart_config
from vlpart.apps.quickstart.synth import synthesize_world
from vlpart.core.config import config_from_dict
from vlpart.core.vocab import name_key
from vlpart.evaluation.model_eval import evaluate_model
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import build_model, load_checkpoint, save_checkpoint
from vlpart.text import TextOptions
from vlpart.training.finetune import finetune, plan_finetune
from vlpart.training.train import train

SIZE = 128
REFERENCE_ITERATIONS = 150


def _base_model(world: Path, out: Path, iterations: int) -> Path:
    data = load_quickstart_config()
    data["model"].update(min_size=SIZE, max_size=SIZE)
    src = next(s for s in data["data"] if s["name"] == "base_parts")
    src.update(ann_file=str(world / src["ann_file"]), image_root=str(world))
    data["data"] = [src]
    data["train"].update(
        max_iter=iterations, warmup_iters=min(50, iterations // 4), lr_steps=[int(iterations * 0.8)]
    )
    return train(config_from_dict(data), out)


def _reference(start: Path, ann: Path, world: Path, out: Path, iterations: int) -> Path:
    """The hand-written run: the quickstart YAML, its one source replaced by ``ann``."""
    data = load_quickstart_config()
    data["model"].update(min_size=SIZE, max_size=SIZE, backbone_weights=None)
    src = {**data["data"][0], "name": "mine", "ann_file": str(ann), "image_root": str(world)}
    data["data"] = [src]
    data["train"].update(max_iter=iterations, checkpoint_period=iterations)
    return train(config_from_dict(data), out, init_weights=start)


def _few_shot_file(world: Path, novel: str, k: int, out: Path) -> Path | None:
    """The first K training images of ``world`` that contain ``novel`` parts, only those
    annotated (``world`` is drawn with no novel split, so its training file has every part);
    None when fewer than K training images contain it."""
    data = json.loads((world / "parts_base_train.json").read_text())
    cats = [c for c in data["categories"] if name_key(c["name"]).startswith(novel + " ")]
    ids = {c["id"] for c in cats}
    anns = [a for a in data["annotations"] if a["category_id"] in ids]
    chosen = sorted({a["image_id"] for a in anns})[:k]
    if len(chosen) < k:
        return None
    path = out / f"{novel}_k{k}.json"
    data = {
        "images": [i for i in data["images"] if i["id"] in set(chosen)],
        "annotations": [a for a in anns if a["image_id"] in set(chosen)],
        "categories": [{"id": c["id"], "name": c["name"]} for c in cats],
    }
    path.write_text(json.dumps(data))
    return path


def _val_file(world: Path, novel: str, out: Path) -> Path:
    data = json.loads((world / "parts_val.json").read_text())
    cats = [c for c in data["categories"] if name_key(c["name"]).startswith(novel + " ")]
    ids = {c["id"] for c in cats}
    data["categories"] = [{"id": c["id"], "name": c["name"]} for c in cats]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in ids]
    path = out / f"{novel}_val.json"
    path.write_text(json.dumps(data))
    return path


def _scores(weights: Path, world: Path, novel: str, base: list[str]) -> dict[str, float]:
    """Mask AP50 (%) on ``world``'s held-out images: mean over ``novel``'s parts, and over the
    parts of the ``base`` objects the start was trained on."""
    model, info = load_checkpoint(weights)
    seg = PartSegmenter(model, TextOptions().build(recorded=info.text_encoder), info=info)
    report = evaluate_model(seg, world / "parts_val.json", world, progress=False)
    rows = [r for r in report.categories if r.num_gt > 0]
    novel_rows = [r.ap50["segm"] for r in rows if name_key(r.object) == novel]
    base_rows = [r.ap50["segm"] for r in rows if r.object in base]
    return {
        "novel_part_AP50": round(100 * sum(novel_rows) / len(novel_rows), 2),
        "base_part_AP50": round(100 * sum(base_rows) / len(base_rows), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ks", type=int, nargs="*", default=[1, 4, 16])
    p.add_argument("--base-iters", type=int, default=300)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--novel", default="dog")
    p.add_argument("--skip-r50", action="store_true")
    p.add_argument("--reference", type=int, metavar="K", help="also the hand-written run on K")
    p.add_argument("--reference-iters", type=int, default=REFERENCE_ITERATIONS)
    p.add_argument("--keep-known", choices=("both", "on", "off"), default="both")
    args = p.parse_args()
    torch.manual_seed(0)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    curve = out / "curve.json"
    previous = json.loads(curve.read_text()) if curve.is_file() else {}
    result: dict = {"machine": "2 shared CPU cores", "torch_threads": torch.get_num_threads()}

    def dump() -> None:
        curve.write_text(json.dumps(result, indent=1))

    base_world, fresh = out / "world0", out / "world1"
    if not (base_world / "world.json").is_file():
        synthesize_world(base_world, seed=0, num_images=args.images, image_size=SIZE)
    if not (fresh / "world.json").is_file():  # every part in its training file
        synthesize_world(fresh, seed=1, num_images=args.images, image_size=SIZE, novel_objects=())
    base_objects = json.loads((base_world / "world.json").read_text())["base_objects"]
    started = time.perf_counter()
    base = out / "base"
    weights = base / "model.safetensors"
    if weights.is_file() and "base" in previous:
        result["base"], result["start"] = previous["base"], previous["start"]
    else:
        weights = _base_model(base_world, base, args.base_iters)
        result["base"] = {
            "iterations": args.base_iters,
            "seconds": round(time.perf_counter() - started, 1),
        }
        result["start"] = _scores(weights, fresh, args.novel, base_objects)
    keeps = {"both": (True, False), "on": (True,), "off": (False,)}[args.keep_known]
    result["runs"] = [
        r for r in previous.get("runs", []) if r["K"] not in args.ks or r["keep_known"] not in keeps
    ]
    if not args.skip_r50:  # before the runs: seconds, and a cut-off run still has it
        result["r50_speed"] = _r50_speed(fresh, out, max(args.ks), args.novel)
    elif "r50_speed" in previous:
        result["r50_speed"] = previous["r50_speed"]
    dump()
    val = _val_file(fresh, args.novel, out)
    for k in args.ks:
        ann = _few_shot_file(fresh, args.novel, k, out)
        if ann is None:
            result["runs"].append({"K": k, "skipped": f"fewer than {k} images with {args.novel}"})
            continue
        for keep in keeps:
            run = out / f"k{k}_{'keep' if keep else 'plain'}"
            shutil.rmtree(run, ignore_errors=True)
            t0 = time.perf_counter()
            r = finetune(
                ann,
                fresh,
                start=weights,
                out=run,
                val_file=val,
                iterations=args.iterations,
                keep_known=keep,
            )
            wall = time.perf_counter() - t0
            result["runs"].append(
                {
                    "K": k,
                    "keep_known": keep,
                    "iterations": r["plan"]["iterations"],
                    "lr": r["plan"]["lr"],
                    "frozen": r["plan"]["freeze"],
                    "wall_seconds": round(wall, 1),
                    "train_seconds": r["train_seconds"],
                    "known_added": r["known_added"],
                    **_scores(run / "model.safetensors", fresh, args.novel, base_objects),
                }
            )
            result["runs"].sort(key=lambda r: (r["K"], not r.get("keep_known")))
            dump()
    if args.reference:
        result["reference"] = _reference_run(args, weights, fresh, out, base_objects)
    elif "reference" in previous:
        result["reference"] = previous["reference"]
    dump()
    print(json.dumps(result, indent=1))


def _reference_run(args, weights: Path, fresh: Path, out: Path, base_objects: list[str]) -> dict:
    ann = _few_shot_file(fresh, args.novel, args.reference, out)
    run = out / f"reference_k{args.reference}"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    tuned = _reference(weights, ann, fresh, run, args.reference_iters)
    return {
        "K": args.reference,
        "recipe": "configs/quickstart.yaml train block (lr 3e-4, warm-up 50, batch 4, no decay)",
        "iterations": args.reference_iters,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        **_scores(tuned, fresh, args.novel, base_objects),
    }


def _r50_speed(world: Path, out: Path, k: int, novel: str) -> dict:
    """Seconds per fine-tuning iteration of an official-layout R50 (800 px, random weights,
    MiniLM-width text rows as no CLIP is available offline)."""
    cfg = config_from_dict({"model": {"backbone_weights": None, "text_dim": 384}}).model
    path = save_checkpoint(
        build_model(cfg), out / "r50" / "model.safetensors", config=cfg,
        text_encoder="minilm:all-MiniLM-L6-v2",
    )  # fmt: skip
    ann = _few_shot_file(world, novel, k, out) or _few_shot_file(world, novel, 1, out)
    plan = plan_finetune(ann, world, start=path)
    return {
        "K": plan.num_annotated,
        "min_size": cfg.min_size,
        "batch_size": plan.batch_size,
        "iterations": plan.iterations,
        "seconds_per_iteration": round(plan.seconds_per_iteration, 2),
        "estimated_minutes": round(plan.estimated_seconds / 60, 1),
    }


if __name__ == "__main__":
    main()
