import numpy as np
import pytest
import yaml

from vlpart.core.yolo import data_yaml, label_name, mask_polygon, polygon_lines

pytest.importorskip("cv2")


def test_polygon_lines_are_normalised_outer_contours():
    masks = np.zeros((3, 20, 40), dtype=bool)
    masks[0, 5:15, 10:30] = True  # a rectangle
    masks[1, 0:2, 0:2] = True  # a speck (4 contour points)
    masks[1, 10:20, 20:40] = True  # and a bigger piece: the one kept
    lines = polygon_lines(masks, [2, 0, 1])
    assert len(lines) == 2  # the empty mask has no polygon
    first = lines[0].split()
    assert first[0] == "2"
    xy = np.array(first[1:], dtype=float).reshape(-1, 2)
    np.testing.assert_allclose(xy.min(0), [10 / 40, 5 / 20])
    np.testing.assert_allclose(xy.max(0), [29 / 40, 14 / 20])
    second = np.array(lines[1].split()[1:], dtype=float).reshape(-1, 2)
    assert second.min(0)[0] == 0.5 and second.max(0)[1] == 1.0 - 1 / 20
    assert mask_polygon(np.zeros((4, 4), bool)) is None


def test_data_yaml_and_names():
    data = yaml.safe_load(data_yaml(["dog", "dog:head"]))
    assert data == {
        "path": ".",
        "train": "images",
        "val": "images",
        "nc": 2,
        "names": {0: "dog", 1: "dog:head"},
    }
    assert label_name(42, "/x/my dog.jpg") == "00000042_my_dog"
