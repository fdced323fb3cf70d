"""``vlpart finetune``: name inference, the plan, bad input (one line, nothing written), the
report, the recorded vocabulary, resume after ``kill -9``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vlpart.apps.cli import main
from vlpart.core.errors import InputError
from vlpart.training.finetune import FinetunePlan, finetune, plan_finetune
from vlpart.training.finetune_data import held_out_split, inspect_dataset

MINILM = "minilm:all-MiniLM-L6-v2"


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def _parts_file(world: Path, tmp_path: Path, edit=None) -> Path:
    """The synthetic world's base-part training file, optionally edited, under ``tmp_path``."""
    data = json.loads((world / "parts_base_train.json").read_text())
    if edit is not None:
        edit(data)
    return _write(tmp_path / "train.json", data)


@pytest.fixture(scope="module")
def start_checkpoint(tmp_path_factory, tiny_model_settings):
    """A tiny untrained start that records a vocabulary it 'knew' (one category not in the
    fine-tuning files, so keep-known has something to add)."""
    from vlpart.core.config import config_from_dict
    from vlpart.model import build_model, save_checkpoint

    cfg = config_from_dict({"model": {**tiny_model_settings, "detections_per_image": 10}}).model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("start") / "model.safetensors"
    known = [{"name": "kite", "object": "kite", "part": None}]
    return save_checkpoint(
        build_model(cfg), path, config=cfg, vocabulary=known, text_encoder=MINILM
    )


def test_category_kinds_come_from_the_one_naming_rule(synthetic_world, tmp_path):
    def edit(data):
        data["categories"] = [
            {"id": 1, "name": "dog:head"},
            {"id": 2, "name": "Quadruped Head", "supercategory": "Quadruped"},
            {"id": 3, "name": "Quadruped Foot"},  # a PartImageNet part without supercategory
            {"id": 4, "name": "bottle"},
            {"id": 5, "name": "Snake Tail", "supercategory": "Snake"},
        ]
        for i, ann in enumerate(data["annotations"]):
            ann["category_id"] = 1 + i % 4  # Snake Tail stays empty

    summary = inspect_dataset(_parts_file(synthetic_world, tmp_path, edit), synthetic_world)
    kinds = {c.name: (c.object, c.part) for c in summary.vocabulary}
    assert kinds == {
        "dog:head": ("dog", "head"),
        "Quadruped Head": ("Quadruped", "Head"),
        "Quadruped Foot": ("Quadruped", "Foot"),
        "bottle": ("bottle", None),
        "Snake Tail": ("Snake", "Tail"),
    }
    assert summary.empty == ["Snake Tail"]
    assert sum(summary.instances.values()) == len(
        [a for a in summary.data["annotations"] if a["bbox"][2] > 0 and a["bbox"][3] > 0]
    )


@pytest.mark.parametrize(
    ("category", "problem"),
    [
        ({"id": 1, "name": "dog:head:ear"}, "more than one ':'"),
        ({"id": 1, "name": "dog:"}, "empty object or part"),
        ({"id": 1, "name": ":head"}, "empty object or part"),
        ({"id": 1, "name": "dog:head", "supercategory": "cat"}, "supercategory is 'cat'"),
    ],
)
def test_names_that_clash_with_the_naming_rule_are_one_line_errors(
    synthetic_world, tmp_path, category, problem
):
    def edit(data):
        data["categories"] = [category]
        for ann in data["annotations"]:
            ann["category_id"] = 1

    path = _parts_file(synthetic_world, tmp_path, edit)
    with pytest.raises(InputError, match=problem):
        inspect_dataset(path, synthetic_world)


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlpart: error: ") and "\n" not in err
    return err


def _bad_inputs(world: Path, tmp_path: Path) -> dict[str, tuple[Path, Path, str]]:
    """name -> (file, image root, expected message) of every bad-input case on file."""
    cases = {}
    no_anns = tmp_path / "no_anns"
    no_anns.mkdir()
    cases["no usable annotations"] = (
        _parts_file(world, no_anns, lambda d: d.update(annotations=[])),
        world,
        "no usable annotation",
    )
    clash = tmp_path / "clash"
    clash.mkdir()
    cases["naming clash"] = (
        _parts_file(
            world,
            clash,
            lambda d: d["categories"][0].update(name="kitten:head", supercategory="dog"),
        ),
        world,
        "supercategory is 'dog'",
    )
    images = tmp_path / "images_copy"
    (images / "images").mkdir(parents=True)
    data = json.loads((world / "parts_base_train.json").read_text())
    for info in data["images"][2:]:  # the first two are missing
        (images / info["file_name"]).write_bytes((world / info["file_name"]).read_bytes())
    first = images / data["images"][0]["file_name"]
    cases["missing images"] = (
        world / "parts_base_train.json",
        images,
        f"2 of the {len(data['images'])} images .* missing, first {first}",
    )
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    cases["wrong sizes"] = (
        _parts_file(world, sizes, lambda d: d["images"][1].update(width=97)),
        world,
        # The COCO owner sees it first when an annotation's RLE has the image's old size.
        "(1 images differ from their recorded size, first .* is 96x96 .* says 97x96"
        "|mask size \\[96, 96\\] differs from image 2 \\(96x97\\))",
    )
    return cases


def test_every_bad_input_is_one_line_and_writes_nothing(
    synthetic_world, tmp_path, capsys, start_checkpoint
):
    for name, (ann, root, message) in _bad_inputs(synthetic_world, tmp_path).items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        argv = ["finetune", str(ann), str(root), "--from", str(start_checkpoint)]
        err = _cli_error(capsys, [*argv, "--out", str(out)])
        assert re.search(message, err), (name, err)
        assert not out.exists(), name


def test_a_text_encoder_that_cannot_load_offline_is_one_line_and_writes_nothing(
    synthetic_world, tmp_path, capsys, tiny_model_settings, monkeypatch
):
    """A start trained with CLIP, no CLIP weights on this machine (the offline guard)."""
    from vlpart.core.config import config_from_dict
    from vlpart.model import build_model, save_checkpoint

    monkeypatch.delenv("VLPART_CLIP_WEIGHTS", raising=False)
    cfg = config_from_dict({"model": {**tiny_model_settings, "text_dim": 1024}}).model
    start = save_checkpoint(
        build_model(cfg), tmp_path / "clip.safetensors", config=cfg, text_encoder="clip:RN50:openai"
    )
    out = tmp_path / "out"
    argv = ["finetune", str(synthetic_world / "parts_base_train.json"), str(synthetic_world)]
    err = _cli_error(capsys, [*argv, "--from", str(start), "--out", str(out)])
    assert "CLIP" in err or "clip" in err
    assert not out.exists()


def test_an_unknown_start_and_a_used_out_folder_are_refused(
    synthetic_world, tmp_path, capsys, start_checkpoint
):
    argv = ["finetune", str(synthetic_world / "parts_base_train.json"), str(synthetic_world)]
    err = _cli_error(capsys, [*argv, "--from", "r50_pascalpartt", "--out", str(tmp_path / "a")])
    assert "r50_pascalpart" in err
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("mine")
    err = _cli_error(capsys, [*argv, "--from", str(start_checkpoint), "--out", str(used)])
    assert "not empty" in err
    assert sorted(p.name for p in used.iterdir()) == ["x"]


def test_plan_from_data_size_and_start(synthetic_world, start_checkpoint):
    ann = synthetic_world / "parts_base_train.json"
    plan = plan_finetune(ann, synthetic_world, start=start_checkpoint)
    summary = inspect_dataset(ann, synthetic_world)
    assert isinstance(plan, FinetunePlan)
    assert plan.num_annotated == summary.num_annotated
    assert held_out_split(summary) is not None  # 13 annotated images: every tenth held out
    train_images = summary.num_annotated - 1
    assert plan.batch_size == 2
    assert plan.iterations == max(100, -(-20 * train_images // 2))
    assert plan.warmup_iters == plan.iterations // 10
    assert plan.lr_steps == [int(plan.iterations * 0.8)]
    assert plan.freeze == ["backbone"]  # few images: trunk and FPN stay as they were
    assert plan.text_encoder == MINILM
    assert plan.keep_known and plan.known_categories == 1
    assert plan.checkpoint_period == -(-plan.iterations // 10)
    assert plan.seconds_per_iteration > 0
    assert plan.estimated_seconds == pytest.approx(plan.iterations * plan.seconds_per_iteration)
    text = str(plan)
    assert "held-out 10 %" in text and f"{plan.iterations} x batch 2" in text
    held_out = held_out_split(summary)[1]["images"]
    assert len(held_out) == 1
    for name, n in summary.instances.items():  # the training images' instances are listed
        held = sum(
            a["image_id"] == held_out[0]["id"]
            and summary.vocabulary[[c.id for c in summary.vocabulary].index(a["category_id"])].name
            == name
            for a in summary.data["annotations"]
        )
        assert plan.instances[name] == n - held
        assert any(line.split() == [name, str(n - held)] for line in text.splitlines())
    short = plan_finetune(ann, synthetic_world, start=start_checkpoint, iterations=7)
    assert (short.iterations, short.warmup_iters, short.checkpoint_period) == (7, 0, 1)


def test_finetune_writes_report_and_a_model_that_knows_its_vocabulary(
    synthetic_world, tmp_path, start_checkpoint, capsys
):
    out = tmp_path / "run"
    result = finetune(
        synthetic_world / "parts_base_train.json",
        synthetic_world,
        start=start_checkpoint,
        out=out,
        val_file=synthetic_world / "parts_val.json",
        iterations=2,
    )
    assert Path(result["weights"]) == out / "model.safetensors"
    metrics = json.loads((out / "metrics.json").read_text())
    val_names = [
        c["name"]
        for c in json.loads((synthetic_world / "parts_val.json").read_text())["categories"]
    ]
    for when in ("before", "after"):
        for label in ("mask", "box"):
            assert list(metrics[when][label]["categories"]) == val_names
    report = (out / "report.md").read_text()
    assert "→" in report and "| **all** |" in report
    num_val = len(json.loads((synthetic_world / "parts_val.json").read_text())["images"])
    assert len(list((out / "overlays").glob("*.png"))) == min(4, num_val)
    sidecar = json.loads((out / "model.json").read_text())
    recorded = [r["name"] for r in sidecar["vocabulary"]]
    train_names = [
        c["name"]
        for c in json.loads((synthetic_world / "parts_base_train.json").read_text())["categories"]
    ]
    assert recorded[: len(train_names)] == train_names and "kite" in recorded
    assert sidecar["text_encoder"] == MINILM
    # `vlpart predict --weights` needs no --vocab: the checkpoint's vocabulary is the default.
    image = synthetic_world / "images" / "000001.png"
    pred_out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(image),
                "--weights",
                str(out / "model.safetensors"),
                "--out",
                str(pred_out),
            ]
        )
        == 0
    )
    dataset = json.loads((pred_out / "dataset.json").read_text())
    assert [c["name"] for c in dataset["categories"]] == recorded


@pytest.mark.slow
def test_resume_after_kill_9_finishes_the_run(synthetic_world, tmp_path, start_checkpoint):
    """SIGKILL once a checkpoint is committed; --resume continues from it to the end."""
    out = tmp_path / "run"
    argv = [
        sys.executable, "-m", "vlpart.apps.cli", "finetune",
        str(synthetic_world / "parts_base_train.json"), str(synthetic_world),
        "--from", str(start_checkpoint), "--out", str(out), "--iterations", "20",
        "--no-keep-known", "--threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "latest").is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int((out / "latest").read_text().strip().split("-")[1])
    assert 0 < killed_at < 20
    assert not (out / "report.md").exists()
    resumed = subprocess.run(
        [*argv, "--resume"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from iteration" in resumed.stderr
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    iterations = [r["iteration"] for r in lines]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 20
    assert (out / "report.md").is_file() and (out / "model.safetensors").is_file()


class _FixedDetections:
    """A stand-in segmenter whose every image shows the same two detections of known
    category 0: one on the file's own annotation, one elsewhere."""

    label_ids = [0, 0]

    def predict(self, image, *, vocabulary, score_threshold):
        return self

    def to_coco(self, image_id):
        square = {"counts": "", "size": [64, 64]}
        return [
            {"bbox": [10.0, 10.0, 20.0, 20.0], "segmentation": square, "score": 0.9},
            {"bbox": [40.0, 40.0, 10.0, 10.0], "segmentation": square, "score": 0.8},
        ]


def test_keep_known_drops_old_names_for_the_files_own_instances():
    from vlpart.core.vocab import Vocabulary
    from vlpart.training.finetune_data import pseudo_label_known

    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [11, 11, 19, 19], "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "dog:torso"}],
    }
    known = Vocabulary.from_json([{"name": "cat:torso", "object": "cat", "part": "torso"}])
    out, added = pseudo_label_known(_FixedDetections(), data, ".", known)
    # the cat torso on the user's dog torso (IoU 0.9) is not added; the other one is
    assert added == 1
    assert [a["bbox"] for a in out["annotations"]] == [[11, 11, 19, 19], [40.0, 40.0, 10.0, 10.0]]
    assert out["categories"][-1]["name"] == "cat:torso"
