"""semantic_predictor: a model's label maps, and Oracle-Obj telling the model the objects."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.vocab import parse_vocabulary
from vlpart.evaluation.model_eval import semantic_predictor
from vlpart.inference.prediction import Prediction

VOCAB = parse_vocabulary("cat:head; dog:head")


class _FixedSegmenter:
    """Stands in for PartSegmenter: the same two instances for every image."""

    def predict(self, image, *, vocabulary, score_threshold):
        assert vocabulary is VOCAB
        masks = np.zeros((2, 2, 4), bool)
        masks[0] = True  # dog:head over everything, the better score
        masks[1, :, :2] = True  # cat:head over the left half
        keep = np.array([0.9, 0.6]) >= score_threshold
        return Prediction(
            boxes=np.zeros((2, 4), np.float32),
            scores=np.array([0.9, 0.6], np.float32),
            labels=["dog:head", "cat:head"],
            label_ids=np.array([1, 0]),
            category_ids=np.array([2, 1]),
            masks=masks,
            parent=np.array([-1, -1]),
            is_part=np.array([True, True]),
        ).subset(np.nonzero(keep)[0])


@pytest.fixture
def folders(tmp_path):
    Image.new("RGB", (4, 2)).save(tmp_path / "a.jpg")
    (tmp_path / "obj").mkdir()
    # Left half: object 0 (cat), right half: object 1 (dog), last column: no object.
    Image.fromarray(np.array([[0, 0, 1, 255], [0, 0, 1, 255]], np.uint8)).save(
        tmp_path / "obj" / "a.png"
    )
    return tmp_path


def test_whole_image_the_best_score_wins(folders):
    predict = semantic_predictor(_FixedSegmenter(), folders, VOCAB, score_thresh=0.5)
    np.testing.assert_array_equal(predict("a"), [[1, 1, 1, 1], [1, 1, 1, 1]])


def test_oracle_objects_let_only_their_own_parts_compete(folders):
    predict = semantic_predictor(
        _FixedSegmenter(),
        folders,
        VOCAB,
        score_thresh=0.5,
        object_dir=folders / "obj",
        object_names=["cat", "dog"],
    )
    # The cat's pixels take cat:head (row 0) although dog:head scores higher there.
    np.testing.assert_array_equal(predict("a"), [[0, 0, 1, 255], [0, 0, 1, 255]])


def test_oracle_errors(folders):
    kwargs = dict(score_thresh=0.5, object_dir=folders / "obj")
    with pytest.raises(InputError, match="object index 1, but only 1 names"):
        semantic_predictor(_FixedSegmenter(), folders, VOCAB, object_names=["cat"], **kwargs)("a")
    with pytest.raises(MissingFileError, match=r"b\.jpg: no image for ground truth b"):
        semantic_predictor(_FixedSegmenter(), folders, VOCAB, **kwargs)("b")
