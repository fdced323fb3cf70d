import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vlpart.prediction import Prediction, assign_parents


def _box_mask(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_parents_by_containment():
    h, w = 40, 60
    masks = np.stack(
        [
            _box_mask(h, w, 0, 0, 30, 40),  # 0 dog A
            _box_mask(h, w, 30, 0, 60, 40),  # 1 dog B
            _box_mask(h, w, 2, 2, 10, 10),  # 2 dog:head inside A
            _box_mask(h, w, 40, 30, 50, 40),  # 3 dog:leg inside B
            _box_mask(h, w, 26, 5, 36, 15),  # 4 dog:tail 40% in A, 60% in B -> B
            _box_mask(h, w, 5, 5, 15, 15),  # 5 cat:head inside the cat (not a dog's)
            _box_mask(h, w, 0, 0, 20, 20),  # 6 cat
            _box_mask(h, w, 10, 20, 20, 30),  # 7 cat:ear outside the cat -> -1
        ]
    )
    objects = ["dog", "dog", "dog", "dog", "dog", "cat", "cat", "cat"]
    parts = [None, None, "head", "leg", "tail", "head", None, "ear"]
    parent = assign_parents(masks, objects, parts)
    np.testing.assert_array_equal(parent, [-1, -1, 0, 1, 1, 6, -1, -1])
    # Without the cat, its parts have no parent even though they lie inside dog A.
    parent = assign_parents(masks[[0, 5]], ["dog", "cat"], [None, "head"])
    np.testing.assert_array_equal(parent, [-1, -1])


def test_parents_edge_cases():
    masks = np.zeros((2, 8, 8), dtype=bool)
    np.testing.assert_array_equal(assign_parents(masks, ["dog", "dog"], ["head", "leg"]), [-1, -1])
    masks[0, :4] = True
    # An empty part mask has no parent; a lone object has none either.
    np.testing.assert_array_equal(assign_parents(masks, ["dog", "dog"], [None, "head"]), [-1, -1])
    assert assign_parents(np.zeros((0, 8, 8), bool), [], []).shape == (0,)


def _prediction(h=30, w=50):
    masks = np.stack([_box_mask(h, w, 5, 5, 25, 25), _box_mask(h, w, 6, 6, 12, 12)])
    return Prediction(
        boxes=np.array([[5, 5, 25, 25], [6, 6, 12, 12]], np.float32),
        scores=np.array([0.9, 0.8], np.float32),
        labels=["dog", "dog:head"],
        label_ids=np.array([0, 1]),
        category_ids=np.array([11, 12]),
        masks=masks,
        parent=np.array([-1, 0]),
    )


def test_to_coco_rle_round_trip():
    pred = _prediction()
    out = pred.to_coco(image_id=7)
    assert [r["category_id"] for r in out] == [11, 12]
    assert out[0]["bbox"] == [5.0, 5.0, 20.0, 20.0]
    assert out[1]["parent"] == 0 and out[1]["label"] == "dog:head"
    decoded = mask_utils.decode(out[1]["segmentation"])
    assert decoded.shape == (30, 50)
    np.testing.assert_array_equal(decoded.astype(bool), pred.masks[1])
    assert (
        Prediction(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            [],
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, 30, 50), bool),
            np.zeros(0, np.int64),
        ).to_coco(1)
        == []
    )


def test_render_keeps_size_and_draws():
    pred = _prediction()
    image = np.full((30, 50, 3), 128, np.uint8)
    out = np.asarray(pred.render(image))
    assert out.shape == (30, 50, 3)
    assert (out != 128).any(axis=2)[5:25, 5:25].mean() > 0.9  # masked area is tinted
    assert (out[29, 49] == 128).all()  # far corner untouched
    with pytest.raises(ValueError, match="prediction is for"):
        pred.render(np.zeros((10, 10, 3), np.uint8))


def test_render_accepts_a_path(tmp_path):
    from PIL import Image

    pred = _prediction()
    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    assert np.array_equal(
        np.asarray(pred.render(tmp_path / "x.png")), np.asarray(pred.render(image))
    )
