"""Tiny detectors shared by the model tests (built once per session, random init)."""

from __future__ import annotations

import pytest
import torch

from vlpart.config import ModelConfig
from vlpart.model import build_model

TEXT_DIM = 32
NUM_CLASSES = 5


def tiny_model_config(**overrides) -> ModelConfig:
    """Random-init detector at 64–128 px with narrow FPN and few RoIs."""
    values = dict(
        backbone="resnet50",
        backbone_weights=None,
        fpn_channels=32,
        min_size=96,
        max_size=128,
        text_dim=TEXT_DIM,
        roi_batch_size_per_image=32,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=50,
        detections_per_image=10,
        score_thresh=0.0,
    )
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(**overrides)`` → :func:`tiny_model_config`."""
    return tiny_model_config


@pytest.fixture(scope="session")
def tiny_models():
    """``tiny_models(backbone, cascade)`` → a cached random-init model in eval mode with a
    5-class vocabulary set; tests that train take a ``copy.deepcopy``."""
    cache = {}

    def get(backbone: str = "resnet50", cascade: bool = False):
        key = (backbone, cascade)
        if key not in cache:
            state = torch.get_rng_state()
            torch.manual_seed(0)
            model = build_model(tiny_model_config(backbone=backbone, cascade=cascade))
            model.set_vocabulary(torch.randn(NUM_CLASSES, TEXT_DIM))
            torch.set_rng_state(state)
            cache[key] = model.eval()
        return cache[key]

    return get


@pytest.fixture
def part_batch():
    """Two images (one with two objects, one with none) and their part-kind targets."""
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 100)]
    masks = torch.zeros(2, 96, 128, dtype=torch.uint8)
    masks[0, 10:70, 10:60] = 1
    masks[1, 20:80, 30:90] = 1
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10, 60, 70], [30, 20, 90, 80]]),
            "labels": torch.tensor([1, 3]),
            "masks": masks,
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 80, 100, dtype=torch.uint8),
        },
    ]
    return images, targets
