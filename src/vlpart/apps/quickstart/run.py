"""``vlpart quickstart``: the paper's cross-category protocol (its Table 4) in miniature, offline.

1. Draw the synthetic parts world (novel objects: dog and bus).
2. Train three detectors from ``configs/quickstart.yaml`` (EfficientNet-Lite0 with its packaged
   ImageNet weights, MiniLM text embeddings), as the paper's ablation models are built:
   A. base parts, from ImageNet weights;
   B. + object boxes/masks of all objects and image labels, fine-tuned from A;
   C. + parts parsed from the novel objects' instances (dense correspondence to base objects,
      EfficientNet features, boxes snapped to detector B's proposals), fine-tuned from A for as
      many iterations as B, so that B and C differ only in the parsed parts.
3. Evaluate each on the held-out images with all parts (base and novel): mask AP and AP50.
4. Write ``report.md`` (table, settings, timings, overlays of novel-part prompts on held-out
   images), ``metrics.json`` and the final model C as ``model.safetensors`` (+ ``model.json``).

The schedule is fixed: on one machine the numbers depend on the seed and the code only, digit
for digit, never on the machine's speed; another CPU's float kernels move them within the
spread over seeds that the README shows, and ``report.md`` puts each cell beside that band
(:mod:`vlpart.apps.quickstart.spread`). A slow machine is told how long the run will take and
runs the same schedule; only an explicit ``budget_minutes`` cuts it (to what a short timing run
says fits), and the report then says that it is a cut-down run whose numbers differ from the
README's.

``validation=True`` (the protocol study, ``benchmarks/quickstart_study.py``) draws only the
world's training images and holds out the last fifth of them: decisions about the protocol are
taken there, never on the held-out images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import yaml

from vlpart.apps.quickstart.report import RowResult, percent, quickstart_report, seeds_report
from vlpart.apps.quickstart.spread import load_reference
from vlpart.apps.quickstart.synth import DEFAULT_VAL_FRACTION, WorldSummary, synthesize_world
from vlpart.core.coco import load_coco
from vlpart.core.config import Config, config_from_dict, read_yaml
from vlpart.core.errors import InputError
from vlpart.core.fileio import atomic_write, read_image, write_json_atomic, write_text_atomic
from vlpart.core.vocab import load_builtin, parse_vocabulary
from vlpart.evaluation.model_eval import evaluate_model
from vlpart.evaluation.report import EvalReport
from vlpart.inference.segmenter import SCORE_THRESH, PartSegmenter
from vlpart.model import build_model, load_checkpoint
from vlpart.parsing import build_feature_extractor
from vlpart.parsing.run import build_base_bank, parse_novel_objects
from vlpart.text import build_text_encoder
from vlpart.training.sources import build_sources
from vlpart.training.train import train

__all__ = [
    "QuickstartSettings",
    "RowResult",
    "budget_schedule",
    "load_quickstart_config",
    "row_plan",
    "run_quickstart",
    "run_quickstart_seeds",
]

logger = logging.getLogger(__name__)

ROWS = (
    ("A", "base parts"),
    ("B", "+ object data (boxes, masks, image labels)"),
    ("C", "+ parsed novel parts"),
)
# Sources of each row (names of configs/quickstart.yaml's data entries) and the row whose
# weights it starts from (None: ImageNet). "A+" is the study's control: row A trained on for as
# many iterations as B, on base parts alone.
ROW_SOURCES = {
    "A": ("base_parts",),
    "A+": ("base_parts",),
    "B": ("base_parts", "objects", "image_labels"),
    "C": ("base_parts", "objects", "image_labels", "parsed_parts"),
}
ROW_LABELS = {**dict(ROWS), "A+": "base parts, trained on as long as B"}
FINETUNED_FROM = {"A": None, "A+": "A", "B": "A", "C": "A"}
RENDER_PROMPTS = "dog:head,torso,leg,tail,ear; bus:wheel,window,door,headlight"
NUM_RENDERS = 4
RENDER_SCALE = 4
TIMING_STEPS = 4
# Row A's steps timed before the run tells a slow machine how long it will take.
SPEED_CHECK_STEPS = 20
# Seconds per training step of the README's run (2 cores), and the factor beyond which a
# machine is called slow.
README_SECONDS_PER_STEP = 0.6
SLOW_FACTOR = 2.0
# Share of a budget for the trainings; the rest covers world, parsing and evaluation.
TRAIN_SHARE = 0.75
# Torch threads of the whole run. One thread keeps the numbers independent of the machine's core
# count and the speed steady under competing load: with two threads on a busy 2-core machine a
# training step took 6.45 s, with one 0.49 s (measured side by side).
NUM_THREADS = 1
# Share of the training images the validation world holds out.
VALIDATION_FRACTION = 0.2
CONFIG_RESOURCE = "_resources/quickstart.yaml"  # the packaged configs/quickstart.yaml


@dataclass
class QuickstartSettings:
    """Sizes and protocol of the miniature experiment (the defaults are what
    ``vlpart quickstart`` runs; model, data mix and optimiser come from the YAML)."""

    seed: int = 0
    num_images: int = 400
    # Side of the world's images; also the training and test size of the detector.
    image_size: int = 128
    # Row A's iterations (from ImageNet weights).
    base_iterations: int = 300
    # Iterations of each fine-tuned row (B, C, and the study's A+).
    finetune_iterations: int = 300
    batch_size: int = 4
    # None: the fixed schedule. Minutes: cut the schedule to fit (a cut-down run).
    budget_minutes: float | None = None
    # "finetune" (B and C start from A, the paper's ablation recipe) or "scratch" (every row
    # from ImageNet, B and C as long as needed to hold A's number of base-part batches).
    protocol: str = "finetune"
    # Source ratios that replace the YAML's (the study's ablation); None keeps them.
    ratios: dict[str, float] | None = None
    rows: tuple[str, ...] = ("A", "B", "C")
    validation: bool = False
    config: str | None = None  # YAML path; None: configs/quickstart.yaml as packaged
    # Train with bfloat16 autocast (``train.amp``): other numerics, a faster step on CPUs with
    # AVX-512 BF16; evaluation and parsing stay fp32.
    amp: bool = False


def load_quickstart_config(path: str | Path | None = None) -> dict:
    """The quickstart's YAML as a dict (``configs/quickstart.yaml`` unless ``path``), checked
    against the :class:`~vlpart.core.config.Config` schema."""
    if path is None:
        text = resources.files("vlpart").joinpath(CONFIG_RESOURCE).read_text()
        data, source = yaml.safe_load(text) or {}, "configs/quickstart.yaml"
    else:
        data, source = read_yaml(path) or {}, str(path)
    config_from_dict(data, source=source)  # raises on unknown keys or wrong types
    return data


def row_plan(row: str, s: QuickstartSettings, ratios: dict[str, float]) -> tuple[int, str | None]:
    """``(iterations, row it starts from)`` of ``row`` under ``s.protocol``."""
    if row == "A":
        return s.base_iterations, None
    if s.protocol == "finetune":
        return s.finetune_iterations, FINETUNED_FROM[row]
    if s.protocol == "scratch":
        total = sum(ratios[name] for name in ROW_SOURCES[row])
        return round(s.base_iterations * total / ratios["base_parts"]), None
    raise InputError(f"unknown quickstart protocol {s.protocol!r}; expected finetune or scratch")


def _row_config(world: Path, s: QuickstartSettings, base: dict, row: str, iterations: int):
    """The :class:`Config` of one row: the YAML's model and optimiser, the row's sources with
    paths into ``world``, ``iterations`` steps."""
    data = json.loads(json.dumps(base))  # deep copy
    size = s.image_size
    data["model"].update(min_size=size, max_size=size)
    sources = []
    for src in data.get("data", []):
        if src["name"] not in ROW_SOURCES[row]:
            continue
        src.update(
            ann_file=str(world / src["ann_file"]),
            image_root=str(world),
            min_size=[size],
            max_size=size,
            batch_size=s.batch_size,
        )
        if s.ratios is not None:
            src["ratio"] = s.ratios[src["name"]]
        sources.append(src)
    train_cfg = data.setdefault("train", {})
    warmup = train_cfg.get("warmup_iters", 50)
    train_cfg.update(
        max_iter=iterations,
        warmup_iters=min(warmup, iterations // 4),
        lr_steps=[int(iterations * 0.8)],
        seed=s.seed,
        amp=s.amp,
    )
    data["data"] = sources
    return config_from_dict(data, source="configs/quickstart.yaml")


def _ratios(base: dict, s: QuickstartSettings) -> dict[str, float]:
    return s.ratios or {src["name"]: float(src.get("ratio", 1.0)) for src in base["data"]}


def _seconds_per_step(cfg: Config) -> float:
    """Time a few training steps of a throwaway model (the first one is not counted)."""
    source = build_sources(cfg)[0]
    model = build_model(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    size = cfg.data[0].batch_size
    times = []
    for step in range(TIMING_STEPS + 1):
        batch = [source.dataset.get(i, seed=i) for i in range(step * size, (step + 1) * size)]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.amp):
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


def budget_schedule(
    per_step: float, budget_minutes: float, s: QuickstartSettings, ratios: dict[str, float]
) -> tuple[int, int]:
    """``(base, finetune)`` iterations, both cut by one factor (never raised), such that the
    rows' trainings fit ``TRAIN_SHARE`` of ``budget_minutes`` at ``per_step`` s/iteration."""
    steps = sum(row_plan(row, s, ratios)[0] for row in s.rows)
    factor = min(1.0, TRAIN_SHARE * budget_minutes * 60 / (steps * per_step))
    return (
        max(1, math.floor(s.base_iterations * factor)),
        max(1, math.floor(s.finetune_iterations * factor)),
    )


def _evaluate(weights: Path, world: Path, encoder) -> EvalReport:
    model, info = load_checkpoint(weights)
    segmenter = PartSegmenter(model, encoder, info=info)
    return evaluate_model(segmenter, world / "parts_val.json", world, progress=False)


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
        pred = segmenter.predict(image, vocabulary=vocab, score_threshold=SCORE_THRESH)
        path = out / "renders" / f"val_{image_id:06d}.png"
        # Drawn on a RENDER_SCALE-times larger copy so that the tags stay legible.
        k = RENDER_SCALE
        big = dataclasses.replace(
            pred, boxes=pred.boxes * k, masks=pred.masks.repeat(k, axis=1).repeat(k, axis=2)
        )
        picture = big.render(image.repeat(k, axis=0).repeat(k, axis=1))
        atomic_write(path, lambda tmp, im=picture: im.save(tmp, "PNG"))
        paths.append(path)
    return paths


class _SpeedCheck:
    """``on_step`` hook of row A: after ``SPEED_CHECK_STEPS`` steps, warn when this machine is
    much slower than the README's and say how long the (unchanged) schedule will take."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.start = time.perf_counter()
        self.per_step: float | None = None

    def __call__(self, iteration: int, losses: dict) -> None:
        if iteration != SPEED_CHECK_STEPS:
            return
        self.per_step = (time.perf_counter() - self.start) / iteration
        if self.per_step > SLOW_FACTOR * README_SECONDS_PER_STEP:
            logger.warning(
                "this machine trains at %.2f s per step (the README's: %.2f s): the run will "
                "take about %.0f minutes; it runs the README's schedule all the same, so its "
                "numbers will be the README's",
                self.per_step,
                README_SECONDS_PER_STEP,
                self.total_steps * self.per_step / 60 * (1 / TRAIN_SHARE),
            )


def run_quickstart(out_dir: str | Path, settings: QuickstartSettings | None = None) -> dict:
    """Run the whole miniature experiment into ``out_dir`` (see the module docstring), on
    ``NUM_THREADS`` torch threads (restored afterwards).

    Returns:
        The contents of ``metrics.json``: settings, schedule, per-row AP (percent), timings.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(NUM_THREADS)
    try:
        return _run_quickstart(out_dir, settings or QuickstartSettings())
    finally:
        torch.set_num_threads(threads)


class _Stopwatch:
    """Seconds per stage of a run, logged as they end."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def mark(self, stage: str) -> float:
        """End ``stage``: record and return the seconds since the previous mark."""
        now = time.perf_counter()
        took, self.last = now - self.last, now
        self.timings[stage] = round(took, 1)
        logger.info("%s: %.1f s", stage, took)
        return took

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 1)


def _train_row(
    key: str,
    *,
    world: Path,
    s: QuickstartSettings,
    base: dict,
    ratios: dict[str, float],
    runs: Path,
    weights: dict[str, Path],
    speed: _SpeedCheck,
    encoder,
    clock: _Stopwatch,
) -> RowResult:
    """Train row ``key`` (from the weights of the row it starts from), record its weights in
    ``weights`` and evaluate it on the held-out images."""
    iterations, init = row_plan(key, s, ratios)
    cfg = _row_config(world, s, base, key, iterations)
    run_dir = runs / key
    if run_dir.exists():
        shutil.rmtree(run_dir)
    weights[key] = train(
        cfg,
        run_dir,
        init_weights=weights[init] if init else None,
        on_step=speed if key == "A" else None,
    )
    trained = clock.mark(f"train_{key}")
    report = _evaluate(weights[key], world, encoder)
    clock.mark(f"eval_{key}")
    row = RowResult(
        key,
        ROW_LABELS[key],
        iterations,
        f"row {init}" if init else "ImageNet",
        round(trained, 1),
        percent(report, "segm"),
        percent(report, "bbox"),
    )
    logger.info("row %s: mask AP50 novel %s", key, row.mask["AP50_novel"])
    return row


def _run_quickstart(out_dir: str | Path, s: QuickstartSettings) -> dict:
    if "C" in s.rows and "B" not in s.rows:
        raise InputError("row C parses with detector B: rows must include B")
    base = load_quickstart_config(s.config)
    ratios = _ratios(base, s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Stopwatch()
    world, summary, manifest = _make_world(out, s)
    clock.mark("world")
    cut: dict | None = None
    if s.budget_minutes is not None:
        s, cut = _fit_budget(world, s, base, ratios)
        clock.mark("timing")

    encoder = build_text_encoder("minilm")
    rows: list[RowResult] = []
    weights: dict[str, Path] = {}
    speed = _SpeedCheck(sum(row_plan(row, s, ratios)[0] for row in s.rows))
    parsed_data = {"images": [], "annotations": []}
    for key in s.rows:
        if key == "C":
            parsed_data = _parse(world, out, base, manifest, weights["B"])
            clock.mark("parse")
        rows.append(
            _train_row(
                key,
                world=world,
                s=s,
                base=base,
                ratios=ratios,
                runs=out / "runs",
                weights=weights,
                speed=speed,
                encoder=encoder,
                clock=clock,
            )
        )

    last = weights[s.rows[-1]]
    for src in (last, last.with_suffix(".json")):
        atomic_write(out / f"model{src.suffix}", lambda tmp, src=src: shutil.copyfile(src, tmp))
    renders = [] if s.validation else _render(out / "model.safetensors", world, encoder, out)
    clock.mark("render")

    result = {
        "settings": asdict(s),
        "ratios": {name: ratios[name] for name in ROW_SOURCES[s.rows[-1]]},
        "cut_down": cut,
        "seconds_per_step": None if speed.per_step is None else round(speed.per_step, 3),
        "world": {
            "train_images": summary.num_train,
            "val_images": summary.num_val,
            "validation_split": s.validation,
            "base_objects": manifest["base_objects"],
            "novel_objects": manifest["novel_objects"],
        },
        "parsed": {"images": len(parsed_data["images"]), "parts": len(parsed_data["annotations"])},
        "rows": [asdict(r) for r in rows],
        "timings_seconds": {**clock.timings, "total": clock.total()},
        "model": str(out / "model.safetensors"),
    }
    write_json_atomic(result, out / "metrics.json")
    # The README's band describes the default schedule only (any seed; with --amp too: its AP
    # lies within the band's spread, measured per seed in docs/benchmarks.md).
    default = dataclasses.replace(s, seed=0, amp=False) == QuickstartSettings()
    band = load_reference() if default else None
    report = quickstart_report(
        result, rows, renders, out, prompts=RENDER_PROMPTS, band=band, labels=ROW_LABELS
    )
    write_text_atomic(out / "report.md", report)
    return result


def _make_world(out: Path, s: QuickstartSettings) -> tuple[Path, WorldSummary, dict]:
    """Draw the run's world into ``out/world`` (replacing an old one): its folder, summary and
    manifest."""
    world = out / "world"
    if world.exists():
        shutil.rmtree(world)
    if s.validation:
        # Only the training images of the world drawn with these settings (image i comes from
        # the seed and i alone); the last fifth of them is the validation split.
        num_train = s.num_images - round(s.num_images * DEFAULT_VAL_FRACTION)
        summary = synthesize_world(
            world,
            seed=s.seed,
            num_images=num_train,
            image_size=s.image_size,
            val_fraction=VALIDATION_FRACTION,
        )
    else:
        summary = synthesize_world(
            world, seed=s.seed, num_images=s.num_images, image_size=s.image_size
        )
    return world, summary, json.loads((world / "world.json").read_text())


def _fit_budget(
    world: Path, s: QuickstartSettings, base: dict, ratios: dict[str, float]
) -> tuple[QuickstartSettings, dict | None]:
    """Time row A's steps and cut the schedule to ``s.budget_minutes``: the settings to run
    and, for a cut-down run, what was cut (None when the schedule fits)."""
    per_step = _seconds_per_step(_row_config(world, s, base, "A", 1))
    planned = (s.base_iterations, s.finetune_iterations)
    fitted = budget_schedule(per_step, s.budget_minutes, s, ratios)
    if fitted == planned:
        return s, None
    cut = {
        "seconds_per_step": round(per_step, 3),
        "budget_minutes": s.budget_minutes,
        "planned": list(planned),
        "run": list(fitted),
    }
    logger.warning(
        "CUT-DOWN RUN: %.2f s per step; %d + %d iterations instead of %d + %d to fit "
        "%.0f minutes: the numbers will differ from the README's",
        per_step,
        *fitted,
        *planned,
        s.budget_minutes,
    )
    return dataclasses.replace(s, base_iterations=fitted[0], finetune_iterations=fitted[1]), cut


def _parse(world: Path, out: Path, base: dict, manifest: dict, detector_weights: Path) -> dict:
    """Parse the novel objects' training instances into parts (snapped to detector B)."""
    parse_cfg = config_from_dict({"parse": base.get("parse", {})}).parse
    extractor = build_feature_extractor(parse_cfg.backend, weights=parse_cfg.weights)
    bank = build_base_bank(
        world / "objects_train.json",
        world / "parts_base_train.json",
        world,
        categories=manifest["base_objects"],
        extractor=extractor,
        config=parse_cfg,
    )
    novel = manifest["novel_objects"]
    parsed_dir = out / "world" / "parsed"
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
        detector=load_checkpoint(detector_weights)[0],
        extractor=extractor,
        rank=0,
        world_size=1,
    )
    return json.loads(parsed.read_text())


def run_quickstart_seeds(
    out_dir: str | Path, settings: QuickstartSettings | None = None, *, num_seeds: int = 3
) -> dict:
    """The longer run: :func:`run_quickstart` for seeds ``seed … seed + num_seeds - 1`` (world
    and training), each in ``out_dir/seed_<k>``, and a table of mean ± std (sample standard
    deviation) per row in ``out_dir/report.md`` and ``out_dir/metrics.json``."""
    if num_seeds < 2:
        raise InputError(f"a spread needs at least 2 seeds, got {num_seeds}")
    s = settings or QuickstartSettings()
    out = Path(out_dir)
    runs = []
    for k in range(num_seeds):
        seed = s.seed + k
        runs.append(run_quickstart(out / f"seed_{seed}", dataclasses.replace(s, seed=seed)))
    seeds = [s.seed + k for k in range(num_seeds)]
    spread, report = seeds_report(runs, s.rows, seeds, labels=ROW_LABELS)
    result = {"seeds": seeds, "spread": spread, "runs": [str(out / f"seed_{x}") for x in seeds]}
    write_json_atomic(result, out / "metrics.json")
    write_text_atomic(out / "report.md", report)
    return result
