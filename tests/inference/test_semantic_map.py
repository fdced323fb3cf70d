"""Prediction.semantic_map: instances -> one OV-PARTS label map."""

from __future__ import annotations

import numpy as np
import pytest

from vlpart.core.errors import InputError
from vlpart.inference.prediction import Prediction


def _pred(masks, scores, label_ids, is_part):
    n = len(scores)
    return Prediction(
        boxes=np.zeros((n, 4), np.float32),
        scores=np.array(scores, np.float32),
        labels=[f"c{i}" for i in label_ids],
        label_ids=np.array(label_ids, np.int64),
        category_ids=np.array(label_ids, np.int64) + 1,
        masks=np.array(masks, bool).reshape(n, 2, 3) if n else np.zeros((0, 2, 3), bool),
        parent=np.full(n, -1, np.int64),
        is_part=None if is_part is None else np.array(is_part, bool),
    )


def test_best_scoring_part_wins_objects_and_low_scores_are_left_out():
    pred = _pred(
        masks=[
            [[1, 1, 1], [1, 1, 1]],  # object 9 covering everything (not a part)
            [[1, 1, 0], [0, 0, 0]],  # part 4, score 0.5
            [[0, 1, 1], [0, 0, 0]],  # part 7, score 0.9: wins the shared pixel
            [[0, 0, 0], [1, 0, 0]],  # part 2, score 0.1: below the threshold
        ],
        scores=[0.95, 0.5, 0.9, 0.1],
        label_ids=[9, 4, 7, 2],
        is_part=[False, True, True, True],
    )
    out = pred.semantic_map(score_thresh=0.3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[4, 7, 7], [255, 255, 255]])
    np.testing.assert_array_equal(
        pred.semantic_map(score_thresh=0.0)[1], [2, 255, 255]
    )  # the weak part is back
    everything = pred.semantic_map(parts_only=False)
    assert (everything[1, 1:] == 9).all() and everything[0, 0] == 9  # the object wins its pixels


def test_empty_prediction_and_wide_labels():
    empty = _pred([], [], [], [])
    out = empty.semantic_map()
    assert out.shape == (2, 3) and (out == 255).all()
    wide = _pred([[[1, 0, 0], [0, 0, 0]]], [0.8], [300], [True])
    out = wide.semantic_map(ignore_label=65535)
    assert out.dtype == np.int32 and out[0, 0] == 300 and out[1, 1] == 65535


def test_errors():
    with pytest.raises(InputError, match="label id 255 equals ignore_label"):
        _pred([[[1, 0, 0], [0, 0, 0]]], [0.8], [255], [True]).semantic_map()
    with pytest.raises(InputError, match="needs the prediction's is_part"):
        _pred([[[1, 0, 0], [0, 0, 0]]], [0.8], [1], None).semantic_map()
