"""Joint training on part, object, image-level and parsed-part data (``vlpart train``).

One loop for one process or many: under ``torchrun`` every rank takes its slice of each global
batch and gradients are averaged by DistributedDataParallel. Every ``checkpoint_period``
iterations, at the end and on Ctrl-C, rank 0 commits one checkpoint folder
``ckpt-<iteration>/`` (see :mod:`vlpart.training.checkpoints`) holding

* ``model.safetensors`` + ``model.json``: the weights and their sidecar (loadable on their own);
* ``train_state.pt``: iteration, optimizer, scheduler and RNG state (``torch.load`` with
  ``weights_only=True``), so that ``--resume`` continues exactly: same data order, same
  optimizer state, same random draws;

keeps the last ``keep_checkpoints`` of them, exports the newest weights as
``model.safetensors`` + ``model.json`` at the top of the folder, and appends one JSON line per
logged iteration to ``metrics.jsonl`` (a resumed run first drops the lines of the iterations it
redoes).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlpart.core.config import Config, SourceConfig, TrainConfig
from vlpart.core.distributed import DistInfo, init_distributed, shutdown_distributed
from vlpart.core.errors import InputError, MissingFileError, RunError
from vlpart.core.fileio import read_text_file, remove_orphans, write_text_atomic
from vlpart.core.kinds import DataKind
from vlpart.data.datasets import (
    DetectionDataset,
    ImageLabelDataset,
    LvisDataset,
    MultiDataset,
    collate,
)
from vlpart.data.sampler import MultiDatasetBatchSampler, repeat_factors
from vlpart.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge
from vlpart.model import build_model
from vlpart.model.checkpoint import (
    checkpoint_files,
    load_state_dict_strict,
    load_torch_file,
    load_weights,
)
from vlpart.text import build_text_encoder, encode_vocabulary
from vlpart.training.checkpoints import (
    SavedCheckpoint,
    commit_checkpoint,
    export_weights,
    find_checkpoint,
    list_checkpoints,
    prune_checkpoints,
)

__all__ = ["TrainSource", "build_sources", "lr_factor", "train"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
STATE_VERSION = 1
_STATE_KEYS = ("version", "iteration", "optimizer", "scheduler", "scaler", "rng")


@dataclass
class TrainSource:
    """A dataset with what training needs to use it: its text embeddings and image counts."""

    config: SourceConfig
    dataset: DetectionDataset | ImageLabelDataset
    text_embeddings: Tensor  # [C, D] float32, unit rows
    class_image_counts: Tensor | None  # [C] float32, LVIS-style sources only
    text_identity: str  # the encoder that made ``text_embeddings``

    @property
    def kind(self) -> DataKind:
        return self.dataset.kind


def lr_factor(iteration: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate: linear warm-up, then steps of ``lr_gamma``."""
    factor = cfg.lr_gamma ** sum(iteration >= step for step in cfg.lr_steps)
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1 - alpha) + alpha
    return factor


def build_sources(cfg: Config) -> list[TrainSource]:
    """Datasets of ``cfg.data`` with per-source transforms and text embeddings."""
    if not cfg.data:
        raise InputError("the config lists no training data: add entries under 'data:'")
    encoder = None
    sources = []
    for src in cfg.data:
        if not src.ann_file:
            raise InputError(f"data source {src.name!r} has no ann_file")
        steps = [ResizeShortestEdge(src.min_size, max_size=src.max_size)]
        if src.flip:
            steps.append(RandomHorizontalFlip())
        transform = Compose(steps)
        kind = DataKind(src.kind)
        common = {"transform": transform, "split": src.split}
        if kind is DataKind.IMAGE:
            dataset = ImageLabelDataset(src.ann_file, src.image_root, **common)
        elif src.lvis:
            dataset = LvisDataset(src.ann_file, src.image_root, kind=kind, **common)
        else:
            dataset = DetectionDataset(src.ann_file, src.image_root, kind=kind, **common)
        if src.embeddings:
            enc = build_text_encoder(
                "precomputed",
                vocabulary=dataset.vocabulary,
                template=cfg.text.template,
                embeddings=src.embeddings,
            )
        else:
            if encoder is None:
                encoder = build_text_encoder(
                    cfg.text.encoder,
                    clip_model=cfg.text.clip_model,
                    clip_weights=cfg.text.clip_weights,
                    cache_dir=cfg.text.cache_dir,
                )
            enc = encoder
        embeddings = encode_vocabulary(enc, dataset.vocabulary, cfg.text.template)
        if embeddings.shape[1] != cfg.model.text_dim:
            raise InputError(
                f"data source {src.name!r}: text embeddings are {embeddings.shape[1]}-d "
                f"({enc.identity}) but model.text_dim is {cfg.model.text_dim}"
            )
        if not any(dataset.image_category_ids()):
            selected = f"split {src.split!r} selects" if src.split else "its categories select"
            raise InputError(
                f"{src.ann_file}: data source {src.name!r}: {selected} no labelled image "
                f"({len(dataset.vocabulary)} categories, {len(dataset)} images); nothing to "
                "train on"
            )
        counts = getattr(dataset, "category_image_counts", None)
        sources.append(TrainSource(src, dataset, embeddings, counts, enc.identity))
        logger.info("source %s: %r", src.name, dataset)
    return sources


def _build_sampler(sources: list[TrainSource], cfg: Config, dist: DistInfo):
    factors = []
    for s in sources:
        if s.config.repeat_thresh is None:
            factors.append(np.ones(len(s.dataset)))
        else:
            factors.append(
                repeat_factors(s.dataset.image_category_ids(), thresh=s.config.repeat_thresh)
            )
    return MultiDatasetBatchSampler(
        factors,
        batch_sizes=[s.config.batch_size for s in sources],
        ratios=[s.config.ratio for s in sources],
        num_batches=cfg.train.max_iter,
        seed=cfg.train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    init_weights: str | Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """Train the detector of ``cfg`` on ``cfg.data``; return the final weights file.

    Args:
        cfg: the experiment.
        out_dir: where checkpoints and ``metrics.jsonl`` go (created).
        resume: continue from the newest complete checkpoint in ``out_dir`` (the one before it
            if the newest is damaged); from iteration 0 if the earlier run was stopped before
            its first checkpoint.
        init_weights: start from these weights (e.g. fine-tuning), ignored when resuming.
        on_step: called after every iteration (once it is logged and checkpointed) with its
            index and losses; a ``KeyboardInterrupt`` raised there stops training like Ctrl-C.

    Raises:
        FileNotFoundError: ``resume`` in a folder without any earlier run.
        ValueError: damaged or foreign checkpoints, bad ``init_weights``.
        KeyboardInterrupt: after saving a checkpoint, when interrupted.
    """
    out = Path(out_dir)
    dist = init_distributed(cfg.train.device)
    try:
        return _train(cfg, out, dist, resume=resume, init_weights=init_weights, on_step=on_step)
    finally:
        shutdown_distributed()


def _train(cfg, out: Path, dist: DistInfo, *, resume, init_weights, on_step) -> Path:
    tcfg = cfg.train
    if dist.is_main:
        remove_orphans(out)
    checkpoint = _resume_point(out) if resume else None
    torch.manual_seed(tcfg.seed)
    sources = build_sources(cfg)

    model = build_model(cfg)
    weights = checkpoint.weights if checkpoint is not None else init_weights
    if weights is not None:
        load_state_dict_strict(model, load_weights(weights), source=str(weights))
    model.to(dist.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, tcfg))
    use_amp = tcfg.amp
    amp_dtype = torch.float16 if dist.device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(enabled=use_amp and dist.device.type == "cuda")
    net = model
    if dist.distributed:
        # Image-level and parsed batches leave the RPN / box / mask heads unused.
        net = DistributedDataParallel(
            model,
            device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    sampler = _build_sampler(sources, cfg, dist)
    start = 0
    rng_state = None
    if checkpoint is not None:
        state = _load_state(checkpoint)
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(
                f"{checkpoint.state}: does not fit this config's optimizer ({err}); was it "
                "saved by another experiment?"
            ) from None
        start = checkpoint.iteration
        rng_state = state["rng"][min(dist.rank, len(state["rng"]) - 1)]
        logger.info("resuming from iteration %d of %d (%s)", start, tcfg.max_iter, checkpoint.path)
    if dist.is_main and resume:
        _truncate_metrics(out / METRICS_FILE, start)
    sampler.set_epoch(0, start_batch=start)
    loader = DataLoader(
        MultiDataset([s.dataset for s in sources]),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=tcfg.num_workers,
        worker_init_fn=_one_thread,
        generator=torch.Generator().manual_seed(tcfg.seed),
        persistent_workers=False,
    )
    if rng_state is not None:
        _set_rng_state(rng_state)

    embeddings = [s.text_embeddings.to(dist.device) for s in sources]
    counts = [
        c.to(dist.device) if c is not None else None
        for c in (s.class_image_counts for s in sources)
    ]
    iteration = start
    # The sidecar names every category seen in training, first source first.
    records: dict[str, dict] = {}
    for s in sources:
        for record in s.dataset.vocabulary.to_json():
            records.setdefault(record["name"], record)
    vocabulary = list(records.values())
    saved = checkpoint

    def save() -> None:
        nonlocal saved
        rng = [_rng_state()]
        if dist.distributed:
            gathered = [None] * dist.world_size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if not dist.is_main or (saved is not None and saved.iteration == iteration):
            return
        weights, sidecar = checkpoint_files(
            model, config=cfg.model, vocabulary=vocabulary, text_encoder=sources[0].text_identity
        )
        state = {
            "version": STATE_VERSION,
            "iteration": iteration,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng,
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        saved = commit_checkpoint(
            out, iteration, weights=weights, sidecar=sidecar, state=buffer.getvalue()
        )
        prune_checkpoints(out, saved, keep=tcfg.keep_checkpoints)
        export_weights(saved, out)
        logger.info("saved checkpoint at iteration %d to %s", iteration, saved.path)

    # Created only once the data, the model and the weights have loaded: a start that fails
    # leaves no empty run folder behind.
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = open(out / METRICS_FILE, "a") if dist.is_main else None  # noqa: SIM115
    bar = tqdm(
        total=tcfg.max_iter,
        initial=start,
        desc="train",
        disable=not dist.is_main,
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    try:
        for images, targets in loader:
            source = targets[0]["dataset"]
            images = [im.to(dist.device) for im in images]
            targets = [
                {k: v.to(dist.device) if isinstance(v, Tensor) else v for k, v in t.items()}
                for t in targets
            ]
            with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=use_amp):
                losses = net(
                    images,
                    targets,
                    kind=sources[source].kind,
                    text_embeddings=embeddings[source],
                    class_image_counts=counts[source],
                )
            total = sum(losses.values())
            if not torch.isfinite(total):
                raise RunError(
                    f"loss is {float(total)} at iteration {iteration}: "
                    + ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if tcfg.clip_grad_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tcfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            iteration += 1
            values = {k: float(v.detach()) for k, v in losses.items()}
            bar.update(1)
            if metrics_file is not None and (
                iteration % tcfg.log_period == 0 or iteration == tcfg.max_iter
            ):
                record = {
                    "iteration": iteration,
                    "source": sources[source].config.name,
                    "loss": float(total.detach()),
                    **values,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": round(time.perf_counter() - started, 2),
                }
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            if iteration % tcfg.checkpoint_period == 0 and iteration < tcfg.max_iter:
                save()
            if on_step is not None:
                on_step(iteration, values)
    except KeyboardInterrupt:
        save()
        raise
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    save()
    if dist.is_main and saved is not None:  # also when resuming a run that had already finished
        prune_checkpoints(out, saved, keep=tcfg.keep_checkpoints)
        export_weights(saved, out)
    return out / MODEL_FILE


def _resume_point(out: Path) -> SavedCheckpoint | None:
    """The checkpoint ``--resume`` continues from; None (start over, with a warning) when an
    earlier run in ``out`` was stopped before its first checkpoint was committed.

    Raises:
        FileNotFoundError: ``out`` holds no trace of an earlier run.
        ValueError: every checkpoint in ``out`` is damaged.
    """
    checkpoint = find_checkpoint(out)
    if checkpoint is not None:
        return checkpoint
    if not (out / METRICS_FILE).is_file() and not list_checkpoints(out):
        raise MissingFileError(f"{out}: no checkpoint to resume from (ckpt-*/ folders)")
    logger.warning(
        "%s: the earlier run stopped before its first checkpoint; starting from iteration 0", out
    )
    return None


def _load_state(checkpoint: SavedCheckpoint) -> dict:
    state = load_torch_file(checkpoint.state, what="training state")
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        raise InputError(
            f"{checkpoint.state}: not a vlpart training state (expected keys "
            f"{', '.join(_STATE_KEYS)})"
        )
    if state["version"] != STATE_VERSION:
        raise InputError(
            f"{checkpoint.state}: training state version {state['version']} is not {STATE_VERSION}"
        )
    if state["iteration"] != checkpoint.iteration:
        raise InputError(
            f"{checkpoint.state}: holds iteration {state['iteration']}, its folder says "
            f"{checkpoint.iteration}"
        )
    return state


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop the lines of iterations after ``iteration`` (and a torn last line), which the
    resumed run is about to log again."""
    if not path.is_file():
        return
    lines = read_text_file(path, "metrics (JSON lines)").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # torn by a kill
        if not isinstance(record, dict) or int(record.get("iteration", 0)) > iteration:
            break
        kept.append(line)
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)
