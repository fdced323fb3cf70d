"""Preprocessing: the uint8 resize is byte-for-byte PIL's bilinear (the released models' input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlpart.model.transform import DetectorTransform, resize_image, resized_shape


def _reference_shape(h: int, w: int, short: int, cap: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge rule as DESIGN.md states it: short side to ``short``,
    long side capped at ``cap``, each side rounded half up."""
    scale = short / min(h, w)
    new_h, new_w = (short, scale * w) if h < w else (scale * h, short)
    if max(new_h, new_w) > cap:
        new_h, new_w = new_h * cap / max(new_h, new_w), new_w * cap / max(new_h, new_w)
    return int(new_h + 0.5), int(new_w + 0.5)


def _pil(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), Image.BILINEAR))


# (height, width, min_size, max_size): odd sizes, up- and downscales, portrait and landscape,
# the long-side cap, and a no-op.
CASES = [
    (37, 53, 800, 1333),
    (53, 37, 800, 1333),
    (480, 640, 800, 1333),
    (640, 480, 800, 1333),
    (333, 1001, 800, 1333),
    (1001, 333, 800, 1333),
    (1200, 1601, 800, 1333),
    (2001, 1499, 800, 1333),
    (97, 61, 64, 100),
    (61, 97, 128, 160),
    (255, 257, 127, 301),
    (800, 1067, 800, 1333),
    (5, 7, 800, 1333),
]


@pytest.mark.parametrize(("height", "width", "min_size", "max_size"), CASES)
def test_uint8_resize_is_bit_exact_with_pil(height, width, min_size, max_size):
    rng = np.random.default_rng(height * 10_000 + width)
    # Random noise and a smooth ramp: every rounding case of the bilinear filter shows up.
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, height * width * 3).reshape(height, width, 3).astype(np.uint8)
    transform = DetectorTransform(
        min_size=min_size, max_size=max_size, pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1)
    )
    size = _reference_shape(height, width, min_size, max_size)
    assert resized_shape(height, width, min_size=min_size, max_size=max_size) == size
    for array in (noise, ramp):
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        expected = _pil(array, size)
        out = resize_image(tensor, size)
        assert out.dtype == torch.uint8 and tuple(out.shape) == (3, *size)
        assert np.array_equal(out.permute(1, 2, 0).numpy(), expected)
        batch, _ = transform([tensor])
        assert batch.image_sizes == [size]
        got = batch.tensors[0, :, : size[0], : size[1]].permute(1, 2, 0).numpy()
        assert np.count_nonzero(got != expected.astype(np.float32)) == 0


def test_photo_resize_is_bit_exact_with_pil(shared_data):
    photo = np.array(Image.open(shared_data / "pascal_part_examples" / "2008_000652.jpg"))
    transform = DetectorTransform(pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1))
    batch, _ = transform([torch.from_numpy(photo).permute(2, 0, 1)])
    h, w = batch.image_sizes[0]
    assert (h, w) == _reference_shape(*photo.shape[:2], 800, 1333)
    got = batch.tensors[0, :, :h, :w].permute(1, 2, 0).numpy()
    assert np.count_nonzero(got != _pil(photo, (h, w))) == 0


def test_float_images_take_the_torch_path():
    image = torch.rand(3, 40, 60, dtype=torch.float64)
    out = resize_image(image, (20, 30))
    assert out.dtype == torch.float64 and out.shape == (3, 20, 30)
    torch.testing.assert_close(out.mean(), image.mean(), atol=1e-2, rtol=0)
    assert resize_image(image, (40, 60)) is image
