"""The pipelined pass over image files (:mod:`vlpart.inference.pipeline`): the same files byte
for byte as the sequential path, input order, bounded queues, errors surfacing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vlpart.core.vocab import parse_vocabulary
from vlpart.inference.files import predict_files
from vlpart.inference.pipeline import PENDING_PER_WRITER, predict_pipelined
from vlpart.inference.segmenter import PartSegmenter
from vlpart.text.precomputed import PrecomputedTextEncoder


def _photos(root: Path) -> list[Path]:
    """Six noise images of varied sizes and formats, two with the same stem, one unreadable."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(90, 120), (64, 64), (150, 100), (80, 140), (120, 90)]):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (f"im{i}.jpg" if i % 2 else f"im{i}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    paths.insert(2, root / "a" / "broken.png")
    paths[2].write_bytes(b"not an image")
    paths.append(root / "b" / "im1.png")  # a second "im1": its overlay gets a suffix
    Image.fromarray(rng.integers(0, 255, (70, 70, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_pipelined_outputs_equal_the_sequential_ones_byte_for_byte(tiny_models, tmp_path):
    vocab = parse_vocabulary("dog; dog:head,torso")
    model = tiny_models()
    encoder = PrecomputedTextEncoder(torch.randn(len(vocab), model.text_dim), vocab.prompts())
    segmenter = PartSegmenter(model, encoder)
    paths = _photos(tmp_path / "in")
    runs = {}
    for name, workers, writers in [("sequential", 0, 0), ("pipelined", 1, 3)]:
        summary = predict_files(
            segmenter,
            paths,
            vocabulary=vocab,
            out_dir=tmp_path / name,
            score_threshold=0.0,
            save_masks=True,
            num_workers=workers,
            writers=writers,
        )
        assert len(summary.processed) == 6 and len(summary.failed) == 1
        assert summary.failed[0][0].endswith("broken.png")
        assert summary.num_instances > 0
        runs[name] = _files(tmp_path / name)
    assert "overlays/im1_6.png" in runs["sequential"]
    assert sum(k.startswith("masks/") for k in runs["sequential"]) > 6
    assert runs["pipelined"] == runs["sequential"]


class _FakeSegmenter:
    """What the pipeline uses of a segmenter: one box per image, its height as the score."""

    backend = SimpleNamespace(transform=SimpleNamespace(min_size=800))
    refiner = None

    def predict(self, arrays, *, vocabulary, score_threshold, image_sizes):
        return [SimpleNamespace(height=size[0]) for size in image_sizes]


def test_results_keep_the_input_order_and_the_queue_stays_bounded(tmp_path):
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(np.zeros((10 + i, 8, 3), np.uint8)).save(paths[-1])
    paths[4] = tmp_path / "missing.png"
    started = []

    def start(image):
        started.append(image.index)
        return lambda pred: (image.number, pred.height)

    received = []
    writers = 2
    for item in predict_pipelined(
        _FakeSegmenter(), paths, vocabulary=None, start=start, num_workers=0, writers=writers
    ):
        received.append(item)
        # Never more than the bounded queue ahead of what was handed out.
        assert len(started) - sum(r.error is None for r in received) <= PENDING_PER_WRITER * writers
    assert [r.index for r in received] == list(range(12))
    assert received[4].error is not None and "missing.png" in received[4].error
    values = [r.value for r in received if r.error is None]
    assert values == [(n, 10 + i) for n, i in enumerate([0, 1, 2, 3, *range(5, 12)], start=1)]


def test_an_error_of_the_finishing_work_is_raised_at_its_image(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(paths[-1])

    def start(image):
        def finish(pred):
            if image.index == 2:
                raise OSError(28, "No space left on device")
            return image.index

        return finish

    done = []
    with pytest.raises(OSError, match="No space left"):
        for item in predict_pipelined(
            _FakeSegmenter(), paths, vocabulary=None, start=start, num_workers=0, writers=1
        ):
            done.append(item.value)
    assert done == [0, 1]
