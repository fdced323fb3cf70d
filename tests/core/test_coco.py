"""The COCO-file owner: validation with JSON paths, the one name rule, RLE, records, shards."""

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vlpart.core.coco import (
    category_ids,
    category_records,
    category_vocabulary,
    decode_segmentation,
    encode_mask,
    encode_masks,
    load_coco,
    load_results,
    mask_annotation,
    merge_shards,
    result_records,
    segmentation_box,
    shard_path,
    write_records,
)
from vlpart.core.vocab import Category, Vocabulary, load_builtin, parse_vocabulary


def _gt() -> dict:
    return {
        "images": [{"id": 1, "width": 20, "height": 10, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "dog:head"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [1, 1, 4, 4],
                "segmentation": [[1, 1, 5, 1, 5, 5]],
            }
        ],
    }


def _write(tmp_path, data, name="val.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


BAD_GT = [
    (lambda d: d["annotations"][0].update(bbox="x"), r"annotations\[0\].bbox: expected 4 finite"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\].bbox: expected 4"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, "3", 4]), r"annotations\[0\].bbox"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "negative width"),
    (
        lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1]]),
        r"annotations\[0\].segmentation\[0\]: a polygon needs at least 3 points, got 2",
    ),
    (
        lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1, 5]]),
        r"segmentation\[0\]: a polygon needs x, y pairs, got 5 values",
    ),
    (
        lambda d: d["annotations"][0].update(segmentation="abc"),
        r"annotations\[0\].segmentation: expected polygons or RLE, got a JSON string",
    ),
    (
        lambda d: d["annotations"][0].update(segmentation={"counts": "x"}),
        r"segmentation.size: expected \[height, width\]",
    ),
    (lambda d: d.update(annotations={"a": 1}), "annotations: expected a list, got a JSON object"),
    (lambda d: d.pop("images"), "not a COCO file: no 'images' list"),
    (lambda d: d.update(categories=[]), "lists no categories"),
    (lambda d: d["categories"].append({"id": 3, "name": "Dog Head"}), "same category as"),
    (lambda d: d["categories"][1].update(id=1), r"categories\[1\].id: category id 1 appears twice"),
    (lambda d: d["images"][0].update(width=0), r"images\[0\].width: expected a positive integer"),
    (lambda d: d["images"][0].pop("height"), r"images\[0\]: no 'height'"),
    (lambda d: d["annotations"][0].update(image_id=7), r"\[0\].image_id: 7 is not an image"),
    (lambda d: d["annotations"][0].update(category_id=9), r"\[0\].category_id: 9 is not a"),
    (lambda d: d["annotations"][0].pop("id"), r"annotations\[0\]: no 'id'"),
    (lambda d: d["annotations"].append(3), r"annotations\[1\]: expected an annotation object"),
    (lambda d: d["images"][0].update(pos_category_ids=[5]), "5 is not a category of the file"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_GT)
def test_bad_ground_truth_names_file_and_json_path(tmp_path, mutate, message):
    data = _gt()
    mutate(data)
    with pytest.raises(ValueError, match=message) as err:
        load_coco(_write(tmp_path, data))
    assert str(err.value).startswith(f"{tmp_path / 'val.json'}: ")
    assert "\n" not in str(err.value)


def test_nan_bbox_is_refused(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps(_gt()).replace("[1, 1, 4, 4]", "[1, NaN, 4, 4]"))
    with pytest.raises(ValueError, match=r"val.json: annotations\[0\].bbox: expected 4 finite"):
        load_coco(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: annotation file not found"):
        load_coco(tmp_path / "nope.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="bin.json: not a text/JSON file"):
        load_coco(tmp_path / "bin.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_coco(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"list.json: expected a COCO object.*results file"):
        load_coco(_write(tmp_path, [], "list.json"))


def test_valid_files_load_and_masks_are_optional(tmp_path):
    data = _gt()
    assert load_coco(_write(tmp_path, data)) == data
    del data["annotations"][0]["segmentation"]
    load_coco(data)
    with pytest.raises(ValueError, match=r"ground truth: annotations\[0\]: no 'segmentation'"):
        load_coco(data, masks=True)
    image_level = {"images": _gt()["images"], "categories": _gt()["categories"]}
    load_coco(image_level, annotations=False)
    with pytest.raises(ValueError, match="no 'annotations' list"):
        load_coco(image_level)


def test_results_validation_paths():
    gt = load_coco(_gt())
    good = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5}]
    assert load_results(good, gt) == good
    for det, message in [
        ({**good[0], "score": float("nan")}, r"results: \[0\].score: expected a finite number"),
        ({**good[0], "bbox": [0, 0, 2]}, r"results: \[0\].bbox: expected 4 finite"),
        ({"image_id": 1, "category_id": 1, "score": 1.0}, "neither 'bbox' nor 'segmentation'"),
        ({**good[0], "segmentation": "x"}, r"\[0\].segmentation: expected RLE"),
        (
            {**good[0], "segmentation": encode_mask(np.zeros((3, 3), bool))},
            "mask size",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            load_results([det], gt)
    with pytest.raises(ValueError, match="is this a ground-truth file"):
        load_results({"images": []}, gt)


def _corrupt(rng: np.random.Generator, counts: str) -> str:
    """``counts`` unchanged or broken in one of the ways a hand-edited file breaks."""
    kind = rng.integers(6)
    if kind == 1:  # a character outside '0'..'o'
        i = rng.integers(len(counts))
        return counts[:i] + chr(int(rng.integers(40, 120))) + counts[i + 1 :]
    if kind == 2:  # truncated
        return counts[: rng.integers(len(counts))]
    if kind == 3:  # extra runs: too many pixels, or a string that ends inside a run
        return counts + ["PPPPPPP1", "PPPPPP1", "P1", "o0", "PP", "1"][rng.integers(6)]
    if kind == 4:  # a continued digit inserted: shifts every later run
        return counts[:1] + "P" + counts[1:]
    return counts


def test_all_strings_at_once_agree_with_one_at_a_time():
    """The vectorised check of a file's RLE strings (``_strings_cover``) accepts exactly the
    strings that ``_string_runs`` decodes and whose runs cover the mask."""
    from vlpart.core.coco import _string_runs, _strings_cover
    from vlpart.core.errors import InputError

    def one_ok(counts: str, area: int) -> bool:
        try:
            return int(_string_runs(counts, "x").sum()) == area
        except InputError:
            return False

    rng = np.random.default_rng(0)
    accepted = 0
    for _ in range(300):
        strings, areas = [], []
        for _ in range(int(rng.integers(1, 5))):
            h, w = (int(v) for v in rng.integers(1, 40, 2))
            mask = rng.random((h, w)) < rng.random()
            if rng.random() < 0.3:  # long runs: several digits, negative differences
                mask[:] = False
                mask[: h // 2, : w // 2] = True
            counts = encode_mask(mask)["counts"]
            strings.append(_corrupt(rng, counts) if rng.random() < 0.3 else counts)
            areas.append(h * w)
        want = all(one_ok(c, a) for c, a in zip(strings, areas, strict=True))
        assert _strings_cover(strings, areas) == want, (strings, areas)
        accepted += want
    assert 50 < accepted < 250  # both outcomes are exercised


def test_results_error_is_the_first_problem_in_file_order():
    gt = load_coco(_gt())
    rle = encode_mask(np.ones((10, 20), bool))
    good = {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": rle}
    broken = {**good, "segmentation": {**rle, "counts": rle["counts"] + "1"}}
    many = [good] * 50
    assert len(load_results(many, gt)) == 50
    with pytest.raises(ValueError, match=r"results: \[7\].segmentation.counts: the runs cover"):
        load_results(many[:7] + [broken] + many[7:] + [broken], gt)
    # a bad string comes before a later detection's other problem, and the reverse
    with pytest.raises(ValueError, match=r"\[3\].segmentation.counts: the runs cover"):
        load_results(many[:3] + [broken, {**good, "score": "x"}], gt)
    with pytest.raises(ValueError, match=r"\[3\].score"):
        load_results(many[:3] + [{**good, "score": "x"}, broken], gt)
    bad_gt = _gt()
    ann = {**bad_gt["annotations"][0], "segmentation": {**rle, "counts": "0"}}
    bad_gt["annotations"] = [{**ann, "id": 2, "segmentation": rle}, {**ann, "bbox": [1]}, ann]
    with pytest.raises(ValueError, match=r"annotations\[1\].bbox"):
        load_coco(bad_gt)
    bad_gt["annotations"][1] = {**ann, "id": 3, "segmentation": rle}
    with pytest.raises(ValueError, match=r"annotations\[2\].segmentation.counts: the runs"):
        load_coco(bad_gt)


def test_one_name_rule_for_training_and_evaluation():
    cats = [
        {"id": 1, "name": "dog:head"},
        {"id": 2, "name": "Quadruped Head", "supercategory": "Quadruped"},
        {"id": 3, "name": "Snake Body"},  # PartImageNet's part, no supercategory in the file
        {"id": 4, "name": "Fish Tail", "supercategory": "Aquatic"},  # not a prefix: ask the rule
        {"id": 5, "name": "trash_can"},
    ]
    vocab = category_vocabulary(cats, name="mine")
    assert vocab.name == "mine"  # the name argument is not shadowed by a category name
    assert [(c.object, c.part) for c in vocab] == [
        ("dog", "head"),
        ("Quadruped", "Head"),
        ("Snake", "Body"),
        ("Fish", "Tail"),
        ("trash_can", None),
    ]
    from vlpart.evaluation.coco_eval import evaluate_results

    gt = {
        "images": [{"id": 1, "width": 8, "height": 8}],
        "categories": cats,
        "annotations": [],
    }
    report = evaluate_results(gt, [], iou_types=("bbox",))
    assert [(r.object, r.part) for r in report.categories] == [(c.object, c.part) for c in vocab]


def test_category_records_round_trip_with_explicit_ids():
    novel = load_builtin("pascal_part").subset(split="novel")
    records = category_records(novel)
    assert [r["id"] for r in records] == [c.id for c in novel] == category_ids(novel)
    assert records[0]["supercategory"] == novel[0].object and records[0]["split"] == "novel"
    back = category_vocabulary(records, name="x")
    assert [(c.name, c.object, c.part, c.id, c.split) for c in back] == [
        (c.name, c.object, c.part, c.id, c.split) for c in novel
    ]
    spec = parse_vocabulary("dog; dog:head,tail")
    assert category_ids(spec) == [1, 2, 3]
    hand = Vocabulary((Category("a", "a"), Category("b", "b")))  # ids left at 0
    assert category_ids(hand) == [1, 2]
    assert "supercategory" not in category_records(spec)[0]


def test_rle_round_trip_and_boxes():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 7, 9)) > 0.5
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [7, 9] for r in rles)
    json.dumps(rles)
    for mask, rle in zip(masks, rles, strict=True):
        np.testing.assert_array_equal(decode_segmentation(rle, 7, 9), mask.astype(np.uint8))
        assert encode_mask(mask) == rle
    assert encode_masks(np.zeros((0, 7, 9), bool)) == []
    box = np.zeros((7, 9), bool)
    box[2:5, 3:8] = True
    ann = mask_annotation(box, ann_id=4, image_id=2, category_id=3)
    assert ann["bbox"] == [3.0, 2.0, 5.0, 3.0] and ann["area"] == 15.0
    assert segmentation_box(ann["segmentation"]) == ann["bbox"]
    uncompressed = mask_utils.frPyObjects({"size": [7, 9], "counts": [14, 3, 4, 3, 4, 3, 32]}, 7, 9)
    assert decode_segmentation({"size": [7, 9], "counts": [14, 3, 4, 3, 4, 3, 32]}, 7, 9).sum() == 9
    assert mask_utils.decode(uncompressed).sum() == 9
    poly = decode_segmentation([[1, 1, 5, 1, 5, 5, 1, 5]], 7, 9)
    assert poly.dtype == np.uint8 and poly.sum() > 0


def test_result_records_carry_explicit_ids():
    masks = np.zeros((2, 4, 6), bool)
    masks[0, :2, :3] = True
    recs = result_records(
        5, np.array([[0, 0, 3, 2], [1, 1, 2, 2]]), np.array([0.9, 0.123456]), [17, 3], masks
    )
    assert [r["category_id"] for r in recs] == [17, 3]
    assert recs[0]["bbox"] == [0.0, 0.0, 3.0, 2.0] and recs[1]["score"] == 0.12346
    assert decode_segmentation(recs[0]["segmentation"], 4, 6).sum() == 6
    assert "segmentation" not in result_records(5, np.zeros((1, 4)), [1.0], [1])[0]


def test_shards_merge_into_one_file(tmp_path):
    cats = category_records(parse_vocabulary("dog:head"))
    out = tmp_path / "parts.json"
    for rank, image_ids in enumerate([(1, 3), (2,)]):
        images = [{"id": i, "width": 4, "height": 4} for i in image_ids]
        anns = {
            i: [{"image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1], "id": 99}] * i
            for i in image_ids
        }
        write_records(shard_path(out, rank, 2), images, anns, cats, {"run": "a"})
    merged = json.loads(merge_shards(out, 2).read_text())
    assert [img["id"] for img in merged["images"]] == [1, 2, 3]
    assert [a["id"] for a in merged["annotations"]] == list(range(1, 7))
    assert [a["image_id"] for a in merged["annotations"]] == [1, 2, 2, 3, 3, 3]
    other = json.loads(shard_path(out, 1, 2).read_text())
    bad = copy.deepcopy(other)
    bad["info"] = {"run": "b"}
    shard_path(out, 1, 2).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="shard of a different run"):
        merge_shards(out, 2)
    shard_path(out, 1, 2).unlink()
    with pytest.raises(FileNotFoundError, match="missing shards"):
        merge_shards(out, 2)


def test_write_coco_stream_writes_write_cocos_bytes_from_generators(tmp_path):
    from vlpart.core.coco import write_coco, write_coco_stream

    images = [{"id": i, "file_name": f"{i}.png", "width": 4, "height": 3} for i in (1, 2)]
    cats = [{"id": 1, "name": "dog"}]
    anns = [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]
    info = {"description": "x"}
    write_coco(tmp_path / "a.json", images=images, categories=cats, annotations=anns, info=info)
    write_coco_stream(
        tmp_path / "b.json", images=iter(images), categories=cats, annotations=iter(anns), info=info
    )
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    write_coco_stream(tmp_path / "c.json", images=iter([]), categories=cats, annotations=iter([]))
    assert json.loads((tmp_path / "c.json").read_text()) == {
        "images": [],
        "categories": cats,
        "annotations": [],
    }


def test_instance_records_link_parts_and_drop_empty_masks():
    from vlpart.core.coco import instance_records

    masks = np.zeros((4, 10, 12), dtype=bool)
    masks[0, 0:8, 0:10] = True  # dog
    masks[1, 1:3, 1:4] = True  # its head
    masks[3, 5:7, 5:7] = True  # a part whose parent (2) is empty
    recs = instance_records(
        7, masks, np.array([0.9, 0.8, 0.7, 0.6]), [1, 2, 1, 3], [-1, 0, -1, 2], first_id=5
    )
    assert [r["id"] for r in recs] == [5, 6, 7]
    assert [r["parent_id"] for r in recs] == [None, 5, None]
    assert [r["category_id"] for r in recs] == [1, 2, 3]
    assert [r["area"] for r in recs] == [80.0, 6.0, 4.0]
    assert recs[1]["bbox"] == [1.0, 1.0, 3.0, 2.0]
    assert all(r["iscrowd"] == 0 and r["image_id"] == 7 for r in recs)
    assert [r["score"] for r in recs] == [0.9, 0.8, 0.6]
    decoded = mask_utils.decode(
        {**recs[1]["segmentation"], "counts": recs[1]["segmentation"]["counts"].encode()}
    )
    np.testing.assert_array_equal(decoded.astype(bool), masks[1])
