"""The Pascal-Part .mat converter on the 14 real example photos."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from vlpart.apps.cli import main
from vlpart.core.vocab import load_builtin
from vlpart.data.pascal_part import convert_pascal_part

# Raw labels of the 14 examples that match no pascal_part category (counted by hand from the
# .mat files: eyebrows, hooves, car/bus sides, aeroplane engines and stern, tv screens).
EXPECTED_DROPPED = {
    "aeroplane:engine_1": 1,
    "aeroplane:engine_2": 1,
    "aeroplane:stern": 1,
    "bus:frontside": 1,
    "car:backside": 4,
    "car:rightside": 5,
    "horse:lfho": 1,
    "horse:rbho": 1,
    "horse:rfho": 1,
    "person:lebrow": 6,
    "person:rebrow": 7,
    "tvmonitor:screen": 3,
}


@pytest.fixture(scope="module")
def converted(shared_data, tmp_path_factory):
    examples = shared_data / "pascal_part_examples"
    out = tmp_path_factory.mktemp("pascal_part") / "parts.json"
    summary = convert_pascal_part(examples, examples, out)
    return summary, examples


def _load(path):
    return json.loads(path.read_text())


def test_files_load_in_pycocotools(converted):
    summary, _ = converted
    parts, objects = COCO(str(summary.parts_json)), COCO(str(summary.objects_json))
    assert len(objects.getImgIds()) == summary.num_images == 14
    # boat / chairs-and-table images have objects but no mapped part: left out of the part file
    assert len(parts.getImgIds()) == summary.num_part_images == 12
    assert len(parts.getAnnIds()) == summary.num_parts == 287
    assert len(objects.getAnnIds()) == summary.num_objects == 42
    assert set(parts.getImgIds()) <= set(objects.getImgIds())
    assert 2008000652 in parts.getImgIds()  # official VOC-style image id


def test_categories_are_the_93_in_order(converted):
    summary, _ = converted
    cats = _load(summary.parts_json)["categories"]
    vocab = load_builtin("pascal_part")
    assert [c["id"] for c in cats] == list(range(1, 94))
    assert [c["name"] for c in cats] == vocab.names
    assert sum(c["split"] == "novel" for c in cats) == 16
    object_cats = _load(summary.objects_json)["categories"]
    assert [c["name"] for c in object_cats] == load_builtin("voc").names


def test_raw_labels_map_by_token(converted):
    summary, _ = converted
    data = _load(summary.parts_json)
    names = {c["id"]: c["name"] for c in data["categories"]}
    dogs = Counter(
        names[a["category_id"]] for a in data["annotations"] if a["image_id"] == 2008003497
    )
    # two dogs: lfpa/rfpa/rbpa/lfpa -> paw (token "pa"), 7 legs (lfleg, rfleg, lbleg, ...)
    assert dogs["dog:paw"] == 4 and dogs["dog:leg"] == 7 and dogs["dog:muzzle"] == 1
    street = Counter(
        names[a["category_id"]] for a in data["annotations"] if a["image_id"] == 2010003057
    )
    assert street["bus:license plate"] == 1  # fliplate -> token "liplate"
    assert street["car:license plate"] == 2  # bliplate
    assert street["bus:headlight"] == 2


def test_masks_decode_to_image_size_and_lie_inside_objects(converted):
    summary, _ = converted
    parts, objects = _load(summary.parts_json), _load(summary.objects_json)
    sizes = {im["id"]: (im["height"], im["width"]) for im in objects["images"]}
    object_anns = {a["id"]: a for a in objects["annotations"]}
    inside = []
    for ann in parts["annotations"]:
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        assert mask.shape == sizes[ann["image_id"]]
        assert mask.sum() == ann["area"] > 0
        parent = object_anns[ann["object_id"]]
        assert parent["image_id"] == ann["image_id"]
        parent_mask = mask_util.decode(parent["segmentation"]).astype(bool)
        inside.append((mask & parent_mask).sum() / mask.sum())
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
    assert np.mean(np.array(inside) >= 0.9) >= 0.95


def test_dropped_labels_reported(shared_data, tmp_path, caplog):
    examples = shared_data / "pascal_part_examples"
    with caplog.at_level(logging.DEBUG, logger="vlpart.data.pascal_part"):
        summary = convert_pascal_part(examples, examples, tmp_path / "out.json")
    assert summary.dropped == EXPECTED_DROPPED
    assert "dropped 32 raw part labels" in caplog.text
    # Only at debug level: the summary is the caller's to report (the CLI prints it once).
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    assert "horse:lfho (1)" in caplog.text
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out_objects.json"]


def test_image_names_subset_and_errors(shared_data, tmp_path):
    examples = shared_data / "pascal_part_examples"
    summary = convert_pascal_part(
        examples,
        examples,
        tmp_path / "a.json",
        objects_json=tmp_path / "objs.json",
        image_names=["2008_003497", "2010_000145"],
    )
    assert summary.num_images == 2 and summary.num_part_images == 1  # the boat has no parts
    assert summary.objects_json == tmp_path / "objs.json" and summary.objects_json.is_file()
    with pytest.raises(FileNotFoundError, match="2099_000001.mat"):
        convert_pascal_part(examples, examples, tmp_path / "b.json", image_names=["2099_000001"])
    with pytest.raises(FileNotFoundError, match="2008_003497.jpg"):
        convert_pascal_part(examples, tmp_path, tmp_path / "c.json", image_names=["2008_003497"])
    assert not (tmp_path / "c.json").exists()


def test_cli_convert(shared_data, tmp_path, capsys):
    examples = shared_data / "pascal_part_examples"
    split = tmp_path / "val.txt"
    split.write_text("2008_003497\n2010_003057\n")
    out = tmp_path / "val.json"
    argv = ["data", "convert-pascal-part", str(examples), str(examples), str(out)]
    assert main([*argv, "--split", str(split)]) == 0
    text = capsys.readouterr().out
    assert "on 2 images" in text and "car:backside (3)" in text
    # As a console command, the summary appears once across stdout and stderr (the library
    # does not echo it through the log).
    run = subprocess.run(
        [sys.executable, "-m", "vlpart.apps.cli", *argv, "--split", str(split)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout == text and run.stderr == ""
    assert len(_load(out)["images"]) == 2
    assert (
        main(["data", "convert-pascal-part", str(tmp_path / "nope"), str(examples), str(out)]) == 2
    )
    assert "nope: folder not found" in capsys.readouterr().err


def test_broken_photo_is_one_error_naming_it(shared_data, tmp_path):
    import shutil

    examples = shared_data / "pascal_part_examples"
    images = tmp_path / "JPEGImages"
    images.mkdir()
    (images / "2008_003497.jpg").write_bytes(
        (examples / "2008_003497.jpg").read_bytes()[:10] + b"garbage"
    )
    with pytest.raises(ValueError, match=r"2008_003497.jpg: not a readable image"):
        convert_pascal_part(examples, images, tmp_path / "c.json", image_names=["2008_003497"])
    assert not (tmp_path / "c.json").exists()
    shutil.copy(examples / "2008_003497.jpg", images)
    assert (
        convert_pascal_part(
            examples, images, tmp_path / "c.json", image_names=["2008_003497"]
        ).num_images
        == 1
    )
