"""The one image reader: EXIF orientation, pixel limit, every pixel mode, arrays, error texts."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlpart.core.fileio import MAX_PIXELS_ENV, read_image, read_image_size

EXIF_ORIENTATION = 0x0112


def _gradient(h=6, w=10) -> np.ndarray:
    """``[h, w, 3]`` uint8 with distinct rows and columns."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 20, y * 40, (x + y) * 10], axis=2).astype(np.uint8)


def _save(path, image: Image.Image, **kwargs):
    image.save(path, **kwargs)
    return path


def test_rgb_file_round_trip_and_writable(tmp_path):
    rgb = _gradient()
    out = read_image(_save(tmp_path / "x.png", Image.fromarray(rgb)))
    assert out.dtype == np.uint8 and out.shape == (6, 10, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, rgb)
    assert read_image_size(tmp_path / "x.png") == (6, 10)


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (1, lambda a: a),
        (3, lambda a: a[::-1, ::-1]),  # rotated 180
        (6, lambda a: np.rot90(a, k=-1)),  # rotated 90 clockwise to display
        (8, lambda a: np.rot90(a, k=1)),
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, expected):
    rgb = _gradient()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = _save(tmp_path / "x.png", Image.fromarray(rgb), exif=exif)
    out = read_image(path)
    np.testing.assert_array_equal(out, expected(rgb))
    assert read_image_size(path) == out.shape[:2]
    with Image.open(path) as opened:  # PIL images get the same treatment
        np.testing.assert_array_equal(read_image(opened), expected(rgb))


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896], [65535, 1000, 60000]], dtype=np.uint16)
    path = _save(tmp_path / "deep.png", Image.fromarray(values))
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
    out = read_image(path)
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert (out == 255).mean() < 0.5  # the old reader clipped nearly everything to white


@pytest.mark.parametrize(("mode", "dtype"), [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")])
def test_16_bit_byte_orders(mode, dtype):
    values = np.array([[0, 65535], [257, 32896]], dtype=dtype)
    image = Image.frombytes(mode, (2, 2), values.tobytes())
    assert image.mode == mode
    np.testing.assert_array_equal(read_image(image)[..., 0], [[0, 255], [1, 128]])


def test_32_bit_integer_and_float_images():
    ints = Image.fromarray(np.array([[-100, 0], [50, 300]], dtype=np.int32), mode="I")
    np.testing.assert_array_equal(read_image(ints)[..., 0], [[0, 64], [96, 255]])  # min-max
    unit = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(read_image(unit)[..., 0], [[0, 128], [255, 64]])
    byte_range = Image.fromarray(np.array([[0.0, 10.4], [200.0, 255.0]], np.float32), mode="F")
    np.testing.assert_array_equal(read_image(byte_range)[..., 0], [[0, 10], [200, 255]])
    wide = Image.fromarray(np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32), mode="F")
    np.testing.assert_array_equal(read_image(wide)[..., 0], [[0, 64], [128, 255]])
    nan = Image.fromarray(np.array([[np.nan, 0.0]], np.float32), mode="F")
    with pytest.raises(ValueError, match="NaN"):
        read_image(nan)


def test_alpha_modes_composite_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)  # opaque red
    rgba[0, 1] = (200, 0, 0, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 200, 128)  # half blue
    out = read_image(Image.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    assert abs(int(out[1, 0, 2]) - 228) <= 1 and abs(int(out[1, 0, 0]) - 127) <= 1

    la = Image.fromarray(np.array([[[10, 255], [10, 0]]], np.uint8), "LA")
    np.testing.assert_array_equal(read_image(la)[0], [[10, 10, 10], [255, 255, 255]])

    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # colour 0 transparent
    np.testing.assert_array_equal(read_image(palette)[0], [[255, 255, 255], [0, 255, 0]])

    pa = Image.new("PA", (2, 1))
    pa.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pa.putpixel((0, 0), (1, 255))
    pa.putpixel((1, 0), (1, 0))
    np.testing.assert_array_equal(read_image(pa)[0], [[0, 0, 255], [255, 255, 255]])


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "YCbCr", "P"])
def test_other_modes_convert_to_rgb(mode, tmp_path):
    source = Image.fromarray(_gradient()).convert(mode)
    out = read_image(source)
    assert out.shape == (6, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(source.convert("RGB")))


def test_cmyk_jpeg_file(tmp_path):
    path = _save(tmp_path / "c.jpg", Image.new("CMYK", (8, 4), (0, 255, 255, 0)), quality=95)
    out = read_image(path)
    assert out.shape == (4, 8, 3)
    assert out[..., 0].min() > 200 and out[..., 1:].max() < 60  # red stays red


def test_pixel_limit_is_a_clear_error(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", Image.new("RGB", (300, 200)))
    with pytest.raises(ValueError, match=r"big.png: image is 300x200 \(0.1 megapixels\), above"):
        read_image(path, max_pixels=50_000)
    with pytest.raises(ValueError, match="big.png: image is 300x200"):
        read_image_size(path, max_pixels=50_000)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ValueError, match=f"set \\${MAX_PIXELS_ENV}"):
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "60000")
    assert read_image(path).shape == (200, 300, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="whole number"):
        read_image(path)


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    # A PNG header claiming 20000 x 20000 pixels (no pixel data: nothing may be decoded).
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(ValueError, match=r"bomb.png: image has 400.0 megapixels, above the limit"):
        read_image(path)
    with pytest.raises(ValueError, match=r"bomb.png: image has 400.0 megapixels"):
        read_image(path, max_pixels=10**9)  # above Pillow's own guard: still one clear line


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png: image not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="text.jpg: not a readable image"):
        read_image(tmp_path / "text.jpg")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = _save(tmp_path / "good.png", Image.fromarray(noise))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.png: not a readable image"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png: not a readable image"):
        read_image(tmp_path / "empty.png")


def test_arrays_are_validated():
    rgb = _gradient()
    assert read_image(rgb) is rgb
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8 RGB, got \[6, 10\] uint8"):
        read_image(rgb[..., 0])
    with pytest.raises(ValueError, match="float32"):
        read_image(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="empty"):
        read_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="unsupported image type int"):
        read_image(3)


def test_huge_jpegs_are_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    import vlpart.core.fileio as io

    pixels = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    monkeypatch.setattr(io, "DRAFT_MIN_PIXELS", 1000)
    # 1/2 keeps the short side >= 100 (1/4 would give 75); the full size is in the header.
    assert io.read_image(tmp_path / "big.jpg", min_side=100).shape == (150, 200, 3)
    assert io.read_image(tmp_path / "big.jpg", min_side=40).shape == (75, 100, 3)
    assert io.read_image(tmp_path / "big.jpg", min_side=37).shape == (38, 50, 3)
    assert io.read_image_size(tmp_path / "big.jpg") == (300, 400)
    assert io.read_image(tmp_path / "big.jpg").shape == (300, 400, 3)
    assert io.read_image(tmp_path / "big.png", min_side=100).shape == (300, 400, 3)
    monkeypatch.setattr(io, "DRAFT_MIN_PIXELS", 10**9)
    assert io.read_image(tmp_path / "big.jpg", min_side=100).shape == (300, 400, 3)
