import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from vlpart.apps.cli import main
from vlpart.core.vocab import load_builtin
from vlpart.parsing.run import object_crops

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


def _parse_config(folder: Path, world: Path, checkpoint: Path) -> Path:
    """A parse config over the synthetic world (its dogs and buses are the novel objects)."""
    path = folder / "parse.yaml"
    parse = {
        "backend": "efficientnet_lite0",
        "image_size": 96,
        "base_objects": str(world / "objects_train.json"),
        "base_parts": str(world / "parts_base_train.json"),
        "base_image_root": str(world),
        "base_categories": BASE,
        "novel_objects": str(world / "objects_train.json"),
        "novel_image_root": str(world),
        "detector": str(checkpoint),
    }
    path.write_text(json.dumps({"parse": parse}))
    return path


def test_parse_cli_writes_parsed_parts(synthetic_world, tiny_checkpoint, tmp_path, capsys):
    cfg = _parse_config(tmp_path, synthetic_world, tiny_checkpoint)
    out = tmp_path / "parsed"
    assert main(["parse", str(cfg), "--out", str(out)]) == 0
    assert "parsed parts:" in capsys.readouterr().out
    coco = COCO(str(out / "parsed_parts.json"))
    novel = list(
        object_crops(
            synthetic_world / "objects_train.json", synthetic_world, categories=["dog", "bus"]
        )
    )
    assert len(coco.dataset["images"]) == len(novel) > 0
    # Measured (seed 0, untrained tiny detector): 3 of the 8 transferred parts snap to a proposal.
    assert len(coco.anns) >= 1
    images = {img["id"]: img for img in coco.dataset["images"]}
    for ann in coco.anns.values():
        image = images[ann["image_id"]]
        name = coco.cats[ann["category_id"]]["name"]
        assert name.split(":")[0] == image["object"] == ann["object"]
        assert name in load_builtin("pascal_part") and ann["source"] == "transfer"
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= image["width"] + 1e-3 and y + h <= image["height"] + 1e-3
        assert 0 < ann["score"] <= 1 and ann["base"].startswith("objects_train.json#")
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


def test_ranks_split_the_instances_before_any_model_work(
    synthetic_world, tiny_checkpoint, tmp_path
):
    """Two ranks, run one after the other in this process: each reads the images and computes
    the proposals of its own share only, and the merged shards equal a one-process run."""
    from vlpart.core.coco import merge_shards
    from vlpart.core.config import ParsingConfig
    from vlpart.model import load_checkpoint
    from vlpart.parsing import build_feature_extractor
    from vlpart.parsing.run import build_base_bank, parse_novel_objects

    config = ParsingConfig(backend="efficientnet_lite0", image_size=96)
    extractor = build_feature_extractor("efficientnet_lite0")
    bank = build_base_bank(
        synthetic_world / "objects_train.json",
        synthetic_world / "parts_base_train.json",
        synthetic_world,
        categories=BASE,
        extractor=extractor,
        config=config,
    )
    detector = load_checkpoint(tiny_checkpoint)[0]
    calls = []
    propose = detector.propose
    detector.propose = lambda images: calls.append(len(images)) or propose(images)

    def run(out, rank, world_size):
        return parse_novel_objects(
            synthetic_world / "objects_train.json",
            synthetic_world,
            categories=["dog", "bus"],
            bank=bank,
            vocabulary=load_builtin("pascal_part"),
            out_dir=out,
            config=config,
            extractor=extractor,
            detector=detector,
            rank=rank,
            world_size=world_size,
        )

    single = json.loads(run(tmp_path / "one", 0, 1).read_text())
    num_instances = len(single["images"])
    assert num_instances >= 2 and sum(calls) == num_instances
    shares = []
    for rank in range(2):
        calls.clear()
        run(tmp_path / "two", rank, 2)
        shares.append(sum(calls))
        assert len(list((tmp_path / "two" / "images").iterdir())) == sum(shares)
    assert shares == [(num_instances + 1) // 2, num_instances // 2]
    merged = json.loads(merge_shards(tmp_path / "two" / "parsed_parts.json", 2).read_text())

    def content(coco):
        strip = ("file_name",)
        images = [{k: v for k, v in i.items() if k not in strip} for i in coco["images"]]
        return images, coco["annotations"], coco["categories"]

    assert content(merged) == content(single)
    calls.clear()
    again = json.loads(run(tmp_path / "one", 0, 1).read_text())
    assert calls == [] and again == single  # resumed: no proposals for finished images


@pytest.mark.slow
def test_torchrun_parse_equals_one_process(synthetic_world, tiny_checkpoint, tmp_path):
    """``torchrun --nproc-per-node 2 vlpart parse``: rank 0 builds the bank once, each rank
    parses its share, rank 0 merges; the result equals a one-process run."""
    cfg = _parse_config(tmp_path, synthetic_world, tiny_checkpoint)
    assert main(["parse", str(cfg), "--out", str(tmp_path / "one")]) == 0
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [
            *launcher,
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            "29519",
            "-m",
            "vlpart.apps.cli",
            "parse",
            str(cfg),
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("parsed parts:") == 1
    assert (tmp_path / "two" / "bank.safetensors").is_file()

    def content(path):
        coco = json.loads(path.read_text())
        images = [{k: v for k, v in i.items() if k != "file_name"} for i in coco["images"]]
        return images, coco["annotations"], coco["categories"]

    one = content(tmp_path / "one" / "parsed_parts.json")
    assert one[0] and content(tmp_path / "two" / "parsed_parts.json") == one
