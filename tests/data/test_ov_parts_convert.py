"""OV-PARTS label maps: raw Pascal-Part .mat (the 14 real examples), the released layouts
(built here in the released formats), and COCO part files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vlpart.apps.cli import main
from vlpart.core.coco import encode_mask
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.vocab import load_builtin
from vlpart.data.ov_parts import (
    ADE20K_OBJECTS,
    VOC_OBJECTS,
    coco_to_label_maps,
    convert_ov_parts,
    pascal_part_mat_to_116,
    read_object_names,
)
from vlpart.data.pascal_part import read_mat

# Raw label -> Pascal-Part-116 part for labels of the 14 examples, written out by hand.
EXPECTED = {
    "aeroplane": {"lwing": "wing", "stern": "stern", "engine_2": "engine", "wheel_5": "wheel"},
    "bus": {"frontside": "front", "fliplate": "license plate", "leftmirror": "mirror"},
    "car": {"backside": "back", "rightside": "side", "bliplate": "license plate"},
    "dog": {"lfpa": "paw", "rbleg": "leg", "lear": "ear", "muzzle": "muzzle"},
    "horse": {"lfho": "hoof", "rblleg": "leg", "rfuleg": "leg"},
    "person": {"llarm": "lower arm", "ruarm": "upper arm", "rebrow": "eyebrow", "lhand": "hand"},
    "tvmonitor": {"screen": "screen"},
}


@pytest.fixture(scope="module")
def mat_maps(shared_data, tmp_path_factory):
    examples = shared_data / "pascal_part_examples"
    out = tmp_path_factory.mktemp("pp116")
    summary = pascal_part_mat_to_116(examples, out, image_dir=examples)
    return examples, out, summary


def test_mat_to_116_labels_follow_the_raw_masks(mat_maps):
    examples, out, summary = mat_maps
    assert summary.num_images == 14 and summary.dropped == {}
    assert read_object_names(summary.objects_dir, load_builtin("voc")) == tuple(VOC_OBJECTS)
    vocab = load_builtin("pascal_part_116")
    checked = set()
    for mat in sorted(examples.glob("*.mat")):
        parts = np.array(Image.open(out / "gt" / f"{mat.stem}.png"))
        objects = np.array(Image.open(out / "objects" / f"{mat.stem}.png"))
        assert parts.dtype == np.uint8 and parts.shape == objects.shape
        covered = np.zeros(parts.shape, bool)
        for cls, obj_mask, raw_parts in read_mat(mat):
            obj_mask = obj_mask.astype(bool)
            # Object pixels carry the VOC index (objects of one image do not overlap here).
            obj = {"table": "diningtable"}.get(cls, cls)
            assert np.bincount(objects[obj_mask]).argmax() == VOC_OBJECTS.index(obj)
            for raw, mask in raw_parts:
                covered |= mask.astype(bool)
                if raw in EXPECTED.get(cls, {}):
                    want = vocab.index(f"{cls}:{EXPECTED[cls][raw]}")
                    assert np.bincount(parts[mask.astype(bool)]).argmax() == want, (mat, raw)
                    checked.add(f"{cls}:{raw}")
        # Labels exactly where some part mask is, ignore elsewhere.
        np.testing.assert_array_equal(parts != 255, covered)
    assert len(checked) == sum(len(v) for v in EXPECTED.values())


def test_mat_cli_and_the_maps_score_themselves_perfectly(mat_maps, tmp_path, capsys):
    examples, out, _ = mat_maps
    cli_out = tmp_path / "cli"
    assert main(["data", "convert-ov-parts", str(examples), str(cli_out), "--mat"]) == 0
    assert "14 label maps" in capsys.readouterr().out
    for name in ("gt/2008_000652.png", "objects/2010_005243.png"):
        assert (cli_out / name).read_bytes() == (out / name).read_bytes()
    args = ["eval", "--semantic", "--gt", str(out / "gt"), "--pred", str(out / "gt")]
    args += ["--vocab", "pascal_part_116", "--out", str(tmp_path / "m")]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["mIoU"] == metrics["hIoU"] == 100.0


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def test_released_pascal_layout(tmp_path):
    root = tmp_path / "PascalPart116"
    _png(
        root / "annotations_detectron2_part" / "val" / "a.png", np.array([[0, 115, 255]], np.uint8)
    )
    _png(root / "annotations_detectron2_obj" / "val" / "a.png", np.array([[0, 19, 255]], np.uint8))
    summary = convert_ov_parts(root, tmp_path / "out", dataset="pascal_part_116")
    assert summary.num_images == 1
    np.testing.assert_array_equal(np.array(Image.open(summary.gt_dir / "a.png")), [[0, 115, 255]])
    _png(root / "annotations_detectron2_part" / "val" / "b.png", np.array([[116]], np.uint8))
    with pytest.raises(InputError, match=r"val/b\.png: label values 116 are outside 0\.\.115"):
        convert_ov_parts(root, tmp_path / "out", dataset="pascal_part_116")
    # The failed run left the earlier output as it was.
    assert sorted(p.name for p in (tmp_path / "out" / "gt").iterdir()) == ["a.png"]
    _png(root / "annotations_detectron2_part" / "val" / "b.png", np.array([[1]], np.uint8))
    with pytest.raises(MissingFileError, match=r"obj/val/b\.png: no object map"):
        convert_ov_parts(root, tmp_path / "out", dataset="pascal_part_116")


def test_released_ade_layout_16_bit_ignore_and_instance_json(tmp_path):
    root = tmp_path / "ADE20KPart234"
    part = np.array([[0, 233, 65535], [5, 65535, 65535]], np.uint16)
    _png(root / "annotations_detectron2_part" / "validation" / "ADE_val_1.png", part)
    chair = np.array([[1, 1, 0], [0, 0, 0]], np.uint8)
    (root / "ade20k_instance_val.json").write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "ADE_val_1.jpg", "height": 2, "width": 3}],
                "categories": [{"id": 0, "name": "airplane"}, {"id": 8, "name": "chair"}],
                "annotations": [
                    {"id": 1, "image_id": 7, "category_id": 8, "bbox": [0, 0, 2, 1],
                     "segmentation": encode_mask(chair), "part_category_id": [48]},
                ],
            }
        )
    )  # fmt: skip
    summary = convert_ov_parts(root, tmp_path / "out", dataset="ade20k_part_234")
    gt = np.array(Image.open(summary.gt_dir / "ADE_val_1.png"))
    assert gt.dtype == np.uint8
    np.testing.assert_array_equal(gt, [[0, 233, 255], [5, 255, 255]])
    objects = np.array(Image.open(summary.objects_dir / "ADE_val_1.png"))
    np.testing.assert_array_equal(objects, [[8, 8, 255], [255, 255, 255]])
    with pytest.raises(InputError, match="unknown ADE20K-Part-234 split 'val'"):
        convert_ov_parts(root, tmp_path / "o2", dataset="ade20k_part_234", split="val")


def test_coco_part_file_to_label_maps(synthetic_world, tmp_path):
    summary, vocab = coco_to_label_maps(
        synthetic_world / "parts_val.json",
        tmp_path,
        objects_json=synthetic_world / "objects_val.json",
    )
    data = json.loads((synthetic_world / "parts_val.json").read_text())
    assert summary.num_images == len(data["images"])
    assert vocab.names == [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    assert {c.split for c in vocab} == {"base", "novel"}
    # Each part annotation's pixels mostly carry its label (small parts painted last).
    info = data["images"][0]
    gt = np.array(Image.open(summary.gt_dir / (info["file_name"].split("/")[-1][:-4] + ".png")))
    from vlpart.core.coco import decode_segmentation

    for ann in (a for a in data["annotations"] if a["image_id"] == info["id"]):
        mask = decode_segmentation(ann["segmentation"], info["height"], info["width"]) > 0
        ids = sorted(c["id"] for c in data["categories"])
        assert np.mean(gt[mask] == ids.index(ann["category_id"])) > 0.5


def test_object_lists_match_the_vocabularies(tmp_path):
    for name, objects in (("pascal_part_116", VOC_OBJECTS), ("ade20k_part_234", ADE20K_OBJECTS)):
        vocab = load_builtin(name)
        # Pascal-Part-116 has no parts of boat, chair, diningtable and sofa.
        assert set(vocab.objects) <= set(objects) and len(objects) in (20, 44)
        assert read_object_names(tmp_path, vocab) == tuple(objects)  # no names.json: built in
    assert set(load_builtin("ade20k_part_234").objects) == set(ADE20K_OBJECTS)
    assert read_object_names(tmp_path, load_builtin("voc")) is None
    (tmp_path / "names.json").write_text('{"a": 1}')
    with pytest.raises(InputError, match="names.json: expected a JSON list"):
        read_object_names(tmp_path, load_builtin("voc"))
