"""What training reads: the data sources of a config as datasets with their text embeddings,
the multi-source batch sampler and the DataLoader."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from vlpart.core.config import Config, SourceConfig, TrainConfig
from vlpart.core.distributed import DistInfo, one_torch_thread
from vlpart.core.errors import InputError
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
from vlpart.text import TextOptions, build_text_encoder, encode_vocabulary

__all__ = ["TrainSource", "build_loader", "build_sampler", "build_sources"]

logger = logging.getLogger(__name__)


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
                encoder = TextOptions.from_config(cfg.text).build()
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


def build_sampler(
    sources: list[TrainSource], cfg: Config, dist: DistInfo
) -> MultiDatasetBatchSampler:
    """The batch sampler over all sources: repeat factors, ratios, this rank's slice."""
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


def build_loader(
    sources: list[TrainSource], sampler: MultiDatasetBatchSampler, tcfg: TrainConfig
) -> DataLoader:
    """The DataLoader of the sources' batches (workers run one torch thread each)."""
    return DataLoader(
        MultiDataset([s.dataset for s in sources]),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=tcfg.num_workers,
        worker_init_fn=one_torch_thread,
        generator=torch.Generator().manual_seed(tcfg.seed),
        persistent_workers=False,
    )
