"""Video input: a clip drawn from the synthetic world, written and read back with PyAV."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vlpart.apps.cli import main
from vlpart.core.vocab import parse_vocabulary
from vlpart.inference.segmenter import PartSegmenter
from vlpart.inference.video import predict_video, write_video
from vlpart.model import build_model, save_checkpoint

VOCAB = "dog:head;dog;cat:ear"
TEXT_DIM = 32
FPS = 12
WIDTH, HEIGHT = 128, 96


def _world_frames(world, count: int) -> list[np.ndarray]:
    """``count`` synthetic-world photos (cycled), resized to WIDTH x HEIGHT."""
    photos = sorted((world / "images").glob("*.png"))
    return [
        np.array(Image.open(photos[i % len(photos)]).convert("RGB").resize((WIDTH, HEIGHT)))
        for i in range(count)
    ]


def _decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as source:
        return [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config):
    """A random-init ResNet-50 detector (its masks are not empty) and text rows for VOCAB in
    which ``dog:head`` equals ``dog``: every box then comes out as both, so each head has a
    parent (the ``dog`` with the same mask)."""
    root = tmp_path_factory.mktemp("video_model")
    cfg = tiny_config(text_dim=TEXT_DIM, score_thresh=0.05)
    torch.manual_seed(0)
    weights = save_checkpoint(
        build_model(cfg), root / "model.safetensors", config=cfg, text_encoder="precomputed"
    )
    vocab = parse_vocabulary(VOCAB)
    rows = torch.randn(len(vocab), TEXT_DIM)
    rows[vocab.names.index("dog:head")] = rows[vocab.names.index("dog")]
    np.save(root / "vocab.npy", rows.numpy())
    return weights, root / "vocab.npy"


@pytest.fixture
def segmenter(checkpoint):
    return PartSegmenter.from_pretrained(
        checkpoint[0], text_encoder="precomputed", embeddings=checkpoint[1], vocabulary=VOCAB
    )


def _cli(checkpoint, *args) -> int:
    weights, rows = map(str, checkpoint)
    text = ["--encoder", "precomputed", "--embeddings", rows, "--vocab", VOCAB]
    return main(["predict", *map(str, args), "--weights", weights, *text])


def test_video_outputs_match_per_frame_predictions(
    tmp_path, synthetic_world, checkpoint, segmenter
):
    clip = tmp_path / "clip.mp4"
    write_video(clip, _world_frames(synthetic_world, 12), fps=FPS)
    out = tmp_path / "out"
    assert _cli(checkpoint, clip, "--out", out, "--every", "3") == 0

    with av.open(str(out / "clip.mp4")) as annotated:
        stream = annotated.streams.video[0]
        assert (stream.width, stream.height) == (WIDTH, HEIGHT)
        assert stream.average_rate == Fraction(FPS)
        assert sum(1 for _ in annotated.decode(stream)) == 12

    data = json.loads((out / "clip.json").read_text())
    assert data["info"]["video"]["fps"] == FPS
    assert (data["info"]["video"]["width"], data["info"]["video"]["height"]) == (WIDTH, HEIGHT)
    assert data["info"]["video"]["frames_decoded"] == 12 and data["info"]["video"]["complete"]
    assert [im["frame_index"] for im in data["images"]] == [0, 3, 6, 9]
    assert data["images"][1]["time"] == pytest.approx(3 / FPS, abs=1e-3)
    assert [c["name"] for c in data["categories"]] == parse_vocabulary(VOCAB).names
    # Each segmented frame holds exactly what PartSegmenter.predict gives on that frame,
    # parent links (indices among the frame's own instances) included.
    frames = _decode(clip)
    vocab = parse_vocabulary(VOCAB)
    linked = 0
    for image in data["images"]:
        pred = segmenter.predict(frames[image["frame_index"]], vocabulary=vocab)
        expected = pred.to_coco(image["id"])
        got = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected, strict=True):
            assert (a["label"], a["parent"], a["segmentation"]) == (
                b["label"],
                b["parent"],
                b["segmentation"],
            )
            assert a["bbox"] == pytest.approx(b["bbox"], abs=0.02)
            if a["parent"] >= 0:
                parent = got[a["parent"]]
                assert (a["label"], parent["label"]) == ("dog:head", "dog")
                assert parent["segmentation"] == a["segmentation"]
                linked += 1
    assert linked > 0


def test_truncated_video_keeps_decoded_frames(tmp_path, synthetic_world, checkpoint, capsys):
    clip = tmp_path / "clip.mp4"
    write_video(clip, _world_frames(synthetic_world, 30), fps=FPS)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "out"
    assert _cli(checkpoint, clip, "--out", out) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"vlpart: error: {clip}: ")
    assert "frames decoded before it" in err[-1]

    result = json.loads((out / "clip.json").read_text())
    kept = result["info"]["video"]["frames_decoded"]
    assert 0 < kept < 30
    assert not result["info"]["video"]["complete"] and result["info"]["video"]["error"]
    assert len(result["images"]) == kept
    assert len(_decode(out / "clip.mp4")) == kept


def test_unreadable_video_is_one_line_error(tmp_path, checkpoint, capsys):
    clip = tmp_path / "notes.mp4"
    clip.write_text("not a video\n")
    out = tmp_path / "out"
    assert _cli(checkpoint, clip, "--out", out) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vlpart: error: {clip}: not a readable video")
    assert not (out / "notes.mp4").exists() and not (out / "notes.json").exists()


def test_every_must_be_positive(tmp_path, segmenter):
    with pytest.raises(ValueError, match="every must be at least 1"):
        vocab = parse_vocabulary(VOCAB)
        predict_video(segmenter, tmp_path / "x.mp4", vocabulary=vocab, out_dir=tmp_path, every=0)


def test_odd_sized_frames_keep_their_size(tmp_path):
    frames = [np.full((63, 95, 3), 40 * i, np.uint8) for i in range(3)]
    clip = write_video(tmp_path / "odd.mp4", frames, fps=5)
    decoded = _decode(clip)
    assert [f.shape for f in decoded] == [(63, 95, 3)] * 3
    assert [int(f.mean()) for f in decoded] == pytest.approx([0, 40, 80], abs=3)
