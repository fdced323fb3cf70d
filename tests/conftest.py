"""Shared fixtures: third-party data, RNG and offline guards."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (third-party files, never copied into the repo), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"third-party test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def clip_embeddings(shared_data):
    """Loader of the released CLIP RN50 prompt embeddings: ``clip_embeddings("pascal_part")``
    returns ``np.ndarray[C, 1024]`` float16 whose row i is the i-th category by id."""

    def load(name: str) -> np.ndarray:
        return np.load(shared_data / "vlpart_metadata" / f"{name}_clip_RN50_a+cname.npy")

    return load


@pytest.fixture(autouse=True)
def _rng_guard():
    """Seed every test with 0 and restore the global RNG states afterwards."""
    torch_state, np_state, py_state = (
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
    )
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    random.setstate(py_state)


@pytest.fixture(autouse=True)
def _offline_guard(monkeypatch):
    """No test may reach a model hub: hub clients are told to stay offline and downloads raise."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def no_download(*args, **kwargs):
        raise RuntimeError("tests must not download anything")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private embedding cache, also exported as ``$VLPART_CACHE``."""
    monkeypatch.setenv("VLPART_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
