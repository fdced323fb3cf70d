"""Devices, huge images, split lists, videos, ONNX files and size fields that vlpart cannot use:
one line (CLI) or a documented :mod:`vlpart.core.errors` type (API); nothing written.
``ratio: 0`` in a training config is valid and turns its source off."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from PIL import Image
from robust_helpers import cli_error

from vlpart import PartSegmenter
from vlpart.core.config import config_from_dict
from vlpart.core.distributed import parse_device
from vlpart.core.errors import InputError
from vlpart.core.vocab import parse_vocabulary
from vlpart.data.pascal_part import read_split_file
from vlpart.data.sampler import MultiDatasetBatchSampler
from vlpart.export.onnx import METADATA_KEY, load_export
from vlpart.inference.segmenter import SegmenterSpec
from vlpart.inference.video import predict_video, write_video
from vlpart.training.sources import build_sources

# ------------------------------------------------------------------------------------ devices
BAD_DEVICES = ["banana", "cuda:x", "cpu:0:1", "", "cuda:99"]


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_bad_device_is_one_line_in_the_cli(device, capsys, tiny_checkpoint, tmp_path):
    if device == "cuda:99" and not torch.cuda.is_available():
        device = "cuda"  # the CUDA-less machine's version of "a GPU this machine lacks"
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    out = tmp_path / "out"
    args = ["predict", image, "--weights", tiny_checkpoint, "--vocab", "dog", "--out", out]
    line = cli_error(capsys, [*args, "--device", device])
    assert line.startswith(f"vlpart: error: --device: device {device!r}") or line.startswith(
        f"vlpart: error: --device: unknown device {device!r}"
    ), line
    assert not out.exists()


@pytest.mark.parametrize("device", ["banana", "cuda:x"])
def test_bad_device_in_the_api(device, tiny_checkpoint):
    with pytest.raises(InputError, match=f"unknown device {device!r}; expected cpu, cuda"):
        SegmenterSpec(tiny_checkpoint, device=device)
    with pytest.raises(InputError, match="unknown device"):
        PartSegmenter.from_pretrained(tiny_checkpoint, device=device)
    assert parse_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------------------ huge images
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` (a few bytes on disk: the pixels are missing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    )
    return path


@pytest.mark.parametrize("size", [(20000, 20000), (100000, 2000)])
def test_huge_png_raises_input_error_in_predict(size, tiny_checkpoint, tmp_path):
    segmenter = PartSegmenter.from_pretrained(tiny_checkpoint, text_encoder="minilm")
    image = _png_header_only(tmp_path / "huge.png", *size)
    with pytest.raises(InputError, match=r"huge\.png: image (has|is) .*megapixels"):
        segmenter.predict(image, vocabulary="dog")


# ------------------------------------------------------------------------ Pascal-Part splits
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file (byte 0 is not UTF-8)"),
        (b"GIF89a\x01\x00\x01\x00", "not a text file (byte 7 is NUL)"),
        (b"2008_000001\n\x00\x00\x00\n", "not a text file (byte 12 is NUL)"),
        (b"\xff\xd8\xff\xe0 JFIF", "not a text file (byte 0 is not UTF-8)"),
    ],
    ids=["png", "gif", "nul bytes in text", "jpeg"],
)
def test_binary_split_list(content, problem, capsys, tmp_path):
    split = tmp_path / "train.txt"
    split.write_bytes(content)
    with pytest.raises(InputError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_split_file(split)
    out = tmp_path / "parts.json"
    line = cli_error(
        capsys, ["data", "convert-pascal-part", tmp_path, tmp_path, out, "--split", split]
    )
    assert line == f"vlpart: error: {split}: {problem}; expected a split file", line
    assert not out.exists()


# ---------------------------------------------------------------------- ratio 0 means "off"
def test_ratio_zero_turns_a_source_off(fast_train_yaml, tmp_path):
    data = yaml.safe_load(fast_train_yaml.read_text())
    off = dict(data["data"][0], name="off", ratio=0, ann_file=str(tmp_path / "missing.json"))
    data["data"].append(off)
    cfg = config_from_dict(data, source="two.yaml")
    assert [s.ratio for s in cfg.data] == [1.0, 0.0]
    sources = build_sources(cfg)  # the off source's missing file is never read
    assert [s.config.name for s in sources] == ["parts"]
    with pytest.raises(InputError, match="two.yaml: data: every source has ratio 0"):
        config_from_dict({**data, "data": [dict(off, name="a"), dict(off, name="b")]}, "two.yaml")


def test_sampler_never_draws_a_zero_ratio_source():
    sampler = MultiDatasetBatchSampler(
        [np.ones(5), np.ones(7), np.ones(3)], batch_sizes=[1, 2, 1], ratios=[1, 0, 2], seed=3
    )
    drawn = {key.dataset for batch in sampler for key in batch}
    assert drawn == {0, 2}


def test_training_with_a_zero_ratio_source_runs(capsys, fast_train_yaml, tmp_path):
    from vlpart.apps.cli import main

    data = yaml.safe_load(fast_train_yaml.read_text())
    data["data"].append(dict(data["data"][0], name="off", ratio=0, ann_file="nowhere.json"))
    data["train"].update(max_iter=2, checkpoint_period=2)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 0, capsys.readouterr()
    assert (tmp_path / "run" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------- videos
def _text(path: Path) -> Path:
    path.write_text("this is not a video\n")
    return path


def _truncated_mp4(path: Path) -> Path:
    frames = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(4)]
    clip = write_video(path.with_name("whole.mp4"), frames, fps=4)
    path.write_bytes(clip.read_bytes()[:48])  # the header box, no frames
    return path


BAD_VIDEOS = {
    "0-byte": (lambda p: (p.write_bytes(b""), p)[1], "not a readable video"),
    "text named .mp4": (_text, "not a readable video"),
    "random bytes": (
        lambda p: (p.write_bytes(np.random.default_rng(0).bytes(4096)), p)[1],
        "not a readable video",
    ),
    "truncated header": (_truncated_mp4, "no video stream"),
    "json named .mp4": (lambda p: (p.write_text('{"a": 1}'), p)[1], "not a readable video"),
}


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    return PartSegmenter.from_pretrained(tiny_checkpoint, text_encoder="minilm")


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_bad_video_in_the_api(case, segmenter, tmp_path):
    make, problem = BAD_VIDEOS[case]
    clip = make(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        predict_video(segmenter, clip, vocabulary=parse_vocabulary("dog"), out_dir=out)
    line = str(info.value)
    assert line.startswith(f"{clip}: ") and problem in line and "\n" not in line, line
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["0-byte", "text named .mp4", "truncated header"])
def test_bad_video_in_the_cli(case, capsys, tiny_checkpoint, tmp_path):
    make, problem = BAD_VIDEOS[case]
    clip = make(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    args = ["predict", clip, "--weights", tiny_checkpoint, "--vocab", "dog", "--out", out]
    line = cli_error(capsys, args)
    assert line.startswith(f"vlpart: error: {clip}: ") and problem in line, line
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------ ONNX files
META = {
    "format": 1,
    "transform": {
        "min_size": 96,
        "max_size": 96,
        "pixel_mean": [123.7, 116.3, 103.5],
        "pixel_std": [58.4, 57.1, 57.4],
        "size_divisible": 32,
    },
    "text_dim": 384,
    "text_encoder": "minilm:all-MiniLM-L6-v2",
    "template": "a_object_part",
    "vocabulary": None,
    "prompts": None,
}


def _model(inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """A graph of Identity nodes from ``inputs`` to ``outputs`` (float tensors)."""
    value = onnx.helper.make_tensor_value_info
    nodes = [
        onnx.helper.make_node("Identity", [inputs[i % len(inputs)]], [name])
        for i, name in enumerate(outputs)
    ]
    graph = onnx.helper.make_graph(
        nodes,
        "foreign",
        [value(n, onnx.TensorProto.FLOAT, None) for n in inputs],
        [value(n, onnx.TensorProto.FLOAT, None) for n in outputs],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def _with_meta(path: Path, meta, *, inputs=("x",), outputs=("y",)) -> Path:
    model = _model(list(inputs), list(outputs))
    if meta is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, meta if isinstance(meta, str) else json.dumps(meta)
    onnx.save(model, str(path))
    return path


def _edit(**fields) -> dict:
    return {**META, **fields}


def _transform(**fields) -> dict:
    return _edit(transform={**META["transform"], **fields})


EXPORT_IO = {
    "inputs": ("image", "text_embeddings"),
    "outputs": ("boxes", "scores", "labels", "masks"),
}

BAD_ONNX = {
    "empty file": (lambda p: (p.write_bytes(b""), p)[1], "not a vlpart export (no 'vlpart'"),
    "garbage bytes": (
        lambda p: (p.write_bytes(b"\x08\xff\xff garbage" * 9), p)[1],
        "not a readable ONNX file",
    ),
    "truncated": (
        lambda p: (p.write_bytes(_with_meta(p, META).read_bytes()[:40]), p)[1],
        "not a readable ONNX file",
    ),
    "no metadata": (lambda p: _with_meta(p, None), "not a vlpart export (no 'vlpart' metadata)"),
    "metadata not JSON": (lambda p: _with_meta(p, "{format: 1"), "not valid JSON"),
    "metadata a list": (lambda p: _with_meta(p, [1, 2, 3]), "expected a JSON object, got list"),
    "format a list": (lambda p: _with_meta(p, _edit(format=[1])), "export format [1]"),
    "transform a list": (lambda p: _with_meta(p, _edit(transform=[96, 96])), "transform: expected"),
    "min_size 100000": (
        lambda p: _with_meta(p, _transform(min_size=100000)),
        "transform.min_size: expected an integer from 1 to 8192, got 100000",
    ),
    "max_size a string": (lambda p: _with_meta(p, _transform(max_size="96")), "transform.max_size"),
    "pixel_std zero": (lambda p: _with_meta(p, _transform(pixel_std=[0, 1, 1])), "pixel_std"),
    "pixel_mean of 2": (lambda p: _with_meta(p, _transform(pixel_mean=[1, 2])), "pixel_mean"),
    "text_dim a list": (lambda p: _with_meta(p, _edit(text_dim=[384])), "text_dim: expected"),
    "text_dim huge": (lambda p: _with_meta(p, _edit(text_dim=10**9)), "text_dim: expected"),
    "template a list": (lambda p: _with_meta(p, _edit(template=["a"])), "template: expected a str"),
    "vocabulary a string": (
        lambda p: _with_meta(p, _edit(vocabulary="dog", prompts=["a dog"])),
        "vocabulary: expected a list of strings",
    ),
    "vocabulary without prompts": (
        lambda p: _with_meta(p, _edit(vocabulary=["dog"])),
        "vocabulary and prompts do not match",
    ),
    "foreign graph with our metadata": (
        lambda p: _with_meta(p, META),
        "not a vlpart export: the graph takes ['x'] and returns ['y']",
    ),
    "fixed vocabulary without embeddings": (
        lambda p: _with_meta(
            p,
            _edit(vocabulary=["dog"], prompts=["a dog"]),
            inputs=("image",),
            outputs=EXPORT_IO["outputs"],
        ),
        "the baked text embeddings have shape none, expected [1, 384]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ONNX))
def test_bad_onnx_file(case, capsys, tmp_path):
    make, problem = BAD_ONNX[case]
    path = make(tmp_path / "model.onnx")
    with pytest.raises(InputError) as info:
        load_export(path)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value), info.value
    with pytest.raises(InputError, match="model.onnx"):
        PartSegmenter.from_onnx(path, text_encoder="minilm")
    image, out = tmp_path / "a.png", tmp_path / "out"
    Image.new("RGB", (8, 8)).save(image)
    args = ["predict", image, "--weights", path, "--vocab", "dog", "--out", out]
    line = cli_error(capsys, [*args, "--encoder", "minilm"])
    assert line.startswith(f"vlpart: error: {path}: ") and problem in line, line
    assert not out.exists()


def test_foreign_graph_with_our_names_fails_in_one_line(capsys, tmp_path):
    """Inputs and outputs named as an export's, but computing something else: refused when
    its outputs come back in the wrong shapes."""
    path = _with_meta(tmp_path / "model.onnx", META, **EXPORT_IO)
    segmenter = PartSegmenter.from_onnx(path, text_encoder="minilm")
    with pytest.raises(InputError, match=r"model\.onnx: the graph returned .* not the boxes"):
        segmenter.predict(np.zeros((40, 40, 3), np.uint8), vocabulary="dog")
    image, out = tmp_path / "a.png", tmp_path / "out"
    Image.new("RGB", (40, 40)).save(image)
    args = ["predict", image, "--weights", path, "--vocab", "dog", "--out", out]
    line = cli_error(capsys, [*args, "--encoder", "minilm"])
    assert "the graph returned" in line and not (out / "results.json").exists(), line
