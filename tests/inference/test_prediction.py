import dataclasses
import itertools

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vlpart.inference.prediction import Prediction, assign_parents, tag_layout


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


def _crowded(h=120, w=160):
    """Two dogs; ten jittered copies of one head; eight legs of the first dog; a head that lies
    in no dog; and 30 one-off labels of a large vocabulary scattered over the image."""
    rng = np.random.default_rng(0)
    boxes, labels, parts = [[2, 2, 80, 100], [90, 10, 150, 100]], ["dog", "dog"], [False, False]
    for k in range(10):  # near-duplicates and nested copies of one head
        d = k % 3
        boxes.append([10 + d, 10 + d, 40 - d, 35 - d])
        labels.append("dog:head")
    for k in range(8):
        boxes.append([5 + 9 * k, 80, 12 + 9 * k, 98])
        labels.append("dog:leg")
    boxes.append([152, 105, 159, 118])  # a head outside both dogs
    labels.append("dog:head")
    for k in range(30):
        x, y = rng.integers(0, w - 20), rng.integers(0, h - 20)
        boxes.append([x, y, x + 20, y + 20])
        labels.append(f"thing{k}:part")
    parts += [True] * (len(labels) - 2)
    n = len(labels)
    boxes = np.array(boxes, np.float32)
    masks = np.stack([_box_mask(h, w, *(int(v) for v in b)) for b in boxes])
    scores = np.linspace(0.99, 0.31, n).astype(np.float32)
    objects = [label.split(":")[0] for label in labels]
    part_names = [label.split(":")[1] if ":" in label else None for label in labels]
    return Prediction(
        boxes=boxes,
        scores=scores,
        labels=labels,
        label_ids=np.arange(n),
        category_ids=np.arange(n) + 1,
        masks=masks,
        parent=assign_parents(masks, objects, part_names),
        is_part=np.array(parts),
    )


def test_display_drops_duplicates_and_caps_per_label_and_in_all():
    pred = _crowded()
    shown = pred.for_display(top_k_per_label=4, overlap_thresh=0.65, max_instances=None)
    # The ten stacked heads collapse to the best one; the outside head stays (other place).
    assert shown.labels.count("dog:head") == 2
    assert shown.labels.count("dog:leg") == 4  # eight disjoint legs, top 4 by score
    assert shown.labels.count("dog") == 2
    assert list(shown.scores) == sorted(shown.scores, reverse=True)
    assert len(pred.for_display()) == 25  # DRAW_MAX_INSTANCES
    everything = pred.for_display(top_k_per_label=None, overlap_thresh=None, max_instances=None)
    assert len(everything) == len(pred)


def test_display_parts_within_parent():
    pred = _crowded()
    shown = pred.for_display(parts_within_parent=True, max_instances=None)
    # Parts without a dog around them (the outside head, the 30 others) are gone ...
    assert shown.labels.count("dog:head") == 1
    assert not any(label.startswith("thing") for label in shown.labels)
    # ... and every remaining part points at a kept object whose mask holds all of its mask.
    for i in np.nonzero(shown.is_part)[0]:
        p = shown.parent[i]
        assert p >= 0 and not shown.is_part[p]
        assert not (shown.masks[i] & ~shown.masks[p]).any()
    with pytest.raises(ValueError, match="is_part"):
        _prediction().for_display(parts_within_parent=True)


def test_subset_reindexes_parents():
    pred = _prediction()
    np.testing.assert_array_equal(pred.subset([1, 0]).parent, [1, -1])
    np.testing.assert_array_equal(pred.subset([1]).parent, [-1])


def test_subset_keeps_the_prompts():
    pred = _prediction()
    assert pred.prompts is None and pred.subset([1]).prompts is None
    pred.prompts = ["a dog", "a dog head"]
    assert pred.subset([1, 0]).prompts == ["a dog head", "a dog"]


def test_tags_on_a_crowded_image_never_overlap():
    from PIL import Image, ImageDraw, ImageFont

    pred = _crowded(240, 320)
    pred = dataclasses.replace(pred, boxes=pred.boxes * 2)
    shown = pred.for_display()
    draw = ImageDraw.Draw(Image.new("RGB", (320, 240)))
    rects = tag_layout(shown, draw, ImageFont.load_default(size=11))
    placed = [r for r in rects if r is not None]
    assert len(placed) >= 20
    for a, b in itertools.combinations(placed, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert all(0 <= r[0] and r[2] <= 320 and 0 <= r[1] and r[3] <= 240 for r in placed)
    # render draws exactly for_display's instances: the same picture as drawing that subset
    # with every limit off, and not the picture of all 51 instances.
    image = np.full((240, 320, 3), 128, np.uint8)
    no_limits = {"top_k_per_label": None, "overlap_thresh": None, "max_instances": None}
    out = np.asarray(pred.render(image))
    assert np.array_equal(out, np.asarray(shown.render(image, **no_limits)))
    assert not np.array_equal(out, np.asarray(pred.render(image, **no_limits)))


def test_render_on_a_reduced_decode():
    pred = _prediction(h=60, w=100)  # masks cover x 5..25, y 5..25 of the full frame
    small = np.full((30, 50, 3), 128, np.uint8)  # the same picture decoded at 1/2
    out = np.asarray(pred.render(small))
    assert out.shape == (30, 50, 3)
    assert (out != 128).any(axis=2)[4:11, 4:11].all()  # the mask, halved, is tinted
    assert (out[20:, 20:] == 128).all()
    with pytest.raises(ValueError, match="prediction is for"):
        pred.render(np.zeros((30, 80, 3), np.uint8))  # not a common reduction
