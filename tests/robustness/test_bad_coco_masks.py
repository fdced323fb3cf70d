"""Malformed masks in COCO files (RLE and polygons), in training data, ground truth and eval
results: one line naming the file, the JSON path and the problem; nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils
from robust_helpers import cli_error

from vlpart.core.coco import decode_segmentation, load_coco, load_results
from vlpart.core.errors import InputError
from vlpart.evaluation.coco_eval import evaluate_results

H, W = 6, 5  # the hand-made ground truth's image


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)[:, :, None]))[0]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


MASK = np.zeros((H, W), np.uint8)
MASK[1:4, 2:5] = 1
GOOD = _rle(MASK)  # runs 0 ... of a 6x5 image

# Broken segmentations (RLE and polygons) and the problem their one line names.
BAD_SEGMENTATIONS = {
    "garbage string": ({"size": [H, W], "counts": "!!#~~"}, "character '!' at 0 is not an RLE"),
    "overflowing run": ({"size": [H, W], "counts": "PPPPPPPP0"}, "a run of 9 digits overflows"),
    "truncated string": ({"size": [H, W], "counts": GOOD["counts"][:-1]}, "cover"),
    "string ends inside a run": ({"size": [H, W], "counts": "P"}, "ends inside a run"),
    "string of another size": (_rle(np.ones((9, 9))) | {"size": [H, W]}, "the runs cover 81"),
    "non-ASCII string": ({"size": [H, W], "counts": "é1"}, "non-ASCII"),
    "empty string": ({"size": [H, W], "counts": ""}, "the runs cover 0 pixels, not the 6x5"),
    "negative run": ({"size": [H, W], "counts": "0@"}, "negative or overflows"),
    "list too short": ({"size": [H, W], "counts": [3]}, "the runs cover 3 pixels"),
    "list too long": ({"size": [H, W], "counts": [5, 100]}, "the runs cover 105 pixels"),
    "list overflows uint32": ({"size": [H, W], "counts": [2**40]}, "2^32 - 1"),
    "list of floats": ({"size": [H, W], "counts": [1.5, 28.5]}, "list of run lengths"),
    "list with negatives": ({"size": [H, W], "counts": [-1, 31]}, "list of run lengths"),
    "counts null": ({"size": [H, W], "counts": None}, "got None"),
    "counts an object": ({"size": [H, W], "counts": {"a": 1}}, "expected an RLE string"),
    "size of another image": (_rle(np.ones((3, 10))), "mask size [3, 10] differs from image"),
    "size missing": ({"counts": GOOD["counts"]}, "size: expected [height, width]"),
    "size negative": ({"size": [-6, 5], "counts": [0]}, "size: expected [height, width]"),
    "polygon of 2 points": ([[0, 0, 1, 1]], "at least 3 points"),
    "polygon odd length": ([[0, 0, 1, 1, 2]], "x, y pairs"),
    "polygon of strings": ([["a", "b", "c", "d", "e", "f"]], "expected a polygon"),
    "segmentation a string": ("abc", "expected polygons or RLE"),
}


def _gt(segmentation=GOOD) -> dict:
    return {
        "images": [{"id": 1, "width": W, "height": H, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 1, 3, 3], "area": 9.0}
            | {"segmentation": segmentation, "iscrowd": 0}
        ],
    }


def _det(segmentation) -> dict:
    return {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": segmentation}


@pytest.mark.parametrize("case", list(BAD_SEGMENTATIONS))
def test_bad_segmentation_in_ground_truth(case, tmp_path):
    segmentation, problem = BAD_SEGMENTATIONS[case]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_gt(segmentation)))
    with pytest.raises(InputError) as info:
        load_coco(path)
    line = str(info.value)
    assert line.startswith(f"{path}: annotations[0].segmentation"), line
    assert problem in line and "\n" not in line, line


@pytest.mark.parametrize(
    "case", [c for c, (s, _) in BAD_SEGMENTATIONS.items() if isinstance(s, dict)]
)
def test_bad_rle_in_results_cli(case, capsys, tmp_path):
    segmentation, problem = BAD_SEGMENTATIONS[case]
    gt, res, out = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "out"
    gt.write_text(json.dumps(_gt()))
    res.write_text(json.dumps([_det(GOOD), _det(segmentation)]))
    line = cli_error(capsys, ["eval", "--results", res, "--gt", gt, "--out", out])
    assert line.startswith(f"vlpart: error: {res}: [1].segmentation"), line
    assert problem in line, line
    assert not out.exists()


@pytest.mark.parametrize("case", ["garbage string", "list too short", "size of another image"])
def test_bad_rle_in_ground_truth_cli(case, capsys, tmp_path):
    segmentation, problem = BAD_SEGMENTATIONS[case]
    gt, res, out = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "out"
    gt.write_text(json.dumps(_gt(segmentation)))
    res.write_text(json.dumps([_det(GOOD)]))
    line = cli_error(capsys, ["eval", "--results", res, "--gt", gt, "--out", out])
    assert line.startswith(f"vlpart: error: {gt}: annotations[0].segmentation"), line
    assert problem in line and not out.exists(), line


def test_uncompressed_rle_results_are_accepted_and_score_as_compressed():
    """Run-length lists (``counts`` a list of ints) are valid COCO results: they are checked
    and evaluated exactly as their compressed form."""
    flat = MASK.T.reshape(-1)  # column-major, as COCO counts
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    listed = {"size": [H, W], "counts": [0] * int(flat[0]) + np.diff(bounds).tolist()}
    assert (mask_utils.decode(mask_utils.frPyObjects(listed, H, W)) == MASK).all()
    [checked] = load_results([_det(listed)], _gt())
    assert checked["segmentation"] == GOOD
    ap_list = evaluate_results(_gt(), [_det(listed)], iou_types=("segm",))
    ap_str = evaluate_results(_gt(), [_det(GOOD)], iou_types=("segm",))
    assert ap_list.metrics == ap_str.metrics
    assert ap_list.metrics["segm"]["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("case", ["garbage string", "list too long", "polygon of 2 points"])
def test_decode_segmentation_raises_input_error(case):
    segmentation, problem = BAD_SEGMENTATIONS[case]
    with pytest.raises(InputError, match=problem.replace("(", r"\(")):
        decode_segmentation(segmentation, H, W, where="ann 7")
    assert (decode_segmentation(GOOD, H, W) == MASK).all()


@pytest.mark.parametrize("case", ["garbage string", "overflowing run", "list too short"])
def test_bad_rle_in_training_data(case, capsys, fast_train_yaml, tmp_path):
    segmentation, problem = BAD_SEGMENTATIONS[case]
    config = yaml.safe_load(fast_train_yaml.read_text())
    source = Path(config["data"][0]["ann_file"])
    coco = json.loads(source.read_text())
    image = {img["id"]: img for img in coco["images"]}[coco["annotations"][0]["image_id"]]
    size = [image["height"], image["width"]]
    coco["annotations"][0]["segmentation"] = segmentation | {"size": size}
    ann = tmp_path / "broken.json"
    ann.write_text(json.dumps(coco))
    config["data"][0]["ann_file"] = str(ann)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    line = cli_error(capsys, ["train", path, "--out", out])
    assert line.startswith(f"vlpart: error: {ann}: annotations[0].segmentation.counts"), line
    assert (problem if "list" not in case else "the runs cover 3 pixels") in line, line
    assert not out.exists() or not any(out.iterdir())
