"""The OV-PARTS evaluator: one test per rule of vlpart.evaluation.semantic, on hand-made maps
whose answers are computed by hand in the comments (percent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.vocab import Category, Vocabulary, load_builtin
from vlpart.evaluation.semantic import (
    SemanticEvaluator,
    confusion_matrix,
    evaluate_label_maps,
    semantic_scores,
)

I = 255  # noqa: E741 - the ignore label, short so the maps stay readable

# Classes 0 and 1 are seen (base), class 2 unseen (novel).
VOCAB = Vocabulary(
    (
        Category("cat:head", "cat", "head", split="base"),
        Category("cat:leg", "cat", "leg", split="base"),
        Category("dog:head", "dog", "head", split="novel"),
    ),
    name="toy",
)


def scores(gt, pred, object_mask=None):
    ev = SemanticEvaluator(VOCAB)
    ev.add(np.array(gt, np.uint8), np.array(pred, np.uint8), object_mask=object_mask)
    return ev.scores()


def test_rule1_values_outside_the_vocabulary_are_errors_ignore_is_not():
    with pytest.raises(InputError, match=r"pred\.png: label values 3, 7 are outside .*0\.\.2"):
        confusion_matrix(np.zeros((1, 3), np.uint8), np.array([[3, 7, I]], np.uint8), 3,
                         name="pred.png")  # fmt: skip
    with pytest.raises(InputError, match="ground truth of p: label values 9"):
        confusion_matrix(np.array([[9]], np.int64), np.array([[0]], np.int64), 3, name="p")
    with pytest.raises(InputError, match="dtype float32"):
        confusion_matrix(np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), 3)


def test_rule2_oracle_obj_turns_predictions_outside_the_object_into_ignore():
    gt, pred = [[0, 0]], [[1, 0]]
    # Without the mask: class 0 TP 1, GT 2, Pred 1 -> 50; class 1 predicted only -> counts 0.
    assert scores(gt, pred).miou == pytest.approx(25.0)
    # The first pixel lies outside the object: its prediction is ignored -> class 0: 1/1.
    oracle = scores(gt, pred, object_mask=np.array([[False, True]]))
    assert oracle.miou == pytest.approx(100.0)
    assert oracle.setting == "Oracle-Obj"
    assert np.isnan(oracle.iou[1])


def test_rule3_confusion_matrix_layout_and_sum_over_images():
    m = confusion_matrix(np.array([[0, 1, I]], np.uint8), np.array([[1, 1, 2]], np.uint8), 3)
    expected = np.zeros((4, 4), np.int64)
    expected[1, 0] = expected[1, 1] = 1  # rows: prediction, columns: ground truth
    expected[2, 3] = 1  # ground truth ignore: last column
    np.testing.assert_array_equal(m, expected)
    ev = SemanticEvaluator(VOCAB)
    ev.add(np.array([[0]], np.uint8), np.array([[0]], np.uint8))
    ev.add(np.array([[0, 0, 0]], np.uint8), np.array([[1, 1, 1]], np.uint8))
    # Pixels are summed, images are not averaged: class 0 TP 1, GT 4, Pred 1 -> 25 (the mean
    # of per-image IoUs would be 50); class 1 only predicted -> 0; mean over 2 classes.
    result = ev.scores()
    assert result.iou[0] == pytest.approx(25.0)
    assert result.miou == pytest.approx(12.5)
    assert result.num_images == 2


def test_rule4_only_pixels_with_a_non_ignore_prediction_and_gt_count():
    # A ground-truth pixel predicted as ignore is no miss: class 0 TP 1, GT 1, Pred 1.
    assert scores([[0, 0]], [[0, I]]).iou[0] == pytest.approx(100.0)
    # A prediction on an unlabelled pixel is no false positive.
    assert scores([[0, I]], [[0, 0]]).iou[0] == pytest.approx(100.0)
    # ... but the coverage (not an OV-PARTS number) shows the open pixel: 1 of 2 GT pixels.
    assert scores([[0, 0]], [[0, I]]).coverage == pytest.approx(50.0)


def test_rule5_iou_is_tp_over_gt_plus_pred_minus_tp():
    result = scores([[0, 0, 1, 1]], [[0, 1, 1, 1]])
    # class 0: TP 1, GT 2, Pred 1 -> 1/2; class 1: TP 2, GT 2, Pred 3 -> 2/3.
    np.testing.assert_allclose(result.iou[:2], [50.0, 200.0 / 3])
    assert np.isnan(result.iou[2])  # not in the ground truth: undefined


def test_rule6_mean_counts_classes_in_gt_or_prediction():
    result = scores([[0, 0]], [[0, 2]])
    # class 0: TP 1, GT 2, Pred 1 -> 50; class 2 predicted, absent from GT -> adds 0 but counts;
    # class 1 in neither -> not counted: (50 + 0) / 2.
    assert result.miou == pytest.approx(25.0)
    assert result.to_json()["IoU"] == {"cat:head": 50.0, "cat:leg": None, "dog:head": None}


def test_rule7_seen_unseen_means_and_harmonic_mean():
    result = scores([[0, 1, 2, 2]], [[0, 0, 2, 1]])
    # class 0: TP 1, GT 1, Pred 2 -> 50; class 1: TP 0 -> 0; class 2: TP 1, GT 2, Pred 1 -> 50.
    assert result.miou_seen == pytest.approx(25.0)
    assert result.miou_unseen == pytest.approx(50.0)
    assert result.hiou == pytest.approx(2 * 25 * 50 / 75)
    assert result.miou == pytest.approx(100.0 / 3)


def test_rule8_percent_and_undefined_means_are_none():
    # No unseen class in GT or prediction: its mean and h-IoU are undefined.
    result = scores([[0]], [[0]])
    assert result.miou_seen == pytest.approx(100.0)
    assert result.miou_unseen is None and result.hiou is None
    assert json.loads(json.dumps(result.to_json()))["mIoU_unseen"] is None
    # A vocabulary without a split has no seen/unseen means at all.
    plain = Vocabulary((Category("a", "a"), Category("b", "b")))
    ev = SemanticEvaluator(plain)
    ev.add(np.array([[0, 1]], np.uint8), np.array([[0, 1]], np.uint8))
    out = ev.scores()
    assert out.miou == pytest.approx(100.0) and out.miou_seen is None and out.hiou is None


def _reference(gts, preds, masks, num_classes, seen):
    """A pixel-by-pixel re-statement of the OV-PARTS rules, independent of the vectorised code."""
    tp = np.zeros(num_classes)
    gt_n = np.zeros(num_classes)
    pred_n = np.zeros(num_classes)
    for gt, pred, mask in zip(gts, preds, masks, strict=True):
        for g, p, m in zip(gt.ravel(), pred.ravel(), mask.ravel(), strict=True):
            if not m or p == I or g == I:
                continue
            gt_n[g] += 1
            pred_n[p] += 1
            tp[g] += g == p

    def mean(sel):
        counted = [c for c in sel if gt_n[c] + pred_n[c] > 0]
        return (
            100
            * sum(tp[c] / (gt_n[c] + pred_n[c] - tp[c]) for c in counted if gt_n[c])
            / len(counted)
        )

    s = mean([c for c in range(num_classes) if seen[c]])
    u = mean([c for c in range(num_classes) if not seen[c]])
    return mean(range(num_classes)), s, u, 2 * s * u / (s + u)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64])
def test_vectorised_numbers_equal_a_pixel_loop(dtype):
    rng = np.random.default_rng(3)
    vocab = load_builtin("pascal_part_116")
    seen = [c.split == "base" for c in vocab]
    gts, preds, masks = [], [], []
    ev = SemanticEvaluator(vocab)
    for _ in range(4):
        # Few distinct values so that classes collide; about a fifth of pixels ignore.
        gt = rng.choice([0, 1, 20, 60, 61, 115, I], size=(12, 10)).astype(dtype)
        pred = rng.choice([0, 1, 20, 60, 62, 115, I], size=(12, 10)).astype(dtype)
        mask = rng.random((12, 10)) < 0.8
        ev.add(gt, pred, object_mask=mask)
        gts.append(gt), preds.append(pred), masks.append(mask)
    got = ev.scores()
    want = _reference(gts, preds, masks, len(vocab), seen)
    np.testing.assert_allclose([got.miou, got.miou_seen, got.miou_unseen, got.hiou], want)


def _png(path, array, mode=None):
    Image.fromarray(np.asarray(array), mode=mode).save(path)
    return path


def test_folders_oracle_objects_and_saved_metrics(tmp_path):
    (tmp_path / "gt").mkdir(), (tmp_path / "pred").mkdir(), (tmp_path / "obj").mkdir()
    _png(tmp_path / "gt" / "a.png", np.array([[0, 1, 2, 2]], np.uint8))
    _png(tmp_path / "pred" / "a.png", np.array([[0, 0, 2, 1]], np.uint8))
    _png(tmp_path / "obj" / "a.png", np.array([[3, 3, 5, 5]], np.uint8))
    _png(tmp_path / "gt" / "b.png", np.array([[0, I]], np.uint8))
    _png(tmp_path / "pred" / "b.png", np.array([[1, 1]], np.uint8))
    _png(tmp_path / "obj" / "b.png", np.array([[I, 3]], np.uint8))  # b's pixel 0: no object
    result = evaluate_label_maps(
        tmp_path / "gt", tmp_path / "pred", VOCAB, object_dir=tmp_path / "obj", progress=False
    )
    # a as in rule 7; b adds nothing (its labelled pixel lies outside the object mask).
    assert result.hiou == pytest.approx(100.0 / 3) and result.num_images == 2
    json_path, md_path = result.save(tmp_path / "out")
    saved = json.loads(json_path.read_text())
    assert saved["hIoU"] == pytest.approx(100.0 / 3) and saved["setting"] == "Oracle-Obj"
    assert "| Oracle-Obj | 25.0 | 50.0 | 33.3 | 33.3 |" in md_path.read_text()


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "gt").mkdir(), (tmp_path / "pred").mkdir()
    _png(tmp_path / "gt" / "a.png", np.zeros((4, 6), np.uint8))
    pred = tmp_path / "pred" / "a.png"

    def run():
        return evaluate_label_maps(tmp_path / "gt", tmp_path / "pred", VOCAB, progress=False)

    with pytest.raises(MissingFileError, match=r"pred/a\.png: no prediction for ground truth"):
        run()
    _png(pred, np.zeros((4, 5), np.uint8))
    with pytest.raises(
        InputError, match=r"pred/a\.png: label map is 5x4 but its ground truth is 6x4"
    ):
        run()
    _png(pred, np.full((4, 6), 7, np.uint8))
    with pytest.raises(InputError, match=r"pred/a\.png: label values 7 are outside"):
        run()
    _png(pred, np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(InputError, match=r"pred/a\.png: image of mode RGB, not a label map"):
        run()
    with pytest.raises(MissingFileError, match="no .png label maps"):
        evaluate_label_maps(tmp_path / "pred" / "..", tmp_path / "pred", VOCAB)


def test_semantic_scores_checks_the_matrix_shape():
    with pytest.raises(InputError, match=r"shape \[3, 3\] for 3 classes"):
        semantic_scores(np.zeros((3, 3), np.int64), VOCAB)
