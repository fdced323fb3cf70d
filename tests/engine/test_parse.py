import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from vlpart.cli import main
from vlpart.engine.parse import object_crops

BASE = ["cat", "cow", "horse", "sheep", "bird", "aeroplane", "car"]


def test_object_crops_carry_masks_and_parts(synthetic_world):
    crops = list(
        object_crops(
            synthetic_world / "objects_train.json",
            synthetic_world,
            categories=["cat", "car"],
            parts_json=synthetic_world / "parts_base_train.json",
            require_parts=True,
        )
    )
    assert crops and {c.category for c in crops} <= {"cat", "car"}
    for crop in crops:
        h, w = crop.object_mask.shape
        assert crop.image.shape == (h, w, 3) and crop.image.dtype == np.uint8
        assert crop.part_masks.shape == (len(crop.part_names), h, w)
        assert all(name.startswith(crop.category + ":") for name in crop.part_names)
        # Parts lie inside their object (the world draws them that way).
        assert not (crop.part_masks & ~crop.object_mask).any()
        # The margin leaves background around the object where the image allows it.
        assert crop.object_mask.mean() < 1.0
    novel = list(
        object_crops(synthetic_world / "objects_train.json", synthetic_world, categories=["dog"])
    )
    assert all(c.part_masks.shape[0] == 0 for c in novel)


def test_parse_cli_writes_parsed_parts(synthetic_world, tiny_checkpoint, tmp_path, capsys):
    cfg = tmp_path / "parse.yaml"
    cfg.write_text(
        json.dumps(
            {
                "parse": {
                    "backend": "efficientnet_lite0",
                    "image_size": 96,
                    "base_objects": str(synthetic_world / "objects_train.json"),
                    "base_parts": str(synthetic_world / "parts_base_train.json"),
                    "base_image_root": str(synthetic_world),
                    "base_categories": BASE,
                    "novel_objects": str(synthetic_world / "objects_train.json"),
                    "novel_image_root": str(synthetic_world),
                    "detector": str(tiny_checkpoint),
                }
            }
        )
    )
    out = tmp_path / "parsed"
    assert main(["parse", str(cfg), "--out", str(out)]) == 0
    assert "parsed parts:" in capsys.readouterr().out
    coco = COCO(str(out / "parsed_parts.json"))
    names = {c["name"] for c in coco.dataset["categories"]}
    assert names and all(
        n.split(":")[0] in {"dog", "bus"}
        for n in (coco.cats[a["category_id"]]["name"] for a in coco.anns.values())
    )
    for image in coco.dataset["images"]:
        assert (out / "images").samefile(Path(image["file_name"]).parent)
    # Running again resumes: nothing is parsed twice and the file is unchanged.
    before = (out / "parsed_parts.json").read_text()
    assert main(["parse", str(cfg), "--out", str(out)]) == 0
    assert (out / "parsed_parts.json").read_text() == before


def test_parse_cli_reports_missing_settings(tmp_path, capsys):
    cfg = tmp_path / "parse.yaml"
    cfg.write_text("parse:\n  backend: efficientnet_lite0\n")
    assert main(["parse", str(cfg)]) == 2
    assert "parse.base_objects is not set" in capsys.readouterr().err
