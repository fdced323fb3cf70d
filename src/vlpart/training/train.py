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

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vlpart.core.config import Config, TrainConfig
from vlpart.core.distributed import DistInfo, init_distributed, shutdown_distributed
from vlpart.core.errors import InputError, MissingFileError, RunError
from vlpart.core.fileio import append_text, read_text_file, remove_orphans, write_text_atomic
from vlpart.model import build_model
from vlpart.model.checkpoint import (
    checkpoint_files,
    load_state_dict_strict,
    load_torch_file,
    load_weights,
)
from vlpart.training.checkpoints import (
    SavedCheckpoint,
    commit_checkpoint,
    export_weights,
    find_checkpoint,
    list_checkpoints,
    prune_checkpoints,
)
from vlpart.training.sources import TrainSource, build_loader, build_sampler, build_sources

__all__ = ["lr_factor", "train"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
STATE_VERSION = 1
_STATE_KEYS = ("version", "iteration", "optimizer", "scheduler", "scaler", "rng")


def lr_factor(iteration: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate: linear warm-up, then steps of ``lr_gamma``."""
    factor = cfg.lr_gamma ** sum(iteration >= step for step in cfg.lr_steps)
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1 - alpha) + alpha
    return factor


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


def _train(
    cfg: Config,
    out: Path,
    dist: DistInfo,
    *,
    resume: bool,
    init_weights: str | Path | None,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> Path:
    """:func:`train` inside the process group: set up (or resume) the run, loop, finish."""
    if dist.is_main:
        remove_orphans(out)
    checkpoint = _resume_point(out) if resume else None
    torch.manual_seed(cfg.train.seed)
    sources = build_sources(cfg)
    run = _build_run(cfg, out, dist, sources, checkpoint=checkpoint, init_weights=init_weights)
    sampler = build_sampler(sources, cfg, dist)
    rng_state = run.restore(checkpoint) if checkpoint is not None else None
    if dist.is_main and resume:
        _truncate_metrics(out / METRICS_FILE, run.iteration)
    sampler.set_epoch(0, start_batch=run.iteration)
    loader = build_loader(sources, sampler, cfg.train)
    if rng_state is not None:
        _set_rng_state(rng_state)
    # Created only once the data, the model and the weights have loaded: a start that fails
    # leaves no empty run folder behind.
    out.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        # The trace of a started run that ``--resume`` looks for, even before the first line.
        append_text(out / METRICS_FILE, "")
    bar = tqdm(
        total=cfg.train.max_iter,
        initial=run.iteration,
        desc="train",
        disable=not dist.is_main,
        dynamic_ncols=True,
    )
    run.started = time.perf_counter()
    try:
        for images, targets in loader:
            source, total, values = run.step(images, targets)
            bar.update(1)
            run.log(source, total, values, bar=bar)
            if run.iteration % cfg.train.checkpoint_period == 0 and (
                run.iteration < cfg.train.max_iter
            ):
                run.commit()
            if on_step is not None:
                on_step(run.iteration, values)
    except KeyboardInterrupt:
        run.commit()
        raise
    finally:
        bar.close()
    run.finish()
    return out / MODEL_FILE


@dataclass
class _Run:
    """The state of one training run between iterations, and the steps that change it."""

    cfg: Config
    out: Path
    dist: DistInfo
    sources: list[TrainSource]
    model: torch.nn.Module
    net: torch.nn.Module  # ``model``, wrapped in DistributedDataParallel under torchrun
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype
    embeddings: list[Tensor]  # per source, [C, D] on the device
    counts: list[Tensor | None]  # per source, [C] on the device
    vocabulary: list[dict]  # every category seen in training, first source first
    saved: SavedCheckpoint | None  # the newest committed checkpoint
    iteration: int = 0
    started: float = 0.0  # time.perf_counter() when the loop began

    def restore(self, checkpoint: SavedCheckpoint) -> dict:
        """Load the optimizer, scheduler and scaler state of ``checkpoint``; return the RNG
        state of this rank, to set once the data loader is built.

        Raises:
            ValueError: a damaged state, or one from another experiment.
        """
        state = _load_state(checkpoint)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(
                f"{checkpoint.state}: does not fit this config's optimizer ({err}); was it "
                "saved by another experiment?"
            ) from None
        self.iteration = checkpoint.iteration
        logger.info(
            "resuming from iteration %d of %d (%s)",
            self.iteration,
            self.cfg.train.max_iter,
            checkpoint.path,
        )
        return state["rng"][min(self.dist.rank, len(state["rng"]) - 1)]

    def step(self, images: list[Tensor], targets: list[dict]) -> tuple[int, Tensor, dict]:
        """One optimizer step on one batch (all from one source).

        Returns:
            The source index, the total loss (scalar) and each loss as a float.

        Raises:
            RunError: the loss is not finite.
        """
        tcfg, device = self.cfg.train, self.dist.device
        source = targets[0]["dataset"]
        images = [im.to(device) for im in images]
        targets = [
            {k: v.to(device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets
        ]
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=tcfg.amp):
            losses = self.net(
                images,
                targets,
                kind=self.sources[source].kind,
                text_embeddings=self.embeddings[source],
                class_image_counts=self.counts[source],
            )
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise RunError(
                f"loss is {float(total)} at iteration {self.iteration}: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if tcfg.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, tcfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return source, total, {k: float(v.detach()) for k, v in losses.items()}

    def log(self, source: int, total: Tensor, values: dict[str, float], *, bar: tqdm) -> None:
        """Append the metrics of this iteration to ``metrics.jsonl`` every ``log_period``
        iterations and at the last one (rank 0 only)."""
        tcfg = self.cfg.train
        if not self.dist.is_main:
            return
        if self.iteration % tcfg.log_period != 0 and self.iteration != tcfg.max_iter:
            return
        record = {
            "iteration": self.iteration,
            "source": self.sources[source].config.name,
            "loss": float(total.detach()),
            **values,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - self.started, 2),
        }
        append_text(self.out / METRICS_FILE, json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{record['loss']:.3f}")

    def commit(self) -> None:
        """Commit a checkpoint of this iteration (rank 0; every rank sends its RNG state)
        unless one is already saved; keep the newest ``keep_checkpoints``, export the weights.
        """
        rng = [_rng_state()]
        if self.dist.distributed:
            gathered = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if not self.dist.is_main or (
            self.saved is not None and self.saved.iteration == self.iteration
        ):
            return
        weights, sidecar = checkpoint_files(
            self.model,
            config=self.cfg.model,
            vocabulary=self.vocabulary,
            text_encoder=self.sources[0].text_identity,
        )
        state = {
            "version": STATE_VERSION,
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.saved = commit_checkpoint(
            self.out, self.iteration, weights=weights, sidecar=sidecar, state=buffer.getvalue()
        )
        prune_checkpoints(self.out, self.saved, keep=self.cfg.train.keep_checkpoints)
        export_weights(self.saved, self.out)
        logger.info("saved checkpoint at iteration %d to %s", self.iteration, self.saved.path)

    def finish(self) -> None:
        """Commit the last checkpoint and export it, also when resuming a run that had already
        finished (nothing new to commit)."""
        self.commit()
        if self.dist.is_main and self.saved is not None:
            prune_checkpoints(self.out, self.saved, keep=self.cfg.train.keep_checkpoints)
            export_weights(self.saved, self.out)


def _build_run(
    cfg: Config,
    out: Path,
    dist: DistInfo,
    sources: list[TrainSource],
    *,
    checkpoint: SavedCheckpoint | None,
    init_weights: str | Path | None,
) -> _Run:
    """The model (with the weights of ``checkpoint``, else ``init_weights``), its optimizer,
    scheduler and gradient scaler, and the per-source tensors on the device."""
    tcfg = cfg.train
    model = build_model(cfg)
    weights = checkpoint.weights if checkpoint is not None else init_weights
    if weights is not None:
        load_state_dict_strict(model, load_weights(weights), source=str(weights))
    model.to(dist.device).train()
    _freeze(model, tcfg.freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel updates each parameter in one pass (the per-tensor loop took 28 ms of a
    # 0.45 s quickstart step on one CPU thread, the fused one 5 ms); same update to float rounding.
    optimizer = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, tcfg))
    scaler = torch.amp.GradScaler(enabled=tcfg.amp and dist.device.type == "cuda")
    net = model
    if dist.distributed:
        # Image-level and parsed batches leave the RPN / box / mask heads unused.
        net = DistributedDataParallel(
            model,
            device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    records: dict[str, dict] = {}
    for s in sources:
        for record in s.dataset.vocabulary.to_json():
            records.setdefault(record["name"], record)
    return _Run(
        cfg=cfg,
        out=out,
        dist=dist,
        sources=sources,
        model=model,
        net=net,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        amp_dtype=torch.float16 if dist.device.type == "cuda" else torch.bfloat16,
        embeddings=[s.text_embeddings.to(dist.device) for s in sources],
        counts=[_to(s.class_image_counts, dist.device) for s in sources],
        vocabulary=list(records.values()),
        saved=checkpoint,
    )


def _freeze(model: torch.nn.Module, prefixes: list[str]) -> None:
    """Stop training the parameters under each dotted-name prefix of ``prefixes``.

    Raises:
        InputError: a prefix that names no parameter (a typo would freeze nothing).
    """
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        hit = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hit:
            tops = sorted({n.split(".")[0] for n in names})
            raise InputError(
                f"train.freeze: {prefix!r} names no parameter of the model; modules: "
                + ", ".join(tops)
            )
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)


def _to(tensor: Tensor | None, device: torch.device) -> Tensor | None:
    return tensor.to(device) if tensor is not None else None


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
