"""Bad COCO files and odd images, end to end through the commands that read them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from robust_helpers import cli_error, snapshot

from vlpart.apps.cli import main

BAD_ANNOTATIONS = {
    "NaN bbox": (
        lambda d: d["annotations"][0].update(bbox=[1, float("nan"), 4, 4]),
        "annotations[0].bbox: expected 4 finite",
    ),
    "short bbox": (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotations[0].bbox"),
    "string bbox": (lambda d: d["annotations"][0].update(bbox="1 2 3 4"), "annotations[0].bbox"),
    "2-point polygon": (
        lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1]]),
        "annotations[0].segmentation[0]: a polygon needs at least 3 points",
    ),
    "odd-length polygon": (
        lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1, 5, 5, 2]]),
        "annotations[0].segmentation[0]: a polygon needs x, y pairs",
    ),
    "string segmentation": (
        lambda d: d["annotations"][0].update(segmentation="mask"),
        "annotations[0].segmentation: expected polygons or RLE",
    ),
    "annotations not a list": (
        lambda d: d.update(annotations={"0": {}}),
        "annotations: expected a list",
    ),
    "unknown image id": (
        lambda d: d["annotations"][0].update(image_id=77777),
        "annotations[0].image_id: 77777 is not an image",
    ),
    "image without height": (lambda d: d["images"][0].pop("height"), "images[0]: no 'height'"),
}


def _bad_coco(synthetic_world: Path, tmp: Path, edit) -> Path:
    data = json.loads((synthetic_world / "parts_base_train.json").read_text())
    data["annotations"] = data["annotations"][:5]
    edit(data)
    path = tmp / "bad_parts.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("case", list(BAD_ANNOTATIONS))
def test_bad_coco_files_through_train_eval_and_parse(
    case, capsys, synthetic_world, fast_train_yaml, tmp_path
):
    edit, problem = BAD_ANNOTATIONS[case]
    bad = _bad_coco(synthetic_world, tmp_path, edit)
    config = yaml.safe_load(fast_train_yaml.read_text())
    config["data"][0].update(ann_file=str(bad), embeddings=None)
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(yaml.safe_dump(config))
    parse_yaml = tmp_path / "parse.yaml"
    parse_yaml.write_text(
        yaml.safe_dump(
            {
                "parse": {
                    "backend": "efficientnet_lite0",
                    "image_size": 64,
                    "base_objects": str(synthetic_world / "objects_train.json"),
                    "base_parts": str(bad),
                    "base_image_root": str(synthetic_world),
                    "base_categories": ["cat", "cow"],
                    "novel_objects": str(synthetic_world / "objects_train.json"),
                    "novel_image_root": str(synthetic_world),
                }
            }
        )
    )
    good = synthetic_world / "parts_val.json"
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    before = snapshot(out)
    commands = {
        "train": ["train", train_yaml, "--out", out],
        "eval --gt": ["eval", "--results", good, "--gt", bad, "--out", out],
        "parse": ["parse", parse_yaml, "--out", out],
    }
    for name, args in commands.items():
        line = cli_error(capsys, args)
        assert line.startswith(f"vlpart: error: {bad}: "), (name, line)
        assert problem in line, (name, line)
    assert snapshot(out) == before


def test_bad_results_file_names_its_json_path(capsys, synthetic_world, tmp_path):
    gt = synthetic_world / "parts_val.json"
    image_id = json.loads(gt.read_text())["images"][0]["id"]
    results = tmp_path / "results.json"
    record = {"image_id": image_id, "category_id": 1, "bbox": [0, 0, 1], "score": 1}
    results.write_text(json.dumps([record]))
    line = cli_error(capsys, ["eval", "--results", results, "--gt", gt])
    assert line.startswith(f"vlpart: error: {results}: [0].bbox"), line


# ------------------------------------------------------------------ images in a folder run


def _odd_images(folder: Path) -> dict[str, str | None]:
    """Image files of every kind; the value is the expected problem (None: processed)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray((rng.integers(0, 65535, (40, 50))).astype(np.uint16)).save(folder / "deep.png")
    Image.new("CMYK", (30, 20), (10, 20, 30, 0)).save(folder / "cmyk.jpg")
    Image.new("LA", (30, 20), (100, 128)).save(folder / "gray_alpha.png")
    Image.new("P", (30, 20), 3).save(folder / "palette.png")
    Image.new("RGB", (3000, 1), (200, 10, 10)).save(folder / "thin.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: shown 40 wide, 50 high
    Image.new("RGB", (50, 40), (0, 128, 0)).save(folder / "phone.jpg", exif=exif)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    big = Image.new("1", (20000, 20000))  # a decompression bomb: tiny file, 400 MP
    big.save(folder / "bomb.png")
    return {
        "rgb.png": None,
        "deep.png": None,
        "cmyk.jpg": None,
        "gray_alpha.png": None,
        "palette.png": None,
        "thin.png": None,
        "phone.jpg": None,
        "empty.png": "not a readable image",
        "text.jpg": "not a readable image",
        "bomb.png": "pixel",
    }


def test_a_folder_of_odd_images_reports_each_bad_one_and_processes_the_rest(
    caplog, capsys, tiny_checkpoint, tmp_path
):
    folder = tmp_path / "images"
    expected = _odd_images(folder)
    out = tmp_path / "out"
    args = ["predict", str(folder), "--weights", str(tiny_checkpoint), "--vocab", "dog"]
    assert main([*args, "--out", str(out), "--score-thresh", "0"]) == 0
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert "Traceback" not in capsys.readouterr().err
    for name, problem in expected.items():
        lines = [m for m in skipped if f"{folder / name}: " in m]
        if problem is None:
            assert not lines, (name, lines)
        else:
            assert len(lines) == 1 and problem in lines[0], (name, skipped)
    dataset = json.loads((out / "dataset.json").read_text())
    sizes = {Path(im["file_name"]).name: (im["height"], im["width"]) for im in dataset["images"]}
    assert set(sizes) == {n for n, p in expected.items() if p is None}
    assert sizes["phone.jpg"] == (50, 40)  # EXIF orientation applied
    assert sizes["thin.png"] == (1, 3000)
    assert len(list((out / "overlays").iterdir())) == len(sizes)


def test_extreme_aspect_ratios_resize_to_at_least_one_pixel():
    import torch

    from vlpart.data.transforms import ResizeShortestEdge
    from vlpart.model.transform import resized_shape

    assert resized_shape(1, 3000, min_size=800, max_size=1333) == (1, 1333)
    image = torch.zeros(3, 1, 3000, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[0.0, 0.0, 3000.0, 1.0]])}
    out, resized = ResizeShortestEdge(96, max_size=96)(image, target, torch.Generator())
    assert tuple(out.shape) == (3, 1, 96)
    torch.testing.assert_close(resized["boxes"], torch.tensor([[0.0, 0.0, 96.0, 1.0]]))
