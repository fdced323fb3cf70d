"""How the ``vlpart finetune`` defaults were chosen: variants scored on a validation split.

Reuses the worlds and the base model of ``benchmarks/finetune_curve.py`` (run it first with the
same ``--out``). Fine-tunes on the same K-image file as the curve, then scores the dog parts' and
the base parts' mask AP50 on a validation split of the fresh world's *training* images: those
after its K-th image with a dog (no K-image file uses them; the curve's held-out images are never
read here), every one with a dog plus as many without. Each variant sets module constants of
:mod:`vlpart.training.finetune` / ``finetune_data`` for one run; ``reference`` is the issue's
hand-written run (``finetune_curve._reference``: the quickstart YAML, 150 iterations) and
``start`` scores the starting model. ``--mix`` also scores weight interpolations
``start + a (fine-tuned - start)`` of the default run.

(Before 7 Dec 2026 the split was the first 120 training images after the 16th with a dog; the
K = 16 rows of ``docs/finetune.md`` come from that rule.)

Usage: ``python benchmarks/finetune_tune.py --out /tmp/curve --k 16 --variants default lr5e-5``
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import finetune_curve as curve
import torch

from vlpart.core.vocab import name_key
from vlpart.evaluation.model_eval import evaluate_model
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import load_checkpoint
from vlpart.text import TextOptions
from vlpart.training import finetune as ft
from vlpart.training import finetune_data as ftd

VARIANTS = {
    "default": {},
    "lr5e-5": {"FINETUNE_LR": 5e-5},
    "lr3e-4": {"FINETUNE_LR": 3e-4},
    "unfrozen": {"SMALL_DATA_FREEZE": ()},
    "lr3e-4_unfrozen": {"FINETUNE_LR": 3e-4, "SMALL_DATA_FREEZE": ()},
    "epochs40": {"EPOCHS": 40},
    "pseudo0.3": {"PSEUDO_LABEL_SCORE": 0.3},
    # keep-known before 7 Dec 2026: also the start's detections on the file's own instances
    "known_overlapping": {"PSEUDO_LABEL_MAX_IOU": float("inf")},
}


def _validation_file(world: Path, novel: str, out: Path, k: int) -> Path:
    data = json.loads((world / "parts_base_train.json").read_text())
    ids = {c["id"] for c in data["categories"] if name_key(c["name"]).startswith(novel + " ")}
    with_novel = sorted({a["image_id"] for a in data["annotations"] if a["category_id"] in ids})
    after = {i["id"] for i in data["images"] if i["id"] > with_novel[k - 1]}
    dogs = after & set(with_novel)
    keep = dogs | set(sorted(after - dogs)[: len(dogs)])
    data["images"] = [i for i in data["images"] if i["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = out / f"tune_val_k{k}.json"
    path.write_text(json.dumps(data))
    return path


def _scores(model, info, val: Path, world: Path, novel: str, base: list[str]) -> dict:
    seg = PartSegmenter(model, TextOptions().build(recorded=info.text_encoder), info=info)
    rows = [r for r in evaluate_model(seg, val, world, progress=False).categories if r.num_gt]
    novel_rows = [r.ap50["segm"] for r in rows if name_key(r.object) == novel]
    base_rows = [r.ap50["segm"] for r in rows if r.object in base]
    return {
        "novel_part_AP50": round(100 * sum(novel_rows) / len(novel_rows), 2),
        "base_part_AP50": round(100 * sum(base_rows) / len(base_rows), 2),
    }


def _report_scores(categories: dict, novel: str, base: list[str]) -> dict:
    """The same two means from a fine-tuning report's per-category mask AP50 (categories
    without ground truth have None)."""
    rows = {n: c["AP50"] for n, c in categories.items() if c["AP50"] is not None}
    novel_rows = [v for n, v in rows.items() if n.split(":")[0] == novel]
    base_rows = [v for n, v in rows.items() if n.split(":")[0] in base]
    return {
        "novel_part_AP50": round(sum(novel_rows) / max(1, len(novel_rows)), 2),
        "base_part_AP50": round(sum(base_rows) / max(1, len(base_rows)), 2),
    }


def _mix(start: Path, tuned: Path, alpha: float):
    """``start + alpha (tuned - start)`` as a model, with the tuned sidecar."""
    model, _ = load_checkpoint(start)
    other, info = load_checkpoint(tuned)
    a, b = model.state_dict(), other.state_dict()
    model.load_state_dict(
        {k: a[k] + alpha * (b[k] - a[k]) if a[k].is_floating_point() else b[k] for k in a}
    )
    return model, info


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--novel", default="dog")
    p.add_argument(
        "--variants", nargs="+", default=["default"], choices=sorted([*VARIANTS, "reference"])
    )
    p.add_argument("--mix", type=float, nargs="*", default=[])
    args = p.parse_args()
    torch.manual_seed(0)
    out, fresh = args.out, args.out / "world1"
    start = out / "base" / "model.safetensors"
    base_objects = json.loads((out / "world0" / "world.json").read_text())["base_objects"]
    val = _validation_file(fresh, args.novel, out, args.k)
    ann = out / f"{args.novel}_k{args.k}.json"
    if not ann.is_file():
        ann = curve._few_shot_file(fresh, args.novel, args.k, out)
    path = out / "tune.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    key = f"K{args.k}"
    rows = result.setdefault(key, {})
    if "start" not in rows:
        rows["start"] = _scores(*load_checkpoint(start), val, fresh, args.novel, base_objects)
    for name in args.variants:
        curve_run = out / f"k{args.k}_keep" / "model.safetensors"
        if name == "default" and curve_run.is_file():  # the curve's own run: score it only
            rows[name] = _scores(*load_checkpoint(curve_run), val, fresh, args.novel, base_objects)
            path.write_text(json.dumps(result, indent=1))
            continue
        run = out / f"tune_k{args.k}_{name}"
        shutil.rmtree(run, ignore_errors=True)
        if name == "reference":
            t0 = time.perf_counter()
            tuned = curve._reference(start, ann, fresh, run, curve.REFERENCE_ITERATIONS)
            rows[name] = {
                "iterations": curve.REFERENCE_ITERATIONS,
                "wall_seconds": round(time.perf_counter() - t0, 1),
                **_scores(*load_checkpoint(tuned), val, fresh, args.novel, base_objects),
            }
            path.write_text(json.dumps(result, indent=1))
            continue
        saved = {}
        for attr, value in VARIANTS[name].items():
            module = ftd if hasattr(ftd, attr) else ft
            saved[(module, attr)] = getattr(module, attr)
            setattr(module, attr, value)
        t0 = time.perf_counter()
        try:
            r = ft.finetune(ann, fresh, start=start, out=run, val_file=val)
        finally:
            for (module, attr), value in saved.items():
                setattr(module, attr, value)
        after = r["after"]["mask"]["categories"]
        rows[name] = {
            "iterations": r["plan"]["iterations"],
            "wall_seconds": round(time.perf_counter() - t0, 1),
            **_report_scores(after, args.novel, base_objects),
        }
        path.write_text(json.dumps(result, indent=1))
    for alpha in args.mix:
        tuned = out / f"tune_k{args.k}_default" / "model.safetensors"
        model, info = _mix(start, tuned, alpha)
        rows[f"default_mix{alpha:g}"] = _scores(model, info, val, fresh, args.novel, base_objects)
        path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
