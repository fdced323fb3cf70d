"""Evaluation: AP against pycocotools, hand-computed splits, LVIS rules, proposal recall, CLI."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as RefCOCO
from pycocotools.cocoeval import COCOeval as RefCOCOeval

from vlpart.apps.cli import main
from vlpart.evaluation.coco_eval import LVIS_MAX_DETS, evaluate_results
from vlpart.evaluation.proposals import proposal_recall

SIZE = (100, 100)  # (H, W) of the crafted images

# AP of one category with two GT boxes and detections ranked TP, FP, TP: precision 1 up to
# recall 0.5 (101-point thresholds 0.00..0.50: 51 points), then 2/3 (0.51..1.00: 50 points).
AP_TP_FP_TP = (51 * 1.0 + 50 * 2 / 3) / 101


def _rle(box: list[float], size: tuple[int, int] = SIZE) -> dict:
    """Compressed RLE (str counts, as in a JSON file) of an XYWH integer rectangle."""
    m = np.zeros(size, dtype=np.uint8, order="F")
    x, y, w, h = (int(v) for v in box)
    m[y : y + h, x : x + w] = 1
    rle = mask_utils.encode(m)
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def _gt(
    categories: list[str],
    anns: list[tuple[int, str, list[float]]],
    num_images: int = 2,
    **image_fields: dict[int, list[str]],
) -> dict:
    """COCO ground truth: ``anns`` are (image_id, category name, XYWH box) with mask = box.

    ``image_fields`` maps an LVIS image key to {image_id: [category names]}.
    """
    cid = {name: i + 1 for i, name in enumerate(categories)}
    images = []
    for i in range(1, num_images + 1):
        img = {"id": i, "height": SIZE[0], "width": SIZE[1]}
        for key, per_image in image_fields.items():
            img[key] = [cid[n] for n in per_image.get(i, [])]
        images.append(img)
    return {
        "images": images,
        "categories": [{"id": cid[n], "name": n} for n in categories],
        "annotations": [
            {
                "id": j + 1,
                "image_id": img,
                "category_id": cid[name],
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
                "segmentation": _rle(box),
            }
            for j, (img, name, box) in enumerate(anns)
        ],
    }


def _dets(gt: dict, dets: list[tuple[int, str, list[float], float]]) -> list[dict]:
    cid = {c["name"]: c["id"] for c in gt["categories"]}
    return [
        {
            "image_id": img,
            "category_id": cid[name],
            "bbox": box,
            "score": score,
            "segmentation": _rle(box),
        }
        for img, name, box, score in dets
    ]


def _row(report, name):
    return next(r for r in report.categories if r.name == name)


# -- agreement with pycocotools ---------------------------------------------------------------


def _random_case(seed: int) -> tuple[dict, list[dict]]:
    """Several images and categories, polygon and RLE masks, a crowd region, jittered true
    detections, misses and false positives."""
    rng = np.random.default_rng(seed)
    h, w = 64, 96
    cats = [{"id": i, "name": f"obj{i}:part"} for i in (3, 5, 8, 9)]
    images = [{"id": i, "height": h, "width": w} for i in range(1, 6)]
    anns, dets = [], []
    for img in images:
        for _ in range(rng.integers(2, 7)):
            cat = int(rng.choice([3, 5, 8, 9]))
            x, y = rng.integers(0, 60), rng.integers(0, 35)
            bw, bh = rng.integers(4, 36), rng.integers(4, 28)
            m = np.zeros((h, w), dtype=np.uint8, order="F")
            yy, xx = np.mgrid[:h, :w]  # an ellipse inside the box
            inside = ((xx - x - bw / 2) / (bw / 2)) ** 2 + ((yy - y - bh / 2) / (bh / 2)) ** 2
            m[inside <= 1] = 1
            rle = mask_utils.encode(m)
            box = [float(v) for v in mask_utils.toBbox(rle)]
            if rng.random() < 0.3:  # polygon ground truth for some
                segm = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
            else:
                segm = {"size": [h, w], "counts": rle["counts"].decode()}
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": box,
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                    "segmentation": segm,
                }
            )
            if rng.random() < 0.75:  # detected, with jitter
                dm = np.roll(m, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), (0, 1))
                drle = mask_utils.encode(np.asfortranarray(dm))
                dets.append(
                    {
                        "image_id": img["id"],
                        "category_id": cat,
                        "bbox": [float(v) for v in mask_utils.toBbox(drle)],
                        "score": float(rng.random()),
                        "segmentation": {"size": [h, w], "counts": drle["counts"].decode()},
                    }
                )
        for _ in range(rng.integers(1, 4)):  # false positives
            m = np.zeros((h, w), dtype=np.uint8, order="F")
            x, y = rng.integers(0, 80), rng.integers(0, 50)
            m[y : y + 10, x : x + 12] = 1
            rle = mask_utils.encode(m)
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": int(rng.choice([3, 5, 8, 9])),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "score": float(rng.random()),
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                }
            )
    crowd = np.zeros((h, w), dtype=np.uint8, order="F")
    crowd[40:64, 0:30] = 1
    rle = mask_utils.encode(crowd)
    anns.append(
        {
            "id": len(anns) + 1,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 1,
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": float(mask_utils.area(rle)),
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
        }
    )
    return {"images": images, "categories": cats, "annotations": anns}, dets


def _pycocotools(gt: dict, dets: list[dict], iou_type: str) -> tuple[np.ndarray, dict]:
    """Reference stats and per-category AP/AP50 from the real pycocotools."""
    if iou_type == "segm":
        dets = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = RefCOCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = RefCOCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_cat = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        if (p > -1).any():
            per_cat[cat_id] = (p[p > -1].mean(), p[0][p[0] > -1].mean())
    return ev.stats, per_cat


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_matches_pycocotools(seed):
    gt, dets = _random_case(seed)
    report = evaluate_results(gt, dets)
    assert report.iou_types == ("bbox", "segm")
    for iou_type in ("bbox", "segm"):
        stats, per_cat = _pycocotools(gt, dets, iou_type)
        assert 0.05 < stats[0] < 0.95  # a non-trivial case: misses, FPs and jitter
        metrics = report.metrics[iou_type]
        for key, ref in zip(("AP", "AP50", "AP75"), stats[:3], strict=True):
            assert metrics[key] == pytest.approx(ref, abs=1e-4), (iou_type, key)
        rows = {r.id: r for r in report.categories}
        assert set(per_cat) == {i for i, r in rows.items() if r.num_gt > 0}
        for cat_id, (ap, ap50) in per_cat.items():
            assert rows[cat_id].ap[iou_type] == pytest.approx(ap, abs=1e-4)
            assert rows[cat_id].ap50[iou_type] == pytest.approx(ap50, abs=1e-4)


def test_input_dicts_are_not_modified():
    gt, dets = _random_case(0)
    gt_copy, dets_copy = copy.deepcopy(gt), copy.deepcopy(dets)
    for lvis_style in (False, True):
        evaluate_results(gt, dets, lvis_style=lvis_style)
        assert gt == gt_copy and dets == dets_copy


# -- hand-computed base / novel / object details ----------------------------------------------

HAND_CATEGORIES = ["cat:head", "cat:leg", "cat:tail", "cow:head", "dog:head", "dog:leg", "dog:tail"]
HEAD, LEG1, LEG2, FAR = [10, 10, 20, 20], [40, 40, 10, 30], [60, 10, 30, 10], [70, 70, 25, 25]


def _hand_case() -> tuple[dict, list[dict]]:
    gt = _gt(
        HAND_CATEGORIES,
        [
            (1, "cat:head", HEAD),
            (1, "cat:leg", LEG1),
            (2, "cat:leg", LEG2),
            (2, "cat:tail", HEAD),
            (1, "dog:head", HEAD),
            (2, "dog:leg", LEG1),
            (2, "dog:tail", LEG2),
        ],
    )
    dets = _dets(
        gt,
        [
            (1, "cat:head", HEAD, 0.9),  # perfect: 1
            (1, "cat:leg", LEG1, 0.9),  # TP, FP, TP
            (1, "cat:leg", FAR, 0.8),
            (2, "cat:leg", LEG2, 0.7),
            (1, "cow:head", HEAD, 0.9),  # no GT: excluded
            (1, "dog:head", HEAD, 0.6),  # perfect: 1
            (2, "dog:tail", FAR, 0.9),  # FP above TP: 0.5
            (2, "dog:tail", LEG2, 0.8),
            # cat:tail and dog:leg: no detection, 0
        ],
    )
    return gt, dets


def test_base_novel_means_from_pascal_part_taxonomy():
    gt, dets = _hand_case()
    report = evaluate_results(gt, dets, objects=["Dog"])
    assert report.split_source == "pascal_part"
    expected = {
        "cat:head": 1.0,
        "cat:leg": AP_TP_FP_TP,
        "cat:tail": 0.0,
        "cow:head": None,
        "dog:head": 1.0,
        "dog:leg": 0.0,
        "dog:tail": 0.5,
    }
    for iou_type in ("bbox", "segm"):
        for name, ap in expected.items():
            row = _row(report, name)
            assert row.ap[iou_type] == pytest.approx(ap, abs=1e-9)
            assert row.ap50[iou_type] == pytest.approx(ap, abs=1e-9)
        m = report.metrics[iou_type]
        assert m["AP_base"] == pytest.approx((1 + AP_TP_FP_TP + 0) / 3)  # cat parts
        assert m["AP_novel"] == pytest.approx((1 + 0 + 0.5) / 3)  # dog parts
        assert m["AP50_novel"] == pytest.approx(0.5)
        assert m["AP"] == pytest.approx((2 + AP_TP_FP_TP + 0.5) / 6)
        assert "AP_obj" not in m  # parts only: no object/part groups
    assert _row(report, "cow:head").num_gt == 0
    assert [(r.part, r.split) for r in report.parts_of("dog")] == [
        ("head", "novel"),
        ("leg", "novel"),
        ("tail", "novel"),
    ]
    payload = json.loads(json.dumps(report.to_json()))
    assert payload["objects"]["Dog"]["segm"]["tail"] == {"AP": 0.5, "AP50": 0.5}
    text = report.to_markdown()
    assert "## Dog: head, leg, tail" in text and "| AP (novel) | 50.0 | 50.0 |" in text
    assert "| 4 | cow:head | base | 0 | - | - | - | - |" in text


def test_split_file_and_mapping_override_the_taxonomy(tmp_path):
    gt, dets = _hand_case()
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"base": ["DOG HEAD", "dog_tail"], "novel": ["cat:leg"]}))
    for split in (path, str(path), {"base": ["dog:head", "dog:tail"], "novel": ["Cat Leg"]}):
        m = evaluate_results(gt, dets, iou_types=["bbox"], split=split).metrics["bbox"]
        assert m["AP_base"] == pytest.approx(0.75)
        assert m["AP_novel"] == pytest.approx(AP_TP_FP_TP)
    assert evaluate_results(gt, dets, split=path).split_source == str(path)


def test_split_by_taxonomy_name_when_names_do_not_match_one():
    gt = _gt(["dog:head", "sofa:arm"], [(1, "dog:head", HEAD), (1, "sofa:arm", LEG1)])
    dets = _dets(gt, [(1, "dog:head", HEAD, 0.9)])
    assert evaluate_results(gt, dets).split_source is None
    report = evaluate_results(gt, dets, split="pascal_part")
    assert [r.split for r in report.categories] == ["novel", None]
    assert report.metrics["bbox"]["AP_novel"] == pytest.approx(1.0)
    assert report.metrics["bbox"]["AP_base"] is None
    assert report.metrics["bbox"]["AP"] == pytest.approx(0.5)


def test_unknown_names_give_no_split_and_parse_obj_part():
    gt = _gt(["sofa", "sofa:cushion", "sofa:arm"], [(1, "sofa:cushion", HEAD), (2, "sofa", HEAD)])
    report = evaluate_results(gt, _dets(gt, [(1, "sofa:cushion", HEAD, 0.5)]))
    assert report.split_source is None
    assert [(r.object, r.part, r.split) for r in report.categories] == [
        ("sofa", None, None),
        ("sofa", "cushion", None),
        ("sofa", "arm", None),
    ]
    assert "AP_base" not in report.metrics["segm"]
    assert report.metrics["segm"]["AP"] == pytest.approx(0.5)  # sofa 0, sofa:cushion 1
    assert report.metrics["segm"]["AP_obj"] == 0.0
    assert _row(report, "sofa:arm").ap == {"bbox": None, "segm": None}


def test_taxonomy_names_give_object_and_part():
    gt = _gt(["Quadruped Head", "quadruped_body"], [(1, "Quadruped Head", HEAD)])
    report = evaluate_results(gt, [], objects=["quadruped"])
    assert [(r.object, r.part) for r in report.categories] == [
        ("Quadruped", "Head"),
        ("Quadruped", "Body"),
    ]
    assert report.split_source is None  # PartImageNet has no base/novel split


def test_object_part_groups_and_hierarchical_part_ap():
    cats = ["mug", "mug:handle", "cup:handle", "cup:rim"]
    gt = _gt(
        cats,
        [(1, "mug", HEAD), (1, "mug:handle", LEG1), (1, "cup:handle", LEG2), (2, "cup:rim", HEAD)],
    )
    dets = _dets(
        gt, [(1, "mug", HEAD, 0.9), (1, "mug:handle", LEG1, 0.9), (2, "cup:rim", HEAD, 0.9)]
    )  # cup:handle missed
    m = evaluate_results(gt, dets, iou_types=("bbox",)).metrics["bbox"]
    assert m["AP_obj"] == pytest.approx(1.0)
    assert m["AP_part"] == pytest.approx(2 / 3)  # mean over the 3 part categories
    assert m["AP_part_hier"] == pytest.approx(0.75)  # handle: (1 + 0) / 2, rim: 1
    assert m["AP50_part_hier"] == pytest.approx(0.75)


def test_empty_results_score_zero():
    gt, _ = _hand_case()
    report = evaluate_results(gt, [], iou_types=("bbox",))
    assert report.metrics["bbox"]["AP"] == 0.0
    assert report.num_detections == 0


def test_box_only_results_skip_mask_ap():
    gt, dets = _hand_case()
    boxes = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    assert evaluate_results(gt, boxes).iou_types == ("bbox",)
    with pytest.raises(ValueError, match="mask AP needs an RLE 'segmentation'"):
        evaluate_results(gt, boxes, iou_types=("segm",))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda gt, d: d[0].update(image_id=99), r"results: \[0\].image_id: 99 is not an image"),
        (
            lambda gt, d: d[1].update(category_id=42),
            r"results: \[1\].category_id: 42 is not a category",
        ),
        (lambda gt, d: d[0].pop("score"), r"results: \[0\]: no 'score'"),
        (lambda gt, d: d[0].update(segmentation=[[1, 2, 3, 4, 5, 6]]), "expected RLE"),
        (lambda gt, d: d[0].update(segmentation=_rle(HEAD, (50, 50))), "mask size"),
        (lambda gt, d: gt.pop("categories"), "no 'categories' list"),
        (lambda gt, d: gt["annotations"][0].pop("bbox"), r"truth: annotations\[0\]: no 'bbox'"),
    ],
)
def test_bad_input_names_the_problem(mutate, message):
    gt, dets = _hand_case()
    mutate(gt, dets)
    with pytest.raises(ValueError, match=message):
        evaluate_results(gt, dets)


def test_bad_split_and_objects():
    gt, dets = _hand_case()
    with pytest.raises(ValueError, match="both base and novel"):
        evaluate_results(gt, dets, split={"base": ["dog:head"], "novel": ["dog:head"]})
    with pytest.raises(ValueError, match="none of its category names"):
        evaluate_results(gt, dets, split={"base": ["sofa"]})
    with pytest.raises(ValueError, match="no part categories of object 'horse'"):
        evaluate_results(gt, dets, objects=["horse"])


# -- LVIS rules -------------------------------------------------------------------------------


def _lvis_case(**image_fields) -> tuple[dict, list[dict]]:
    """mug: one GT on image 1; image 1 has a FP (0.9) above the TP (0.8); image 2 has no mug
    but a mug detection (0.95)."""
    gt = _gt(["mug", "bowl"], [(1, "mug", HEAD), (2, "bowl", HEAD)], **image_fields)
    dets = _dets(gt, [(1, "mug", FAR, 0.9), (1, "mug", HEAD, 0.8), (2, "mug", FAR, 0.95)])
    return gt, dets


def _mug_ap(gt, dets, **kwargs) -> float:
    report = evaluate_results(gt, dets, iou_types=("bbox",), **kwargs)
    return _row(report, "mug").ap["bbox"]


def test_lvis_unlisted_category_is_not_evaluated():
    gt, dets = _lvis_case()
    assert _mug_ap(gt, dets) == pytest.approx(1 / 3)  # COCO: both FPs count
    # LVIS: mug is neither positive nor negative on image 2: its detection there is dropped.
    assert _mug_ap(gt, dets, lvis_style=True) == pytest.approx(0.5)


def test_lvis_negative_category_counts_false_positives():
    gt, dets = _lvis_case()
    assert _mug_ap(gt, dets, lvis_style=True) == pytest.approx(0.5)
    gt, dets = _lvis_case(neg_category_ids={2: ["mug"]})
    assert _mug_ap(gt, dets, lvis_style=True) == pytest.approx(1 / 3)


def test_lvis_not_exhaustive_category_ignores_unmatched_detections():
    gt, dets = _lvis_case(not_exhaustive_category_ids={1: ["mug"]})
    assert _mug_ap(gt, dets, lvis_style=True) == pytest.approx(1.0)
    gt, dets = _lvis_case(not_exhaustive_category_ids={1: ["mug"]}, neg_category_ids={2: ["mug"]})
    assert _mug_ap(gt, dets, lvis_style=True) == pytest.approx(0.5)  # only image 2's FP counts


def test_lvis_keeps_top_detections_per_image_across_categories():
    gt, _ = _lvis_case(neg_category_ids={1: ["bowl"]})
    tp = _dets(gt, [(1, "mug", HEAD, 0.5)])
    for num_fp, mug_ap in ((LVIS_MAX_DETS - 1, 1.0), (LVIS_MAX_DETS, 0.0)):
        # Bowl FPs on image 1 (bowl is negative there) outscore the one true mug: the 300th
        # detection of the image is kept, the 301st is not.
        fps = _dets(gt, [(1, "bowl", FAR, 0.9)] * num_fp)
        report = evaluate_results(gt, fps + tp, iou_types=("bbox",), lvis_style=True)
        assert report.num_detections == LVIS_MAX_DETS
        assert _row(report, "mug").ap["bbox"] == pytest.approx(mug_ap)
        assert _row(report, "bowl").ap["bbox"] == 0.0


# -- proposal recall --------------------------------------------------------------------------


def _recall_gt() -> dict:
    boxes = {  # XYWH; g6 nearly equals g3, so one proposal recalls both
        "g1": (1, 1, [0, 0, 10, 10]),
        "g2": (1, 1, [20, 20, 20, 20]),
        "g3": (1, 1, [50, 50, 10, 10]),
        "g6": (1, 1, [50, 50, 10, 11]),
        "g5": (2, 2, [5, 5, 30, 30]),
    }
    gt = {
        "images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": j + 1, "image_id": img, "category_id": c, "bbox": b, "iscrowd": 0}
            for j, (img, c, b) in enumerate(boxes.values())
        ],
    }
    gt["annotations"].append(
        {"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [80, 80, 10, 10]}
    )  # crowd: never counted
    return gt


def test_proposal_recall_hand_computed():
    proposals = {
        1: torch.tensor(
            [
                [20.0, 20, 40, 40],  # recalls g2 (IoU 1)
                [70, 0, 90, 10],  # recalls nothing
                [0, 0, 10, 5],  # g1 at IoU exactly 0.5: counts
                [49, 49, 60, 60],  # recalls g3 and g6
            ]
        ),
        3: np.zeros((0, 4), dtype=np.float32),  # an image without ground truth
    }  # image 2 (g5) has no proposals: missed
    gt = _recall_gt()
    assert proposal_recall(gt, proposals, ks=(1, 3, 4, 1000)) == {
        1: pytest.approx(1 / 5),
        3: pytest.approx(2 / 5),
        4: pytest.approx(4 / 5),
        1000: pytest.approx(4 / 5),
    }
    assert proposal_recall(gt, proposals, ks=(3, 4), category_ids={1}) == {
        3: pytest.approx(2 / 4),
        4: pytest.approx(1.0),
    }
    assert proposal_recall(gt, proposals, ks=(4,), iou_thresh=0.51) == {4: pytest.approx(3 / 5)}
    assert set(proposal_recall(gt, proposals)) == {30, 100, 300, 1000}


def test_proposal_recall_errors_and_empty():
    gt = _recall_gt()
    with pytest.raises(ValueError, match="image ids not in ground truth"):
        proposal_recall(gt, {7: np.zeros((1, 4))})
    with pytest.raises(ValueError, match=r"expected \[R, 4\]"):
        proposal_recall(gt, {1: np.zeros((3, 5))})
    assert all(np.isnan(v) for v in proposal_recall(gt, {}, category_ids={5}).values())


# -- CLI --------------------------------------------------------------------------------------


def test_cli_eval_writes_metrics(tmp_path, capsys):
    gt, dets = _hand_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--results",
            str(tmp_path / "res.json"),
            "--gt",
            str(tmp_path / "gt.json"),
            "--objects",
            "dog,cat",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["segm"]["AP_novel"] == pytest.approx(0.5)
    assert set(metrics["objects"]) == {"dog", "cat"}
    markdown = (out / "metrics.md").read_text()
    assert markdown in capsys.readouterr().out
    assert "| AP (base) |" in markdown
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "metrics.md"]  # no temps


@pytest.mark.parametrize(
    ("problem", "message"),
    [("missing", "not found"), ("corrupt", "not valid JSON"), ("wrong_kind", "got a JSON object")],
)
def test_cli_eval_bad_file(tmp_path, capsys, problem, message):
    gt, dets = _hand_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    res = tmp_path / "res.json"
    if problem == "corrupt":
        res.write_text('[{"image_id": 1,')
    elif problem == "wrong_kind":
        res.write_text(json.dumps(gt))
    rc = main(
        [
            "eval",
            "--results",
            str(res),
            "--gt",
            str(tmp_path / "gt.json"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("vlpart: error: ") and "\n" not in err and str(res) in err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_eval_proposals_command_reports_recall(synthetic_world, tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    from vlpart.model import load_checkpoint

    gt = synthetic_world / "parts_val.json"
    out = tmp_path / "m"
    args = ["eval", "--weights", str(tiny_checkpoint), "--gt", str(gt), "--proposals"]
    assert main([*args, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "AR@30" in table and "AR@1000" in table
    written = json.loads((out / "proposal_recall.json").read_text())
    assert list(written) == ["AR@30", "AR@100", "AR@300", "AR@1000"]
    values = list(written.values())
    assert all(0 <= v <= 1 for v in values) and values == sorted(values)
    # The same numbers as proposal_recall on the model's own proposals.
    model = load_checkpoint(tiny_checkpoint)[0].eval()
    data = json.loads(gt.read_text())
    proposals = {}
    for info in data["images"]:
        image = torch.from_numpy(np.array(Image.open(synthetic_world / info["file_name"])))
        with torch.inference_mode():
            proposals[info["id"]] = model.propose([image.permute(2, 0, 1)])[0]["boxes"]
    expected = proposal_recall(data, proposals)
    assert values == pytest.approx([expected[k] for k in (30, 100, 300, 1000)])
    assert values[-1] > 0  # 1000 proposals on a 96 px image find some parts
    assert main(["eval", "--results", str(gt), "--gt", str(gt), "--proposals"]) == 2
