"""Fine-tune a model on a user's COCO file in one call (``vlpart finetune``).

:func:`finetune` checks the data and the starting model, chooses a plan for small data
(:class:`FinetunePlan`: schedule, learning rate and warm-up, frozen modules, batch size, the
starting model's text encoder), logs it, builds a :class:`~vlpart.core.config.Config` and runs
the one training loop (:func:`vlpart.training.train.train`) into ``out``; then it evaluates the
starting and the fine-tuned model on the same validation images and writes ``report.md``,
``metrics.json`` and overlays (see :mod:`vlpart.training.finetune_report`).

Layout of ``out``::

    config.yaml             the experiment train() ran (``--resume`` reruns it)
    plan.json               the plan, and where the start and the data came from
    data/train.json         the training file (held-out images removed, known categories added)
    data/val.json           the held-out split, when no --val file was given
    start/model.safetensors the starting model, when it was an official .pth (converted)
    ckpt-*/, latest, metrics.jsonl, model.safetensors + model.json   (train())
    report.md, metrics.json, overlays/                                (after training)

Nothing is written to ``out`` before every input has been checked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlpart.core.coco import write_coco
from vlpart.core.config import Config, ModelConfig, SourceConfig, TextConfig, TrainConfig
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import read_text_file, write_json_atomic
from vlpart.core.kinds import DataKind
from vlpart.core.vocab import Vocabulary, load_builtin
from vlpart.core.weights import is_name
from vlpart.data.datasets import DetectionDataset
from vlpart.data.transforms import ResizeShortestEdge
from vlpart.model import VLPartDetector, load_checkpoint
from vlpart.model.checkpoint import CheckpointInfo, save_checkpoint
from vlpart.text import TextOptions
from vlpart.training.finetune_data import (
    DatasetSummary,
    count_instances,
    held_out_split,
    inspect_dataset,
    pseudo_label_known,
)

__all__ = ["FinetunePlan", "finetune", "plan_finetune"]

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
CONFIG_FILE = "config.yaml"
# Small-data schedule: about this many passes over the annotated images, within bounds.
EPOCHS = 20
MIN_ITERATIONS = 100
MAX_ITERATIONS = 2000
# AdamW learning rate of fine-tuning (half the paper's 2e-4 from-scratch rate) and warm-up.
FINETUNE_LR = 1e-4
MAX_WARMUP_ITERS = 50
# With fewer annotated images than this, these modules (the whole backbone: trunk + FPN) stay
# frozen.
FREEZE_BACKBONE_BELOW = 50
SMALL_DATA_FREEZE = ("backbone",)
# Images per batch: on CPU (2 cores) and on a GPU.
CPU_BATCH_SIZE = 2
GPU_BATCH_SIZE = 8
# Checkpoints per run: a kill loses at most 1/CHECKPOINTS of the schedule.
CHECKPOINTS = 10


@dataclass(frozen=True)
class FinetunePlan:
    """What :func:`finetune` will do, chosen from the data and the starting model.

    Attributes:
        start: the starting model as the user named it.
        text_encoder: identity of the starting model's text encoder (kept).
        num_images, num_annotated: images in the training file, and those with annotations.
        instances: category -> training instances.
        validation: where the before/after numbers come from (a file, a held-out split, none).
        iterations, batch_size, lr, warmup_iters, lr_steps: the schedule.
        freeze: modules that are not trained.
        checkpoint_period: iterations between checkpoints.
        keep_known: whether the starting model's own detections of the categories it knew
            are added to the training images (see
            :func:`~vlpart.training.finetune_data.pseudo_label_known`).
        known_categories: how many categories the starting model knew (0: not recorded).
        seconds_per_iteration: one measured training step on this machine.
    """

    start: str
    text_encoder: str
    num_images: int
    num_annotated: int
    instances: dict[str, int]
    validation: str
    iterations: int
    batch_size: int
    lr: float
    warmup_iters: int
    lr_steps: list[int]
    freeze: list[str]
    checkpoint_period: int
    keep_known: bool
    known_categories: int
    seconds_per_iteration: float
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> list[str]:
        return [name for name, n in self.instances.items() if n == 0]

    @property
    def estimated_seconds(self) -> float:
        return self.iterations * self.seconds_per_iteration

    def __str__(self) -> str:
        width = max(len(n) for n in self.instances)
        lines = [
            f"fine-tuning plan ({self.device})",
            f"  start          {self.start} (text encoder {self.text_encoder})",
            f"  images         {self.num_images} ({self.num_annotated} annotated)",
            f"  validation     {self.validation}",
            "  instances per category:",
            *(f"    {name:<{width}}  {n}" for name, n in self.instances.items()),
            f"  iterations     {self.iterations} x batch {self.batch_size}, lr {self.lr:g} "
            f"(warm-up {self.warmup_iters}, x0.1 at {self.lr_steps})",
            f"  frozen         {', '.join(self.freeze) or 'nothing beyond the backbone stem'}",
            "  keep known     "
            + (
                f"yes: its detections of {self.known_categories} known categories added"
                if self.keep_known and self.known_categories
                else "no"
            ),
            f"  checkpoints    every {self.checkpoint_period} iterations",
            f"  estimated time {_duration(self.estimated_seconds)} "
            f"({self.seconds_per_iteration:.2f} s/iteration measured)",
        ]
        if self.empty:
            lines.append(f"  empty categories (no instance): {', '.join(self.empty)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class _Start:
    """The starting model, loaded once."""

    name: str
    model: VLPartDetector
    info: CheckpointInfo
    weights: Path | None  # a safetensors file train() can start from; None: write it first
    vocabulary: Vocabulary | None  # what it knew, when recorded


def _load_start(start: str | Path) -> _Start:
    """A zoo name, our checkpoint or an official ``.pth``, with what it knew.

    Raises:
        UnknownNameError, MissingFileError, InputError: as the loaders do.
    """
    from vlpart.inference.segmenter import OFFICIAL_SUFFIXES

    if is_name(start):
        from vlpart.model.zoo import prepare

        path = prepare(str(start))
    else:
        path = Path(start)
        if not path.is_file():
            raise MissingFileError(f"{path}: starting model not found")
    if path.suffix in OFFICIAL_SUFFIXES:
        from vlpart.model.convert import load_official_checkpoint

        model, info = load_official_checkpoint(path)
        weights = None
    else:
        model, info = load_checkpoint(path)
        weights = path
    vocab = None
    if info.vocabulary:
        vocab = Vocabulary.from_json(info.vocabulary, name="start")
    elif is_name(start):
        from vlpart.model.zoo import get_model

        vocab = load_builtin(get_model(str(start)).vocabulary)
    return _Start(str(start), model, info, weights, vocab)


def _schedule(num_annotated: int, batch_size: int, iterations: int | None) -> dict[str, Any]:
    if iterations is None:
        iterations = math.ceil(EPOCHS * num_annotated / batch_size)
        iterations = min(MAX_ITERATIONS, max(MIN_ITERATIONS, iterations))
    return {
        "iterations": iterations,
        "warmup_iters": min(MAX_WARMUP_ITERS, iterations // 10),
        "lr_steps": [max(1, int(iterations * 0.8))],
        "checkpoint_period": max(1, math.ceil(iterations / CHECKPOINTS)),
    }


def _time_step(
    model: VLPartDetector,
    dataset: DetectionDataset,
    encoder,
    *,
    batch_size: int,
    freeze: list[str],
) -> float:
    """Seconds of one forward + backward pass on a batch of ``dataset`` with the modules of
    ``freeze`` frozen (weights untouched)."""
    frozen = [
        p
        for name, p in model.named_parameters()
        if p.requires_grad and any(name == f or name.startswith(f + ".") for f in freeze)
    ]
    for param in frozen:
        param.requires_grad_(False)
    batch = [dataset.get(i % len(dataset), seed=i) for i in range(batch_size)]
    embeddings = torch.nn.functional.normalize(
        encoder.encode(dataset.vocabulary.prompts()).float(), dim=-1
    )
    model.train()
    start = time.perf_counter()
    losses = model(
        [b[0] for b in batch], [b[1] for b in batch], kind=dataset.kind, text_embeddings=embeddings
    )
    sum(losses.values()).backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    model.eval()
    for param in frozen:
        param.requires_grad_(True)
    return seconds


def plan_finetune(
    train_file: str | Path,
    image_root: str | Path,
    *,
    start: str | Path,
    val_file: str | Path | None = None,
    iterations: int | None = None,
    keep_known: bool = True,
) -> FinetunePlan:
    """Check the inputs and choose the plan :func:`finetune` would run (writes nothing).

    Raises:
        InputError, MissingFileError, UnknownNameError: one line naming the problem.
    """
    return _prepare(train_file, image_root, start, val_file, iterations, keep_known)[0]


def _prepare(
    train_file: str | Path,
    image_root: str | Path,
    start: str | Path,
    val_file: str | Path | None,
    iterations: int | None,
    keep_known: bool,
) -> tuple[FinetunePlan, _Start, DatasetSummary, DatasetSummary | None, tuple | None, Any]:
    """The plan and what building it loaded: the start, the checked files, the held-out
    split (or None) and the text encoder."""
    if iterations is not None and iterations < 1:
        raise InputError(f"iterations must be at least 1, got {iterations}")
    train = inspect_dataset(train_file, image_root)
    val = inspect_dataset(val_file, image_root) if val_file is not None else None
    begin = _load_start(start)
    encoder = TextOptions().build(recorded=begin.info.text_encoder)
    if encoder.dim != begin.info.config.text_dim:
        raise InputError(
            f"{start}: its text encoder {encoder.identity} gives {encoder.dim}-d rows, the "
            f"model takes {begin.info.config.text_dim}-d ones"
        )
    notes = []
    if val is not None:
        validation = f"{val.path} ({val.num_images} images)"
        split = None
    else:
        split = held_out_split(train)
        if split is None:
            validation = "none (fewer than 10 annotated images and no --val file)"
        else:
            validation = f"held-out 10 % of the annotated images ({len(split[1]['images'])})"
    num_train_images = train.num_annotated - (len(split[1]["images"]) if split else 0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch_size = min(
        GPU_BATCH_SIZE if device == "cuda" else CPU_BATCH_SIZE, max(1, num_train_images)
    )
    sched = _schedule(num_train_images, batch_size, iterations)
    freeze = list(SMALL_DATA_FREEZE) if num_train_images < FREEZE_BACKBONE_BELOW else []
    known = len(begin.vocabulary) if begin.vocabulary is not None else 0
    if keep_known and not known:
        notes.append("the starting model records no vocabulary: nothing known to keep")
    size = begin.info.config.min_size
    dataset = DetectionDataset(
        train.path,
        image_root,
        kind=DataKind.PART if train.has_parts else DataKind.OBJECT,
        transform=ResizeShortestEdge([size], max_size=begin.info.config.max_size),
    )
    seconds = _time_step(begin.model, dataset, encoder, batch_size=batch_size, freeze=freeze)
    plan = FinetunePlan(
        start=str(start),
        text_encoder=encoder.identity,
        num_images=train.num_images,
        num_annotated=train.num_annotated,
        instances=train.instances if split is None else count_instances(split[0], train.vocabulary),
        validation=validation,
        batch_size=batch_size,
        lr=FINETUNE_LR,
        freeze=freeze,
        keep_known=keep_known and known > 0,
        known_categories=known,
        seconds_per_iteration=seconds,
        device=device,
        notes=notes,
        iterations=sched["iterations"],
        warmup_iters=sched["warmup_iters"],
        lr_steps=sched["lr_steps"],
        checkpoint_period=sched["checkpoint_period"],
    )
    return plan, begin, train, val, split, encoder


def _config(plan: FinetunePlan, start: _Start, train_file: Path, image_root: Path, kind) -> Config:
    """The experiment train() runs: the start's model settings, one source, the plan."""
    model_cfg: ModelConfig = dataclasses.replace(start.info.config, backbone_weights=None)
    encoder = "minilm" if plan.text_encoder.startswith("minilm") else "clip"
    source = SourceConfig(
        name="finetune",
        kind=kind.value,
        ann_file=str(train_file),
        image_root=str(image_root),
        batch_size=plan.batch_size,
        min_size=[model_cfg.min_size],
        max_size=model_cfg.max_size,
    )
    train_cfg = TrainConfig(
        max_iter=plan.iterations,
        lr=plan.lr,
        warmup_iters=plan.warmup_iters,
        lr_steps=plan.lr_steps,
        freeze=plan.freeze,
        checkpoint_period=plan.checkpoint_period,
        log_period=max(1, min(20, plan.iterations // 20)),
        num_workers=0,
    )
    return Config(text=TextConfig(encoder=encoder), model=model_cfg, data=[source], train=train_cfg)


def finetune(
    train_file: str | Path,
    image_root: str | Path,
    *,
    start: str | Path,
    out: str | Path,
    val_file: str | Path | None = None,
    iterations: int | None = None,
    resume: bool = False,
    keep_known: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``start`` on ``train_file`` and report before → after (see the module doc).

    Args:
        train_file: COCO-format file with boxes and masks of the user's categories
            (``object:part``, PartImageNet-style ``"Quadruped Head"`` or plain object names).
        image_root: the folder its ``file_name`` entries are relative to.
        start: a zoo name, a vlpart ``.safetensors`` checkpoint or an official ``.pth``.
        out: the run folder (must be new or empty unless ``resume``).
        val_file: COCO file of validation images under ``image_root``; None holds out 10 %.
        iterations: the schedule length (default: chosen from the data size).
        resume: continue the run in ``out`` (its ``config.yaml``), then report.
        keep_known: add the starting model's detections of the categories it knew to the
            training images, so that they are not learnt as background.

    Returns:
        The report's metrics (``metrics.json``) plus ``"weights"``, the fine-tuned file.

    Raises:
        InputError, MissingFileError, UnknownNameError: bad input, before anything is written.
    """
    from vlpart.training.finetune_report import write_report
    from vlpart.training.train import train

    out = Path(out)
    if resume:
        if not (out / PLAN_FILE).is_file():
            raise InputError(f"{out}: no fine-tuning run to resume ({PLAN_FILE} missing)")
        record = _read_plan(out)
        cfg = Config.from_yaml(out / CONFIG_FILE)
        # The start weights count only if the run was killed before its first checkpoint.
        weights = train(cfg, out, resume=True, init_weights=record["start_weights"])
        return write_report(out, record, weights)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: not empty; choose a new --out folder or pass --resume")
    plan, begin, summary, val, split, encoder = _prepare(
        train_file, image_root, start, val_file, iterations, keep_known
    )
    logger.info("%s", plan)
    record = _write_inputs(out, plan, begin, summary, val, split, encoder, Path(image_root))
    cfg = Config.from_yaml(out / CONFIG_FILE)
    init = record["start_weights"]
    weights = train(cfg, out, init_weights=init)
    return write_report(out, record, weights)


def _write_inputs(
    out: Path,
    plan: FinetunePlan,
    begin: _Start,
    summary: DatasetSummary,
    val: DatasetSummary | None,
    split: tuple[dict, dict] | None,
    encoder,
    image_root: Path,
) -> dict[str, Any]:
    """Write what train() and the report read: start weights, data files, config, plan."""
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    weights = begin.weights
    if weights is None:
        weights = save_checkpoint(
            begin.model,
            out / "start" / "model.safetensors",
            config=begin.info.config,
            vocabulary=begin.info.vocabulary,
            text_encoder=begin.info.text_encoder,
        )
    train_data = split[0] if split is not None else summary.data
    val_path = None if val is None else val.path
    if split is not None:
        val_path = data_dir / "val.json"
        write_coco(val_path, **_coco_parts(split[1]))
    added, seconds = 0, 0.0
    if plan.keep_known:
        from vlpart.inference.segmenter import PartSegmenter

        began = time.perf_counter()
        segmenter = PartSegmenter(begin.model, encoder, info=begin.info)
        train_data, added = pseudo_label_known(segmenter, train_data, image_root, begin.vocabulary)
        seconds = time.perf_counter() - began
        logger.info("added %d detections of known categories (%.1f s)", added, seconds)
    train_path = data_dir / "train.json"
    write_coco(train_path, **_coco_parts(train_data))
    kind = DataKind.PART if summary.has_parts else DataKind.OBJECT
    _config(plan, begin, train_path, image_root, kind).to_yaml(out / CONFIG_FILE)
    record = {
        "plan": dataclasses.asdict(plan),
        "start_weights": str(Path(weights).resolve()),
        "image_root": str(image_root.resolve()),
        "val_file": None if val_path is None else str(Path(val_path).resolve()),
        "known_added": added,
        "known_seconds": round(seconds, 2),
    }
    write_json_atomic(record, out / PLAN_FILE)
    return record


def _coco_parts(data: dict) -> dict:
    return {k: data.get(k, []) for k in ("images", "annotations", "categories")}


def _read_plan(out: Path) -> dict[str, Any]:
    try:
        return json.loads(read_text_file(out / PLAN_FILE, "fine-tuning plan (JSON)"))
    except json.JSONDecodeError as err:
        raise InputError(f"{out / PLAN_FILE}: not valid JSON ({err})") from None
