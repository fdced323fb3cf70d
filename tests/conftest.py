"""Shared fixtures: third-party data, RNG and offline guards."""

from __future__ import annotations

import os
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vlpart_cache")


@pytest.fixture(autouse=True)
def _offline_guard(monkeypatch, _session_cache):
    """No test may reach a model hub (hub clients are told to stay offline and downloads raise)
    or write to the user's cache (``$VLPART_CACHE`` points into the session's tmp dir)."""
    monkeypatch.setenv("VLPART_CACHE", str(_session_cache))
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


class LocalFileServer:
    """An HTTP/1.1 file server on 127.0.0.1 for download tests (runs in a thread).

    Attributes:
        url: base URL (``http://127.0.0.1:PORT``).
        files: URL path (``/sub/name``) → bytes served; other paths get 404.
        requests: ``(path, Range header or None)`` of every request, in order.
        cuts: path → byte counts; each request pops one and sends only that many body bytes
            before closing the connection (an interrupted transfer).
        ignore_range: paths answered in full (200) even to a Range request.
        hanging: paths whose requests get no answer until the server stops.
        announce: path → the size the server claims (``Content-Length`` and the total of
            ``Content-Range``) instead of the true one.
        trickle: path → seconds between body chunks of 64 bytes (a slow server).
        stop_after: path → body bytes sent before the whole server stops (later requests are
            refused).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cuts: dict[str, list[int]] = {}
        self.ignore_range: set[str] = set()
        self.hanging: set[str] = set()
        self.announce: dict[str, int] = {}
        self.trickle: dict[str, float] = {}
        self.stop_after: dict[str, int] = {}
        self._release = threading.Event()
        self._closing = threading.Lock()
        self._closed = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                owner.requests.append((self.path, self.headers.get("Range")))
                if self.path in owner.hanging:
                    owner._release.wait(timeout=60)
                    return
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                size = owner.announce.get(self.path, len(data))
                match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
                if match and self.path not in owner.ignore_range:
                    start = int(match.group(1))
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                body = data[start:]
                cuts = owner.cuts.get(self.path)
                if cuts:
                    body = body[: cuts.pop(0)]
                if self.path in owner.stop_after:
                    body = body[: owner.stop_after[self.path]]
                # A body shorter or longer than announced ends the connection (HTTP/1.1).
                self.close_connection = len(body) != size - start
                try:
                    self._send(body, owner.trickle.get(self.path))
                except OSError:  # the client gave up
                    return
                if self.path in owner.stop_after:
                    threading.Thread(target=owner.close, daemon=True).start()

            def _send(self, body: bytes, delay: float | None) -> None:
                if delay is None:
                    self.wfile.write(body)
                    return
                for i in range(0, len(body), 64):
                    self.wfile.write(body[i : i + 64])
                    self.wfile.flush()
                    if owner._release.wait(delay):
                        return

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._release.set()
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def file_server():
    """A :class:`LocalFileServer` on 127.0.0.1, stopped after the test."""
    server = LocalFileServer()
    yield server
    server.close()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("HF_HUB_OFFLINE", "1")


# The one tiny detector of the suite: random init, 96 px, narrow FPN, few RoIs. Tests change it
# only through ``tiny_config(**overrides)``.
TINY_MODEL = {
    "backbone": "efficientnet_lite0",
    "backbone_weights": None,
    "fpn_channels": 32,
    "min_size": 96,
    "max_size": 96,
    "text_dim": 384,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 100,
    "roi_batch_size_per_image": 32,
    "mask_rois_per_image": 8,
    "score_thresh": 0.0,
}
# Its ResNet-50 variant (the official layout's trunk), with 32-d text rows: what the model,
# predictor and video tests exercise.
TINY_RESNET = {
    "backbone": "resnet50",
    "max_size": 128,
    "text_dim": 32,
    "rpn_post_nms_top_n_test": 50,
    "detections_per_image": 10,
}
TINY_NUM_CLASSES = 5


@pytest.fixture(scope="session")
def tiny_model_settings() -> dict:
    """``TINY_MODEL``, the model settings of the suites' fast training configs."""
    return dict(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(**overrides)`` -> the ResNet-50 tiny ``ModelConfig`` (``TINY_MODEL`` with
    ``TINY_RESNET``), with ``overrides`` on top."""
    from vlpart.core.config import ModelConfig

    def make(**overrides) -> ModelConfig:
        return ModelConfig(**{**TINY_MODEL, **TINY_RESNET, **overrides})

    return make


@pytest.fixture(scope="session")
def tiny_models(tiny_config):
    """``tiny_models(backbone, cascade)`` -> a cached random-init model in eval mode with a
    5-class vocabulary set; tests that train take a ``copy.deepcopy``."""
    from vlpart.model import build_model

    cache = {}

    def get(backbone: str = "resnet50", cascade: bool = False):
        key = (backbone, cascade)
        if key not in cache:
            state = torch.get_rng_state()
            torch.manual_seed(0)
            model = build_model(tiny_config(backbone=backbone, cascade=cascade))
            model.set_vocabulary(torch.randn(TINY_NUM_CLASSES, TINY_RESNET["text_dim"]))
            torch.set_rng_state(state)
            cache[key] = model.eval()
        return cache[key]

    return get


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory):
    """A small seeded synthetic parts world (96 px images), built once per run."""
    from vlpart.apps.quickstart.synth import synthesize_world

    root = tmp_path_factory.mktemp("world")
    synthesize_world(root, seed=0, num_images=16, image_size=96)
    return root


@pytest.fixture
def tiny_train_config(synthetic_world):
    """A cheap joint-training config on the synthetic world (parts, objects and image labels;
    MiniLM text rows, offline)."""
    from vlpart.core.config import config_from_dict

    def source(name, kind, file, **extra):
        return {
            "name": name,
            "kind": kind,
            "ann_file": str(synthetic_world / file),
            "image_root": str(synthetic_world),
            "min_size": [96],
            "max_size": 96,
            "batch_size": 2,
            **extra,
        }

    return config_from_dict(
        {
            "text": {"encoder": "minilm"},
            "model": TINY_MODEL,
            "data": [
                source("parts", "part", "parts_base_train.json"),
                source("objects", "object", "objects_train.json"),
                source("labels", "image", "image_labels_train.json", ratio=0.5),
            ],
            "train": {
                "max_iter": 6,
                "warmup_iters": 2,
                "lr_steps": [4],
                "checkpoint_period": 3,
                "log_period": 1,
                "num_workers": 0,
                "device": "cpu",
            },
        }
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny detector saved as ``model.safetensors`` + sidecar (MiniLM, 384-d)."""
    from vlpart.core.config import config_from_dict
    from vlpart.model import build_model, save_checkpoint

    cfg = config_from_dict({"model": {**TINY_MODEL, "detections_per_image": 10}}).model
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return save_checkpoint(model, path, config=cfg, text_encoder="minilm:all-MiniLM-L6-v2")
