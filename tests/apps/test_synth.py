"""The synthetic parts world: determinism, taxonomy names, masks, the base/novel split, CLI."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from vlpart.apps.cli import main
from vlpart.apps.quickstart.synth import WORLD_PARTS, draw_scene, synthesize_world
from vlpart.core.vocab import load_builtin
from vlpart.data import DataKind, DetectionDataset, ImageLabelDataset

NUM_IMAGES, SIZE = 30, 96
FILES = ("parts_base_train", "objects_train", "image_labels_train", "parts_val", "objects_val")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = synthesize_world(out, seed=4, num_images=NUM_IMAGES, image_size=SIZE)
    return summary, {role: json.loads((out / f"{role}.json").read_text()) for role in FILES}


def test_same_seed_same_bytes(world, tmp_path):
    summary, _ = world
    synthesize_world(tmp_path, seed=4, num_images=NUM_IMAGES, image_size=SIZE)
    files = sorted(p.relative_to(summary.out_dir) for p in summary.out_dir.rglob("*.*"))
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.*"))
    assert len(files) == NUM_IMAGES + len(FILES) + 1
    for rel in files:
        assert (summary.out_dir / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    other = synthesize_world(tmp_path / "other", seed=5, num_images=2, image_size=SIZE)
    assert (other.out_dir / "images/000001.png").read_bytes() != (
        summary.out_dir / "images/000001.png"
    ).read_bytes()


def test_names_and_ids_follow_the_taxonomies(world):
    _, data = world
    parts, voc = load_builtin("pascal_part"), load_builtin("voc")
    for role in ("parts_base_train", "parts_val"):
        for cat in data[role]["categories"]:
            assert cat["name"] in parts
            assert cat["id"] == parts[parts.index(cat["name"])].id
    for cat in data["objects_train"]["categories"]:
        assert cat["id"] == voc[voc.index(cat["name"])].id
    all_parts = {c["name"] for c in data["parts_val"]["categories"]}
    assert all_parts == {f"{o}:{p}" for o, ps in WORLD_PARTS.items() for p in ps}
    assert {"dog:head", "dog:torso", "dog:leg", "dog:tail", "dog:ear", "bus:wheel"} <= all_parts


def test_novel_objects_absent_from_base_parts(world):
    _, data = world
    base = data["parts_base_train"]
    names = {c["id"]: c["name"] for c in base["categories"]}
    assert not any(n.split(":")[0] in ("dog", "bus") for n in names.values())
    assert all(a["category_id"] in names for a in base["annotations"])
    val_names = {c["id"]: c for c in data["parts_val"]["categories"]}
    assert {c["split"] for c in val_names.values() if c["name"].startswith("dog:")} == {"novel"}
    # the novel classes are drawn and annotated as objects on training images
    object_names = {c["id"]: c["name"] for c in data["objects_train"]["categories"]}
    drawn = {object_names[a["category_id"]] for a in data["objects_train"]["annotations"]}
    assert {"dog", "bus"} & drawn


def test_masks_non_empty_inside_images_and_inside_their_objects(world):
    _, data = world
    for parts_role, objects_role in (
        ("parts_base_train", "objects_train"),
        ("parts_val", "objects_val"),
    ):
        objects = {a["id"]: a for a in data[objects_role]["annotations"]}
        image_ids = {im["id"] for im in data[objects_role]["images"]}
        assert data[parts_role]["images"] == data[objects_role]["images"]
        for ann in data[parts_role]["annotations"] + list(objects.values()):
            mask = mask_util.decode(ann["segmentation"])
            assert mask.shape == (SIZE, SIZE) and mask.sum() == ann["area"] > 0
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
            assert ann["image_id"] in image_ids
        for ann in data[parts_role]["annotations"]:
            parent = objects[ann["object_id"]]
            assert parent["image_id"] == ann["image_id"]
            part_mask = mask_util.decode(ann["segmentation"]).astype(bool)
            parent_mask = mask_util.decode(parent["segmentation"]).astype(bool)
            assert not (part_mask & ~parent_mask).any()


def test_splits_labels_and_manifest(world):
    summary, data = world
    train_ids = {im["id"] for im in data["objects_train"]["images"]}
    val_ids = {im["id"] for im in data["parts_val"]["images"]}
    assert not train_ids & val_ids and len(train_ids | val_ids) == NUM_IMAGES
    assert (summary.num_train, summary.num_val) == (24, 6)
    labels = {im["id"]: im["pos_category_ids"] for im in data["image_labels_train"]["images"]}
    for image_id in train_ids:
        expected = sorted(
            {
                a["category_id"]
                for a in data["objects_train"]["annotations"]
                if a["image_id"] == image_id
            }
        )
        assert labels[image_id] == expected
    manifest = json.loads((summary.out_dir / "world.json").read_text())
    assert manifest["novel_objects"] == ["dog", "bus"] and "cat" in manifest["base_objects"]
    assert manifest["files"]["parts_base_train"] == "parts_base_train.json"
    assert manifest["objects"]["horse"] == list(WORLD_PARTS["horse"])


def test_world_loads_as_datasets(world):
    summary, _ = world
    out = summary.out_dir
    parts = DetectionDataset(out / "parts_base_train.json", out, kind=DataKind.PART)
    image, target = parts[0]
    assert image.shape == (3, SIZE, SIZE)
    assert target["masks"].shape[1:] == (SIZE, SIZE)
    raw = json.loads((out / "parts_base_train.json").read_text())
    object_ids = {
        a["id"] for a in json.loads((out / "objects_train.json").read_text())["annotations"]
    }
    assert raw["annotations"] and all(a["object_id"] in object_ids for a in raw["annotations"])
    assert all(c.split == "base" for c in parts.vocabulary)
    labels = ImageLabelDataset(out / "image_labels_train.json", out)
    assert labels[0][1]["image_labels"].numel() >= 1


def test_every_class_draws_its_parts():
    for name, parts in WORLD_PARTS.items():
        drawn = set()
        for seed in range(6):
            scene = draw_scene(np.random.default_rng([9, seed]), image_size=128, classes=[name])
            assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
            for obj in scene.objects:
                assert obj.name == name
                drawn |= {p for p, _ in obj.parts}
        assert drawn == set(parts), name


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown novel object"):
        synthesize_world(tmp_path, num_images=4, novel_objects=("unicorn",))
    with pytest.raises(ValueError, match="at least 2 images"):
        synthesize_world(tmp_path, num_images=1)


def test_cli_synth(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(tmp_path / "w"),
                "--seed",
                "1",
                "--images",
                "5",
                "--image-size",
                "64",
            ]
        )
        == 0
    )
    assert "4 train + 1 val images" in capsys.readouterr().out
    assert len(list((tmp_path / "w" / "images").glob("*.png"))) == 5
    assert (tmp_path / "w" / "world.json").is_file()
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--images", "1"]) == 2
    assert "at least 2 images" in capsys.readouterr().err
