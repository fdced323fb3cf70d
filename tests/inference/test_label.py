"""``vlpart label`` / :func:`vlpart.label`: the training set it writes (read back by pycocotools,
supervision and the YOLO layout's rules), the manifest that guards a resume, and resuming
after ``kill -9`` at several moments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from label_helpers import VOCAB, make_photos

import vlpart
from vlpart.apps.cli import main
from vlpart.core.coco import decode_segmentation


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"), 7)


@pytest.fixture(scope="module")
def labelled_run(photos, label_weights, tmp_path_factory):
    """The output folder of one run over ``photos`` and the run's summary."""
    out = tmp_path_factory.mktemp("labelled") / "set"
    summary = vlpart.label(
        [photos],
        out,
        weights=label_weights,
        vocabulary=VOCAB,
        min_score=0.0,
        formats=["coco", "yolo"],
        shard_size=2,
        recursive=True,
    )
    return out, summary


@pytest.fixture(scope="module")
def labelled(labelled_run) -> Path:
    return labelled_run[0]


def test_the_summary_counts_and_times_what_the_run_did(labelled_run):
    out, summary = labelled_run
    coco = json.loads((out / "annotations.json").read_text())
    assert (summary.num_images, summary.num_skipped) == (7, 1)
    assert summary.num_annotations == len(coco["annotations"])
    assert summary.shards_done == summary.shards_total == 4
    assert len(summary.shard_seconds) == 4
    for seconds in summary.shard_seconds:
        assert list(seconds) == ["decode", "model", "encode", "write"]
        assert all(s >= 0 for s in seconds.values())
    stages = summary.stage_seconds()
    assert list(stages) == ["decode", "model", "encode", "write", "merge"]
    assert stages["model"] > 0 and stages["merge"] > 0


def test_annotations_are_coco_instances_that_pycocotools_reads(labelled, photos):
    from pycocotools.coco import COCO

    coco = COCO(str(labelled / "annotations.json"))
    data = coco.dataset
    assert data["info"]["image_root"] == str(photos.resolve())
    assert [c["name"] for c in data["categories"]] == ["dog", "dog:head", "dog:torso"]
    assert [c.get("supercategory") for c in data["categories"]] == [None, "dog", "dog"]
    assert len(data["images"]) == 7
    # Ids follow the input list (sorted, recursive): a/broken.jpg is input 1 and skipped.
    assert [img["id"] for img in data["images"]] == list(range(2, 9))
    assert (photos / data["images"][0]["file_name"]).is_file()
    anns = data["annotations"]
    assert len(anns) > 20
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    by_id = {a["id"]: a for a in anns}
    for ann in anns:
        mask = coco.annToMask(ann)
        assert ann["iscrowd"] == 0
        assert ann["area"] == mask.sum() > 0
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert 0.0 <= ann["score"] <= 1.0
        parent = ann["parent_id"]
        if parent is not None:
            assert by_id[parent]["image_id"] == ann["image_id"]
            assert by_id[parent]["category_id"] == 1  # a part's parent is a dog
            assert ann["category_id"] in (2, 3)
    skipped = (labelled / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 1
    path, reason = skipped[0].split("\t")
    assert path.endswith("broken.jpg") and "not a readable image" in reason


def test_supervision_reads_the_coco_file_as_is(labelled):
    import supervision as sv
    from pycocotools.coco import COCO

    coco = COCO(str(labelled / "annotations.json"))
    root = coco.dataset["info"]["image_root"]
    dataset = sv.DetectionDataset.from_coco(root, str(labelled / "annotations.json"))
    assert dataset.classes == ["dog", "dog:head", "dog:torso"]
    assert len(dataset) == 7
    for path, _, detections in dataset:
        img = next(i for i in coco.dataset["images"] if Path(root, i["file_name"]) == Path(path))
        anns = coco.imgToAnns[img["id"]]
        assert len(detections) == len(anns)
        for k, ann in enumerate(anns):
            assert np.array_equal(detections.mask[k], coco.annToMask(ann).astype(bool))
            assert dataset.classes[detections.class_id[k]] == coco.cats[ann["category_id"]]["name"]


def test_yolo_layout_follows_the_format_and_supervision_reads_it(labelled):
    import supervision as sv

    coco = json.loads((labelled / "annotations.json").read_text())
    config = yaml.safe_load((labelled / "data.yaml").read_text())
    assert config["names"] == {0: "dog", 1: "dog:head", 2: "dog:torso"}
    assert config["nc"] == 3 and config["train"] == "images"
    labels = sorted((labelled / "labels").iterdir())
    images = sorted((labelled / "images").iterdir())
    assert [p.stem for p in labels] == [p.stem for p in images]
    assert len(labels) == len(coco["images"])
    root = Path(coco["info"]["image_root"])
    for img, label_file, image_file in zip(coco["images"], labels, images, strict=True):
        assert label_file.stem == f"{img['id']:08d}_{Path(img['file_name']).stem}"
        assert image_file.read_bytes() == (root / img["file_name"]).read_bytes()
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        lines = label_file.read_text().splitlines()
        assert len(lines) == len(anns)
        h, w = img["height"], img["width"]
        for line, ann in zip(lines, anns, strict=True):
            values = line.split()
            assert int(values[0]) == ann["category_id"] - 1
            coords = np.array(values[1:], dtype=float)
            assert len(coords) % 2 == 0 and len(coords) >= 6
            assert ((coords >= 0) & (coords <= 1)).all()
            # The polygon covers the mask: its rasterisation overlaps the mask well.
            poly = (coords.reshape(-1, 2) * [w, h]).reshape(-1).tolist()
            drawn = decode_segmentation([poly], h, w).astype(bool)
            mask = decode_segmentation(ann["segmentation"], h, w).astype(bool)
            assert (drawn & mask).sum() / (drawn | mask).sum() > 0.6
    dataset = sv.DetectionDataset.from_yolo(
        str(labelled / "images"), str(labelled / "labels"), str(labelled / "data.yaml")
    )
    assert dataset.classes == ["dog", "dog:head", "dog:torso"]
    assert len(dataset) == len(labels)
    counts = {Path(p).stem: len(d) for p, _, d in dataset}
    assert counts == {p.stem: len(p.read_text().splitlines()) for p in labels}


def test_rerun_of_a_finished_set_changes_nothing(labelled, photos, label_weights):
    before = (labelled / "annotations.json").read_bytes()
    summary = vlpart.label(
        [photos],
        labelled,
        weights=label_weights,
        vocabulary=VOCAB,
        min_score=0.0,
        formats=["coco", "yolo"],
        shard_size=2,
        recursive=True,
    )
    assert summary.shards_done == 0 and summary.shards_total == 4
    assert (labelled / "annotations.json").read_bytes() == before


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        (["--vocab", "cat;cat:head"], "vocabulary"),
        (["--min-score", "0.5"], "settings"),
        (["--shard-size", "3"], "settings"),
        (["--extra"], "inputs"),
        (["--other-model"], "model"),
    ],
)
def test_a_folder_of_another_run_is_refused(
    change, differs, labelled, photos, label_weights, tmp_path, capsys
):
    argv = ["label", str(photos), "-r", "--weights", str(label_weights), "--vocab", VOCAB]
    argv += ["--out", str(labelled), "--min-score", "0", "--format", "coco,yolo"]
    argv += ["--shard-size", "2"]
    if change == ["--extra"]:
        argv.insert(2, str(make_photos(tmp_path / "more", 1, bad=False)))
    elif change == ["--other-model"]:
        other = tmp_path / "other.safetensors"
        other.write_bytes(Path(label_weights).read_bytes() + b" ")
        argv[argv.index("--weights") + 1] = str(other)
    else:
        argv += change
    before = {p: p.stat().st_mtime_ns for p in labelled.rglob("*")}
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vlpart: error: {labelled}: holds a labelling run with another")
    assert differs in err and "\n" not in err
    assert {p: p.stat().st_mtime_ns for p in labelled.rglob("*")} == before


def test_a_folder_that_is_not_a_run_is_refused(photos, label_weights, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["label", str(photos), "-r", "--weights", str(label_weights), "--vocab", VOCAB]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "not empty and not a labelling run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_bad_options_are_one_line_errors(photos, label_weights, tmp_path, capsys):
    argv = ["label", str(photos), "-r", "--weights", str(label_weights), "--vocab", VOCAB]
    argv += ["--out", str(tmp_path / "o")]
    assert main([*argv, "--format", "coco,voc"]) == 2
    assert "unknown format 'voc'" in capsys.readouterr().err
    assert main([*argv, "--workers", "2"]) == 2
    assert "needs Ray" in capsys.readouterr().err
    assert main([*argv, "--shard-size", "0"]) == 2
    assert "shard_size must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _label_command(photos: Path, weights: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vlpart.apps.cli",
        "label",
        str(photos),
        "-r",
        "--weights",
        str(weights),
        "--vocab",
        VOCAB,
        "--out",
        str(out),
        "--min-score",
        "0",
        "--format",
        "coco,yolo",
        "--shard-size",
        "1",
        "--threads",
        "1",
    ]


@pytest.mark.slow
def test_resume_after_kill_9_equals_an_uninterrupted_run(label_weights, tmp_path):
    """Kill -9 a run after 1, 3 and 6 of 8 shards and once during the merge (all shards on
    disk), re-running after each; the final files equal those of one uninterrupted run."""
    photos = make_photos(tmp_path / "photos", 7)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_label_command(photos, label_weights, whole), env=env, check=True)
    out = tmp_path / "killed"
    kills = 0
    for shards_before_kill in (1, 3, 6, 8):
        proc = subprocess.Popen(
            _label_command(photos, label_weights, out),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None:
            done = len(list((out / "shards").glob("*.json"))) if (out / "shards").is_dir() else 0
            if done >= shards_before_kill and not (out / "annotations.json").exists():
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.01)
        proc.wait()
    assert kills >= 3  # the runs were really cut short (the last may finish before its kill)
    subprocess.run(_label_command(photos, label_weights, out), env=env, check=True)
    assert (out / "annotations.json").read_bytes() == (whole / "annotations.json").read_bytes()
    assert (out / "skipped.txt").read_bytes() == (whole / "skipped.txt").read_bytes()
    for name in ("labels", "images"):
        files = sorted(p.name for p in (whole / name).iterdir())
        assert sorted(p.name for p in (out / name).iterdir()) == files
        for f in files:
            assert (out / name / f).read_bytes() == (whole / name / f).read_bytes()
    leftovers = [p for p in out.rglob(".*") if p.name.endswith(".tmp")]
    assert leftovers == []
