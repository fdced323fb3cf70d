"""``vlpart quickstart``: the paper's cross-category protocol (its Table 4) in miniature, offline.

1. Draw the synthetic parts world (novel objects: dog and bus).
2. Train three detectors, offline models only (EfficientNet-Lite0 with its packaged ImageNet
   weights, MiniLM text embeddings), each on the same number of base-part batches; the added
   sources come on top of them (so rows B and C train for more iterations):
   A. base parts;  B. + object boxes/masks of all objects and image labels;
   C. + parts parsed from the novel objects' instances (dense correspondence to base objects,
      EfficientNet features, boxes snapped to detector B's proposals).
3. Evaluate each on the held-out images with all parts (base and novel): mask AP and AP50.
4. Write ``report.md`` (table, settings, timings, overlays of novel-part prompts on held-out
   images), ``metrics.json`` and the final model C as ``model.safetensors`` (+ ``model.json``).

The run is deterministic for a seed. The schedule is fixed unless the budget cannot hold it: a
short timing run first measures this machine's training speed, and the part batches of all three
rows are cut equally (and reported) when the default would overrun ``budget_minutes``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vlpart._io import read_image, write_json_atomic
from vlpart.coco import load_coco
from vlpart.config import Config, ParsingConfig, config_from_dict
from vlpart.data.synth import synthesize_world
from vlpart.engine.evaluate import EvalReport
from vlpart.engine.inference import evaluate_model
from vlpart.engine.parse import build_base_bank, parse_novel_objects
from vlpart.engine.train import build_sources, train
from vlpart.model import build_model, load_checkpoint
from vlpart.parsing import build_feature_extractor
from vlpart.predictor import PartSegmenter
from vlpart.text import build_text_encoder
from vlpart.vocab import load_builtin, parse_vocabulary

__all__ = [
    "QuickstartSettings",
    "RowResult",
    "budget_iterations",
    "row_iterations",
    "run_quickstart",
]

logger = logging.getLogger(__name__)

ROWS = (
    ("A", "base parts"),
    ("B", "+ object data (boxes, masks, image labels)"),
    ("C", "+ parsed novel parts"),
)
RENDER_PROMPTS = "dog:head,torso,leg,tail,ear; bus:wheel,window,door,headlight"
NUM_RENDERS = 4
RENDER_SCALE = 4
TIMING_STEPS = 4
# Side that object crops are resized to for parsing features (a multiple of 32).
PARSE_IMAGE_SIZE = 128
# Share of the budget for the three trainings; the rest covers world, parsing and evaluation.
TRAIN_SHARE = 0.75
# Batch ratios of the sources (base parts first); row iterations grow with the sources added.
SOURCE_RATIOS = {"base_parts": 2.0, "objects": 1.0, "image_labels": 0.5, "parsed_parts": 0.5}
ROW_SOURCES = {
    "A": ("base_parts",),
    "B": ("base_parts", "objects", "image_labels"),
    "C": ("base_parts", "objects", "image_labels", "parsed_parts"),
}


@dataclass
class QuickstartSettings:
    """Sizes of the miniature experiment (the defaults are what ``vlpart quickstart`` runs)."""

    seed: int = 0
    num_images: int = 400
    image_size: int = 128
    # Base-part batches per row; the other sources' batches come on top (SOURCE_RATIOS).
    part_iterations: int = 300
    batch_size: int = 4
    budget_minutes: float = 15.0
    parse_backend: str = "efficientnet_lite0"
    parse_weights: str | None = "pretrained"


@dataclass
class RowResult:
    """One row of the table: mask and box AP (percent) on all / base / novel parts."""

    row: str
    data: str
    iterations: int
    train_seconds: float
    mask: dict[str, float | None] = field(default_factory=dict)
    box: dict[str, float | None] = field(default_factory=dict)


def _model_config(s: QuickstartSettings) -> dict:
    return {
        "backbone": "efficientnet_lite0",
        "backbone_weights": "imagenet",
        "text_dim": 384,
        "fpn_channels": 64,
        "mask_head_dim": 64,
        "min_size": s.image_size,
        "max_size": s.image_size,
        "roi_batch_size_per_image": 128,
        "mask_rois_per_image": 16,
        "rpn_pre_nms_top_n_train": 600,
        "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 600,
        "rpn_post_nms_top_n_test": 300,
        "score_thresh": 0.01,
        "detections_per_image": 50,
    }


def row_iterations(row: str, part_iterations: int) -> int:
    """Iterations of ``row`` that hold ``part_iterations`` base-part batches on average."""
    total = sum(SOURCE_RATIOS[name] for name in ROW_SOURCES[row])
    return round(part_iterations * total / SOURCE_RATIOS["base_parts"])


def _config(world: Path, s: QuickstartSettings, iterations: int, extra: list[tuple]) -> Config:
    def source(name: str, kind: str, file: str | Path, root: str | Path = world, **kw) -> dict:
        return {
            "name": name,
            "kind": kind,
            "ann_file": str(file),
            "image_root": str(root),
            "min_size": [s.image_size],
            "max_size": s.image_size,
            "batch_size": s.batch_size,
            **kw,
        }

    sources = [
        source(
            "base_parts", "part", world / "parts_base_train.json", ratio=SOURCE_RATIOS["base_parts"]
        )
    ]
    for name, kind, file in extra:
        sources.append(source(name, kind, file, ratio=SOURCE_RATIOS[name]))
    return config_from_dict(
        {
            "text": {"encoder": "minilm"},
            "model": _model_config(s),
            "data": sources,
            "train": {
                "max_iter": iterations,
                "lr": 3e-4,
                "warmup_iters": min(50, iterations // 4),
                "lr_steps": [int(iterations * 0.8)],
                "checkpoint_period": 10**9,
                "log_period": 10,
                "num_workers": 0,
                "seed": s.seed,
                "device": "cpu",
            },
        }
    )


def _seconds_per_step(cfg: Config) -> float:
    """Time a few training steps of a throwaway model (the first one is not counted)."""
    source = build_sources(cfg)[0]
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size = cfg.data[0].batch_size
    times = []
    for step in range(TIMING_STEPS + 1):
        batch = [source.dataset.get(i, seed=i) for i in range(step * size, (step + 1) * size)]
        start = time.perf_counter()
        losses = model(
            [b[0] for b in batch],
            [b[1] for b in batch],
            kind=source.kind,
            text_embeddings=source.text_embeddings,
        )
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return float(np.mean(times[1:]))


def _evaluate(weights: Path, world: Path, encoder) -> EvalReport:
    model, info = load_checkpoint(weights)
    segmenter = PartSegmenter(model, encoder, info=info)
    return evaluate_model(segmenter, world / "parts_val.json", world, progress=False)


def _percent(report: EvalReport, iou_type: str) -> dict[str, float | None]:
    metrics = report.metrics[iou_type]
    keys = ("AP", "AP_base", "AP_novel", "AP50", "AP50_base", "AP50_novel")
    return {k: None if metrics.get(k) is None else round(100 * metrics[k], 1) for k in keys}


def _table(rows: list[RowResult]) -> str:
    def cell(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    lines = [
        "| training data | mask AP all | base | novel | mask AP50 all | base | novel |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r.mask
        lines.append(
            f"| {r.row}. {r.data} | {cell(m['AP'])} | {cell(m['AP_base'])} | "
            f"{cell(m['AP_novel'])} | {cell(m['AP50'])} | {cell(m['AP50_base'])} | "
            f"{cell(m['AP50_novel'])} |"
        )
    return "\n".join(lines)


def _render(weights: Path, world: Path, encoder, out: Path) -> list[Path]:
    """Overlays of the novel-part prompts on held-out images that show a dog or a bus."""
    model, info = load_checkpoint(weights)
    segmenter = PartSegmenter(model, encoder, info=info)
    objects = load_coco(world / "objects_val.json")
    novel_ids = {c["id"] for c in objects["categories"] if c["name"] in ("dog", "bus")}
    shown = sorted(
        {a["image_id"] for a in objects["annotations"] if a["category_id"] in novel_ids}
    )[:NUM_RENDERS]
    files = {im["id"]: im["file_name"] for im in objects["images"]}
    vocab = parse_vocabulary(RENDER_PROMPTS)
    (out / "renders").mkdir(parents=True, exist_ok=True)
    paths = []
    for image_id in shown:
        image = read_image(world / files[image_id])
        pred = segmenter.predict(image, vocabulary=vocab, score_threshold=0.3)
        path = out / "renders" / f"val_{image_id:06d}.png"
        # Drawn on a RENDER_SCALE-times larger copy so that the tags stay legible.
        k = RENDER_SCALE
        big = dataclasses.replace(
            pred, boxes=pred.boxes * k, masks=pred.masks.repeat(k, axis=1).repeat(k, axis=2)
        )
        big.render(image.repeat(k, axis=0).repeat(k, axis=1)).save(path)
        paths.append(path)
    return paths


def run_quickstart(out_dir: str | Path, settings: QuickstartSettings | None = None) -> dict:
    """Run the whole miniature experiment into ``out_dir`` (see the module docstring).

    Returns:
        The contents of ``metrics.json``: settings, per-row AP (percent), timings, paths.
    """
    s = settings or QuickstartSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def mark(stage: str, since: float) -> float:
        now = time.perf_counter()
        timings[stage] = round(now - since, 1)
        logger.info("%s: %.1f s", stage, now - since)
        return now

    world = out / "world"
    if world.exists():
        shutil.rmtree(world)
    t = time.perf_counter()
    summary = synthesize_world(world, seed=s.seed, num_images=s.num_images, image_size=s.image_size)
    manifest = json.loads((world / "world.json").read_text())
    t = mark("world", t)

    encoder = build_text_encoder("minilm")
    with_objects = [
        ("objects", "object", world / "objects_train.json"),
        ("image_labels", "image", world / "image_labels_train.json"),
    ]
    per_step = _seconds_per_step(_config(world, s, s.part_iterations, []))
    part_iterations = budget_iterations(per_step, s.budget_minutes, s.part_iterations)
    if part_iterations < s.part_iterations:
        logger.warning(
            "%.2f s per step: %d part batches per row instead of %d to stay within %.0f minutes",
            per_step,
            part_iterations,
            s.part_iterations,
            s.budget_minutes,
        )
    t = mark("timing", t)

    rows: list[RowResult] = []
    runs = out / "runs"

    def train_row(key: str, extra: list) -> Path:
        nonlocal t
        iterations = row_iterations(key, part_iterations)
        cfg = _config(world, s, iterations, extra)
        run_dir = runs / key
        if run_dir.exists():
            shutil.rmtree(run_dir)
        weights = train(cfg, run_dir)
        trained = time.perf_counter() - t
        t = mark(f"train_{key}", t)
        report = _evaluate(weights, world, encoder)
        t = mark(f"eval_{key}", t)
        label = dict(ROWS)[key]
        rows.append(
            RowResult(
                key,
                label,
                iterations,
                round(trained, 1),
                _percent(report, "segm"),
                _percent(report, "bbox"),
            )
        )
        logger.info("row %s (%s): mask AP50 novel %s", key, label, rows[-1].mask["AP50_novel"])
        return weights

    train_row("A", [])
    weights_b = train_row("B", with_objects)

    parse_cfg = ParsingConfig(
        backend=s.parse_backend, weights=s.parse_weights, image_size=PARSE_IMAGE_SIZE
    )
    extractor = build_feature_extractor(s.parse_backend, weights=s.parse_weights)
    bank = build_base_bank(
        world / "objects_train.json",
        world / "parts_base_train.json",
        world,
        categories=manifest["base_objects"],
        extractor=extractor,
        config=parse_cfg,
    )
    novel = manifest["novel_objects"]
    parsed_dir = out / "parsed"
    if parsed_dir.exists():
        shutil.rmtree(parsed_dir)
    parsed = parse_novel_objects(
        world / "objects_train.json",
        world,
        categories=novel,
        bank=bank,
        vocabulary=load_builtin("pascal_part").subset(objects=novel),
        out_dir=parsed_dir,
        config=parse_cfg,
        detector=load_checkpoint(weights_b)[0],
        extractor=extractor,
        rank=0,
        world_size=1,
    )
    parsed_data = json.loads(parsed.read_text())
    t = mark("parse", t)

    weights_c = train_row("C", [*with_objects, ("parsed_parts", "parsed", parsed)])
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(weights_c.with_suffix(suffix), out / f"model{suffix}")
    renders = _render(out / "model.safetensors", world, encoder, out)
    t = mark("render", t)

    total = round(time.perf_counter() - started, 1)
    result = {
        "settings": asdict(s),
        "part_iterations": part_iterations,
        "seconds_per_step": round(per_step, 3),
        "world": {
            "train_images": summary.num_train,
            "val_images": summary.num_val,
            "base_objects": manifest["base_objects"],
            "novel_objects": novel,
        },
        "parsed": {"images": len(parsed_data["images"]), "parts": len(parsed_data["annotations"])},
        "rows": [asdict(r) for r in rows],
        "timings_seconds": {**timings, "total": total},
        "model": str(out / "model.safetensors"),
    }
    write_json_atomic(result, out / "metrics.json")
    (out / "report.md").write_text(_report(result, rows, renders, out))
    return result


def _report(result: dict, rows: list[RowResult], renders: list[Path], out: Path) -> str:
    novel = {r.row: r.mask["AP50_novel"] for r in rows}
    gained = novel["C"] is not None and novel["B"] is not None and novel["C"] > novel["B"]
    verdict = "raised" if gained else "did not raise"
    lines = [
        "# vlpart quickstart: open-vocabulary part segmentation in miniature",
        "",
        f"Synthetic parts world: {result['world']['train_images']} training and "
        f"{result['world']['val_images']} held-out images; novel objects "
        f"{', '.join(result['world']['novel_objects'])} (their parts are never annotated for "
        "training). Each row trains EfficientNet-Lite0 + FPN with MiniLM text embeddings on "
        f"{result['part_iterations']} batches of base parts; rows B and C add their other "
        "sources on top ("
        + ", ".join(f"{r.row}: {r.iterations}" for r in rows)
        + " iterations). Evaluated on all parts of the held-out images (mask AP, percent).",
        "",
        _table(rows),
        "",
        f"Parsing turned {result['parsed']['images']} novel-object instances into "
        f"{result['parsed']['parts']} part boxes; training on them {verdict} novel mask AP50 "
        f"over row B ({novel['B']} → {novel['C']}).",
        "",
        f"Time: {result['timings_seconds']['total'] / 60:.1f} minutes "
        f"({result['seconds_per_step']:.2f} s per training step). Final model: "
        "`model.safetensors` (row C); try "
        '`vlpart predict IMAGE --weights model.safetensors --vocab "dog:head,leg,tail"`.',
        "",
        f"## Novel-part prompts on held-out images (`{RENDER_PROMPTS}`)",
        "",
    ]
    lines += [f"![{p.stem}]({p.relative_to(out)})" for p in renders]
    return "\n".join(lines) + "\n"


def budget_iterations(per_step: float, budget_minutes: float, default: int) -> int:
    """Base-part batches per row such that the three trainings fit ``TRAIN_SHARE`` of the
    budget at ``per_step`` seconds per iteration."""
    steps_per_part_batch = sum(row_iterations(row, 1000) for row in ROW_SOURCES) / 1000
    affordable = TRAIN_SHARE * budget_minutes * 60 / (steps_per_part_batch * per_step)
    return max(1, min(default, math.floor(affordable)))
