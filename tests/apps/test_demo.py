"""The demo's request handler, without a browser: bad inputs, thresholds, vocabulary changes,
the embedding cache, downloads, and the command's own errors."""

import json
import math
import socket
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from vlpart.apps.cli import main
from vlpart.apps.demo import AS_TYPED, TABLE_HEADERS, DemoHandler, DemoLimits, write_downloads
from vlpart.core.vocab import at_granularity, parse_vocabulary
from vlpart.inference.segmenter import PartSegmenter


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    """The untrained tiny detector (score_thresh 0, 10 detections per image) with MiniLM."""
    return PartSegmenter.from_pretrained(tiny_checkpoint)


@pytest.fixture
def handler(segmenter):
    return DemoHandler(segmenter)


@pytest.fixture
def photo(tmp_path):
    """A 120x80 RGB photo-like image (smooth colours plus texture) as a JPEG file."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:120]
    base = np.stack([xx * 2, yy * 3, (xx + yy)], axis=-1).astype(np.float32)
    array = (base + rng.normal(0, 20, base.shape)).clip(0, 255).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(array).save(path, quality=95)
    return path


def _encode_calls(segmenter, monkeypatch) -> list[list[str]]:
    """Record the prompts the segmenter's text encoder is asked to embed."""
    calls: list[list[str]] = []
    real = segmenter.text_encoder.encode

    def encode(prompts):
        calls.append(list(prompts))
        return real(prompts)

    monkeypatch.setattr(segmenter.text_encoder, "encode", encode)
    return calls


def test_request_returns_overlay_table_and_coco(handler, photo):
    result = handler(photo, "dog; dog:head,torso", AS_TYPED, 0.0)
    assert result.ok, result.message
    # The tiny model keeps every detection at threshold 0 (10 per image).
    assert len(result.rows) == 10 and len(result.coco) == 10
    assert result.overlay.shape == (80, 120, 3) and result.overlay.dtype == np.uint8
    assert result.name == "photo"
    assert all(len(row) == len(TABLE_HEADERS) for row in result.rows)
    assert [row[0] for row in result.rows] == list(range(10))
    labels = [row[1] for row in result.rows]
    assert set(labels) <= {"dog", "dog:head", "dog:torso"}
    scores = [row[2] for row in result.rows]
    assert scores == sorted(scores, reverse=True)
    assert result.message.startswith(f"10 instances of {len(set(labels))} of the 3 categories")
    for row, record in zip(result.rows, result.coco, strict=True):
        assert record["label"] == row[1]
        assert record["category_id"] == ["dog", "dog:head", "dog:torso"].index(row[1]) + 1
        x, y, w, h = record["bbox"]
        assert row[3] == ", ".join(f"{v:.0f}" for v in (x, y, x + w, y + h))
        parent = record["parent"]
        assert row[4] == (f"#{parent} {labels[parent]}" if parent >= 0 else "")
        assert mask_utils.decode(record["segmentation"]).shape == (80, 120)


def test_threshold_keeps_the_instances_above_it(handler, photo):
    everything = handler(photo, "dog:head,leg", AS_TYPED, 0.0)
    scores = [r["score"] for r in everything.coco]
    cut = float(np.median(scores))
    kept = handler(photo, "dog:head,leg", AS_TYPED, cut)
    assert kept.ok
    expected = [r for r in everything.coco if r["score"] >= cut]
    assert 0 < len(kept.coco) < len(everything.coco) or len(set(scores)) == 1
    assert [(r["label"], r["bbox"]) for r in kept.coco] == [
        (r["label"], r["bbox"]) for r in expected
    ]
    none = handler(photo, "dog:head,leg", AS_TYPED, 1.0)
    assert none.ok and none.rows == [] and none.coco == []
    assert "no instance of the 2 categories scored at least 1.00" in none.message
    assert none.overlay.shape == (80, 120, 3)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, None, "high"])
def test_threshold_out_of_range_is_a_message(handler, photo, value):
    result = handler(photo, "dog", AS_TYPED, value)
    assert not result.ok and result.overlay is None
    assert result.message == f"the score threshold must be between 0 and 1, got {value!r}"


def test_vocabulary_changes_between_calls_and_embeddings_are_cached(
    handler, segmenter, photo, monkeypatch
):
    calls = _encode_calls(segmenter, monkeypatch)
    first = handler(photo, "zebra; zebra:stripe", AS_TYPED, 0.0)
    assert {r[1] for r in first.rows} <= {"zebra", "zebra:stripe"} and first.rows
    assert calls == [["a zebra", "a zebra stripe"]]
    second = handler(photo, "kite:tail,string", AS_TYPED, 0.0)
    assert {r[1] for r in second.rows} <= {"kite:tail", "kite:string"} and second.rows
    assert calls[-1] == ["a kite tail", "a kite string"]
    # Back to the first vocabulary: served from the cache, same answer.
    again = handler(photo, "zebra; zebra:stripe", AS_TYPED, 0.0)
    assert len(calls) == 2
    assert again.coco == first.coco
    # Another template means other prompts, embedded once.
    handler(photo, "kite:tail,string", AS_TYPED, 0.0, "part_of_object")
    assert calls[-1] == ["tail of a kite", "string of a kite"]
    handler(photo, "kite:tail,string", AS_TYPED, 0.0, "part_of_object")
    assert len(calls) == 3


def test_granularity_presets(handler, photo):
    for granularity in ("objects", "parts", "every_part"):
        result = handler(photo, "cat:head", granularity, 0.0)
        allowed = at_granularity(parse_vocabulary("cat:head"), granularity).names
        assert result.ok and result.rows
        assert {r[1] for r in result.rows} <= set(allowed)
        assert f"of the {len(allowed)} categories" in result.message
    bad = handler(photo, "cat:head", "everything", 0.0)
    assert not bad.ok and bad.message == "unknown granularity 'everything'"


def _png_with_size(path, width: int, height: int) -> None:
    """A tiny PNG file whose header claims ``width x height`` (a decompression bomb's header)."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def test_bad_images_are_messages_naming_the_file(handler, photo, tmp_path):
    broken = tmp_path / "cache" / "abc123" / "broken.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"this is not a jpeg")
    truncated = tmp_path / "cache" / "half.jpg"
    truncated.write_bytes(photo.read_bytes()[:300])
    big = tmp_path / "cache" / "big.png"
    _png_with_size(big, 6_000, 5_000)
    bomb = tmp_path / "cache" / "bomb.png"
    _png_with_size(bomb, 30_000, 30_000)  # above Pillow's own limit too
    cases = {
        None: "upload an image first (or pick an example)",
        "": "upload an image first (or pick an example)",
        broken: "broken.jpg: not a readable image",
        truncated: "half.jpg: not a readable image",
        big: "big.png: image is 6000x5000 (30.0 megapixels), above the limit of 24.0 megapixels",
        bomb: "bomb.png: ",
        tmp_path / "gone.png": "gone.png: image not found",
    }
    for image, expected in cases.items():
        result = handler(image, "dog", AS_TYPED, 0.3)
        assert not result.ok and result.overlay is None and result.rows == []
        assert result.message.startswith(expected), result.message
        assert str(tmp_path) not in result.message  # the server's folders stay private
    assert "pixel" in handler(bomb, "dog").message
    assert handler(photo, "dog", AS_TYPED, 0.0).ok  # and the next request works


def test_pixel_limit_is_the_handlers(segmenter, photo):
    small = DemoHandler(segmenter, limits=DemoLimits(max_pixels=120 * 80 - 1))
    result = small(photo, "dog", AS_TYPED, 0.0)
    assert not result.ok
    assert result.message.startswith("photo.jpg: image is 120x80 (0.0 megapixels), above the")
    assert result.message.endswith("; 'vlpart demo --max-pixels N' reads it")
    assert DemoHandler(segmenter, limits=DemoLimits(max_pixels=120 * 80))(photo, "dog").ok


@pytest.mark.parametrize(
    ("vocabulary", "granularity", "expected"),
    [
        ("", AS_TYPED, "type a vocabulary, e.g. 'dog:head,torso,leg,tail' or 'pascal_part'"),
        ("  ", AS_TYPED, "type a vocabulary"),
        ("pascal_prt", AS_TYPED, "unknown vocabulary 'pascal_prt'; did you mean 'pascal_part'"),
        ("dog:", AS_TYPED, "'dog:': entry 'dog:' names no parts"),
        ("/etc/passwd.txt", AS_TYPED, "'/etc/passwd.txt': the demo does not read vocabulary"),
        ("giraffe:*", AS_TYPED, "'giraffe:*': no built-in taxonomy has parts of 'giraffe'"),
        ("giraffe", "every_part", "no built-in taxonomy has parts of 'giraffe'"),
        ("dog;" * 6000, AS_TYPED, "the vocabulary is longer than 20000 characters"),
    ],
)
def test_bad_vocabularies_are_messages(handler, photo, vocabulary, granularity, expected):
    result = handler(photo, vocabulary, granularity, 0.3)
    assert not result.ok and result.overlay is None
    assert result.message.startswith(expected), result.message


def test_bad_template_is_a_message(handler, photo):
    result = handler(photo, "dog:head", AS_TYPED, 0.3, "a_objet_part")
    assert not result.ok
    assert result.message.startswith("unknown prompt template 'a_objet_part'; did you mean")
    custom = handler(photo, "dog:head", AS_TYPED, 0.0, "the {part} of the {object}")
    assert custom.ok and {r[1] for r in custom.rows} == {"dog:head"}


def test_internal_errors_are_messages(handler, segmenter, photo, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(segmenter, "predict", fail)
    result = handler(photo, "dog", AS_TYPED, 0.3)
    assert not result.ok
    assert result.message == "internal error (RuntimeError: out of memory); see the server log"


def test_downloads_are_coco_results_and_the_overlay(handler, photo, tmp_path):
    result = handler(photo, "dog; dog:head", AS_TYPED, 0.0)
    json_path, png_path = write_downloads(result, tmp_path / "out")
    assert json_path.name == "photo_results.json" and png_path.name == "photo_overlay.png"
    records = json.loads(json_path.read_text())
    assert records == result.coco
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "width": 120, "height": 80, "file_name": "photo.jpg"}],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "dog:head"}],
        "annotations": [],
    }
    gt.createIndex()
    loaded = gt.loadRes(str(json_path))
    assert len(loaded.getAnnIds()) == len(records) == 10
    np.testing.assert_array_equal(np.asarray(Image.open(png_path)), result.overlay)
    failed = handler(None, "dog")
    with pytest.raises(ValueError, match="nothing to download"):
        write_downloads(failed, tmp_path / "out")


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="concurrency must be positive, got 0"):
        DemoLimits(concurrency=0)


def test_app_is_queued_offline_and_bounded(handler):
    from vlpart.apps.demo import build_app

    limits = DemoLimits(concurrency=2, queue_size=5)
    app, files = build_app(DemoHandler(handler.segmenter, limits=limits))
    try:
        assert app.analytics_enabled is False
        assert app._queue.max_size == 5
        segment = next(fn for fn in app.fns.values() if fn.api_name == "segment")
        assert segment.concurrency_limit == 2
        assert files.root.is_dir()
    finally:
        files.close()
    assert not files.root.exists()


def test_command_without_weights_says_how_to_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "vlpart: error: no model: pass --weights FILE or --model NAME, or run 'vlpart "
        "quickstart' (it writes quickstart/model.safetensors)"
    )
    assert main(["demo", "--weights", "nope.safetensors"]) == 2
    assert capsys.readouterr().err.strip() == (
        "vlpart: error: nope.safetensors: weights file not found"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--weights", "a", "--model", "b"])
    assert exit_info.value.code == 2
    assert "argument --model: not allowed with argument --weights" in capsys.readouterr().err


def test_command_limit_flags_and_busy_port(tiny_checkpoint, capsys):
    assert main(["demo", "--weights", str(tiny_checkpoint), "--concurrency", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("vlpart: error: concurrency must be positive, got 0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--weights", str(tiny_checkpoint), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vlpart: error: cannot serve on 127.0.0.1:{port}")


def test_help_names_the_default_limits(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    limits = DemoLimits()
    assert f"(default {limits.max_upload_mb:g})" in text
    assert f"(default {limits.max_pixels})" in text
    assert f"(default {limits.concurrency})" in text
    assert "127.0.0.1" in text
