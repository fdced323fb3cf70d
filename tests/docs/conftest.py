"""The workspace the documentation's examples run in: the files they name, made small.

The examples are written for a user who ran ``vlpart quickstart`` (``quickstart/model.safetensors``,
``quickstart/world/``) and has a photo or two. Here ``quickstart/model.safetensors`` (also copied
to ``model.safetensors``) is an untrained tiny EfficientNet-Lite0 detector with the quickstart's
text encoder (MiniLM, offline), ``quickstart/world/`` a 16-image synthetic world, and
``dog.jpg``, ``photo.jpg``, ``photos/`` and ``clip.mp4`` are images of that world;
``benchmarks/``, ``configs/`` and ``tools/`` link to the repository's. The examples
check that the commands and calls run, and what they print where the docs show it; what a
trained model finds is measured by ``benchmarks/`` and recorded in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _write_clip(path: Path, frames: list[np.ndarray]) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory, tiny_model_settings) -> Path:
    """A folder holding every file the examples name (see the module docstring)."""
    from vlpart.apps.quickstart.synth import synthesize_world
    from vlpart.core.config import config_from_dict
    from vlpart.model import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("docs_workspace")
    world = root / "quickstart" / "world"
    synthesize_world(world, seed=0, num_images=16, image_size=128)
    settings = {**tiny_model_settings, "min_size": 128, "max_size": 128}
    cfg = config_from_dict({"model": {**settings, "detections_per_image": 20}}).model
    state = torch.get_rng_state()
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.set_rng_state(state)
    save_checkpoint(
        model,
        root / "quickstart" / "model.safetensors",
        config=cfg,
        text_encoder="minilm:all-MiniLM-L6-v2",
    )
    for name in ("model.safetensors", "model.json"):
        shutil.copy(root / "quickstart" / name, root / name)
    images = sorted((world / "images").glob("*.png"))
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    Image.fromarray(frames[-1]).save(root / "dog.jpg", quality=95)
    Image.fromarray(frames[-2]).save(root / "photo.jpg", quality=95)
    (root / "photos").mkdir()
    for path, frame in zip(images[:2], frames[:2], strict=True):
        Image.fromarray(frame).save(root / "photos" / f"{path.stem}.jpg", quality=95)
    try:
        _write_clip(root / "clip.mp4", frames[:8])
    except ImportError:
        pass  # the video examples skip without PyAV (the `video` extra)
    for name in ("benchmarks", "configs", "tools"):  # examples name them from the repo root
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "vlpart"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vlpart.apps.cli "$@"\n')
    shim.chmod(0o755)
    return root


@pytest.fixture
def docs_env(docs_workspace) -> dict[str, str]:
    """The environment shell examples run with: this tree's ``vlpart`` first on ``PATH``,
    offline, a private cache."""
    env = dict(os.environ)
    env["PATH"] = f"{docs_workspace / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VLPART_OFFLINE"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("VLPART_CACHE", str(docs_workspace / ".cache"))
    return env
