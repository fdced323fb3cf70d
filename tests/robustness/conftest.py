"""Fixtures of the robustness suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml


@pytest.fixture(scope="session")
def fast_train_yaml(synthetic_world, tiny_model_settings, tmp_path_factory) -> Path:
    """A training config that runs 4 iterations in about a second: one part source, random
    precomputed text rows (no text encoder to load), checkpoints every 2 iterations, the last
    one kept."""
    root = tmp_path_factory.mktemp("fast_train")
    ann = synthetic_world / "parts_base_train.json"
    num_categories = len(json.loads(ann.read_text())["categories"])
    rows = np.random.default_rng(0).standard_normal((num_categories, 384)).astype(np.float32)
    np.save(root / "rows.npy", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    config = {
        "text": {"encoder": "minilm"},
        "model": tiny_model_settings,
        "data": [
            {
                "name": "parts",
                "kind": "part",
                "ann_file": str(ann),
                "image_root": str(synthetic_world),
                "min_size": [96],
                "max_size": 96,
                "batch_size": 1,
                "embeddings": str(root / "rows.npy"),
            }
        ],
        "train": {
            "max_iter": 4,
            "warmup_iters": 1,
            "lr_steps": [3],
            "checkpoint_period": 2,
            "keep_checkpoints": 1,
            "log_period": 1,
            "num_workers": 0,
            "device": "cpu",
        },
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
