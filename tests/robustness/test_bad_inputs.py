"""Bad input never crashes: one line ``vlpart: error: <file>: <problem>``, a non-zero exit, and
nothing an earlier run wrote is changed."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from robust_helpers import cli_error, snapshot
from safetensors.torch import load_file, save_file

from vlpart.model import load_checkpoint

# ---------------------------------------------------------------- configs (vlpart train)


def _config(fast_train_yaml: Path, tmp: Path, edit: Callable[[dict], None]) -> Path:
    data = yaml.safe_load(fast_train_yaml.read_text())
    edit(data)
    path = tmp / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _no_novel_annotations(data: dict) -> None:
    """A part file whose 'novel' categories exist but have no annotation."""
    ann = Path(data["data"][0]["ann_file"])
    coco = json.loads(ann.read_text())
    coco["categories"].append({"id": 999, "name": "dog:fin", "split": "novel"})
    out = ann.parent / "with_empty_novel.json"
    out.write_text(json.dumps(coco))
    data["data"][0].update(ann_file=str(out), split="novel", embeddings=None)


CONFIG_CASES = {
    "checkpoint_period 0": (
        lambda d: d["train"].update(checkpoint_period=0),
        "train.checkpoint_period: must be at least 1, got 0",
    ),
    "log_period 0": (lambda d: d["train"].update(log_period=0), "train.log_period: must be at"),
    "negative warm-up": (
        lambda d: d["train"].update(warmup_iters=-5),
        "train.warmup_iters: must be at least 0, got -5",
    ),
    "negative ratio": (
        lambda d: d["data"][0].update(ratio=-1),
        "data[0].ratio: must be at least 0",
    ),
    "every ratio 0": (lambda d: d["data"][0].update(ratio=0), "data: every source has ratio 0"),
    "huge min_size": (
        lambda d: d["data"][0].update(min_size=[100000]),
        "data[0].min_size: must be at most 8192, got 100000",
    ),
    "batch size 0": (lambda d: d["data"][0].update(batch_size=0), "data[0].batch_size"),
    "empty min_size": (lambda d: d["data"][0].update(min_size=[]), "must not be empty"),
    "keep 0 checkpoints": (
        lambda d: d["train"].update(keep_checkpoints=0),
        "train.keep_checkpoints: must be at least 1",
    ),
    "NaN learning rate": (lambda d: d["train"].update(lr=float("nan")), "train.lr: must be"),
    "bad template": (
        lambda d: d["text"].update(template="{object} {part} {0}"),
        "text.template: prompt template '{object} {part} {0}': {0} is not allowed",
    ),
    "unknown key": (lambda d: d["train"].update(max_iters=3), "did you mean 'train.max_iter'"),
    "wrong type": (lambda d: d["train"].update(max_iter="many"), "train.max_iter: expected int"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_values(case, capsys, fast_train_yaml, tmp_path):
    edit, problem = CONFIG_CASES[case]
    path = _config(fast_train_yaml, tmp_path, edit)
    earlier = _earlier_run(tmp_path)
    before = snapshot(earlier)
    line = cli_error(capsys, ["train", path, "--out", earlier])
    assert line.startswith(f"vlpart: error: {path}: "), line
    assert problem in line
    assert snapshot(earlier) == before


def test_split_that_selects_no_annotation_names_the_source(capsys, fast_train_yaml, tmp_path):
    path = _config(fast_train_yaml, tmp_path, _no_novel_annotations)
    line = cli_error(capsys, ["train", path, "--out", tmp_path / "run"])
    assert "with_empty_novel.json: data source 'parts': split 'novel' selects no labelled" in line


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"train:\n  max_iter: 4\n    lr: [1\n", ":3:7: not valid YAML: mapping values are not"),
        (b"train: {max_iter: 4\n", ":2:1: not valid YAML"),
        (b"\xff\xfe\x00\x01binary\x00", ": not a text file (byte 0 is not UTF-8)"),
        (b"- just\n- a list\n", ": top level: expected a mapping, got list"),
        (b"!!python/object/apply:os.system ['true']\n", ": not valid YAML"),
    ],
    ids=["indentation", "unclosed", "binary", "list", "python tag"],
)
def test_unreadable_config_files(content, problem, capsys, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    for command in (["train", path, "--out", tmp_path / "run"], ["parse", path]):
        line = cli_error(capsys, command)
        assert line.startswith(f"vlpart: error: {path}"), line
        assert problem in line, line


def test_missing_config_file(capsys, tmp_path):
    line = cli_error(capsys, ["train", tmp_path / "nope.yaml"])
    assert line == f"vlpart: error: {tmp_path / 'nope.yaml'}: config (YAML) file not found"


# ---------------------------------------------------------------- options and vocabularies


@pytest.mark.parametrize(
    "template", ["{object} {part} {0}", "{obj} {part}", "{object} {part", "a {object:>9} {part}"]
)
def test_bad_template_option(template, capsys, tiny_checkpoint, tmp_path):
    line = cli_error(capsys, ["vocab", "show", "dog:head", "--template", template])
    assert line.startswith(f"vlpart: error: --template: prompt template {template!r}"), line
    earlier = _earlier_predict(tmp_path)
    before = snapshot(earlier)
    image = tmp_path / "a.png"
    _png(image)
    cli_error(
        capsys,
        ["predict", image, "--weights", tiny_checkpoint, "--vocab", "dog:head"]
        + ["--template", template, "--out", earlier],
    )
    assert snapshot(earlier) == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"\x89PNG\r\n\x1a\n\x00\x00\xff", "not a text file"), (b"# only a comment\n", "no entries")],
    ids=["binary", "empty"],
)
def test_bad_vocabulary_files(content, problem, capsys, tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    line = cli_error(capsys, ["vocab", "show", path])
    assert line.startswith(f"vlpart: error: {path}: "), line
    assert problem in line


# ---------------------------------------------------------------- checkpoints


class _Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _copy_checkpoint(src: Path, folder: Path, name: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / name
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _truncated(src: Path, dst: Path) -> Path:
    path = _copy_checkpoint(src, dst.parent, dst.name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(src: Path, dst: Path) -> Path:
    path = _copy_checkpoint(src, dst.parent, dst.name)
    path.write_bytes(b"")
    return path


def _pth_as_safetensors(src: Path, dst: Path) -> Path:
    path = _copy_checkpoint(src, dst.parent, dst.name)
    torch.save(load_file(src), path)
    return path


def _nan_weights(src: Path, dst: Path) -> Path:
    path = _copy_checkpoint(src, dst.parent, dst.name)
    state = load_file(src)
    key = sorted(state)[3]
    state[key] = state[key].clone().fill_(float("nan"))
    save_file(state, str(path))
    return path


def _sidecar(edit: Callable[[dict], object]) -> Callable[[Path, Path], Path]:
    def make(src: Path, dst: Path) -> Path:
        path = _copy_checkpoint(src, dst.parent, dst.name)
        data = json.loads(path.with_suffix(".json").read_text())
        replaced = edit(data)
        payload = data if replaced is None else replaced
        if isinstance(payload, bytes):
            path.with_suffix(".json").write_bytes(payload)
        else:
            path.with_suffix(".json").write_text(json.dumps(payload))
        return path

    return make


SAFETENSORS_CASES = {
    "truncated": (_truncated, "truncated or corrupt safetensors file"),
    "empty": (_empty, "not a safetensors weights file: it is not a checkpoint format vlpart"),
    "a .pth under a .safetensors name": (
        _pth_as_safetensors,
        "not a safetensors weights file: it is a PyTorch torch.save file (.pth); official",
    ),
    "NaN weights": (_nan_weights, "tensors hold NaN or infinite values"),
    "sidecar is a list": (_sidecar(lambda d: [d]), "model.json: expected a JSON object"),
    "sidecar vocabulary is a string": (
        _sidecar(lambda d: d.update(vocabulary="dog")),
        "model.json: vocabulary: expected a list of categories",
    ),
    "sidecar vocabulary entry without name": (
        _sidecar(lambda d: d.update(vocabulary=[{"id": 1}])),
        "model.json: vocabulary[0]: expected an object with a 'name' string",
    ),
    "sidecar text_dim is text": (
        _sidecar(lambda d: d.update(text_dim="384")),
        "model.json: text_dim: expected an integer",
    ),
    "sidecar config is a list": (
        _sidecar(lambda d: d.update(config=[1, 2])),
        "model.json: config: expected an object",
    ),
    "sidecar config has a typo": (
        _sidecar(lambda d: d["config"].update(fpn_chanels=3)),
        "model.json: unknown key 'model.fpn_chanels'; did you mean 'model.fpn_channels'?",
    ),
    "sidecar is binary": (_sidecar(lambda d: b"\xff\x00\x01"), "model.json: not a text file"),
    "sidecar is not JSON": (_sidecar(lambda d: b"{format_version: 1"), "not valid JSON"),
    "sidecar min_size 100000": (
        _sidecar(lambda d: d["config"].update(min_size=100000)),
        "model.json: model.min_size: must be at most 8192, got 100000",
    ),
    "sidecar max_size 100000": (
        _sidecar(lambda d: d["config"].update(max_size=100000)),
        "model.json: model.max_size: must be at most 8192",
    ),
    "sidecar huge fpn_channels": (
        _sidecar(lambda d: d["config"].update(fpn_channels=10**7)),
        "model.json: model.fpn_channels: must be at most 8192",
    ),
    "sidecar huge detections": (
        _sidecar(lambda d: d["config"].update(detections_per_image=10**9)),
        "model.json: model.detections_per_image: must be at most 100000",
    ),
    "sidecar huge text_dim": (
        _sidecar(lambda d: d.update(text_dim=10**8)),
        "model.json: text_dim: expected an integer from 1 to 8192",
    ),
    "sidecar from the future": (
        _sidecar(lambda d: d.update(format_version=99)),
        "checkpoint format 99 is not supported",
    ),
}


@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_bad_safetensors_checkpoints(case, capsys, tiny_checkpoint, tmp_path):
    make, problem = SAFETENSORS_CASES[case]
    weights = make(tiny_checkpoint, tmp_path / "bad" / "model.safetensors")
    named = weights.with_suffix(".json") if "sidecar" in case else weights
    image = tmp_path / "a.png"
    _png(image)
    earlier = _earlier_predict(tmp_path)
    before = snapshot(earlier)
    line = cli_error(
        capsys, ["predict", image, "--weights", weights, "--vocab", "dog", "--out", earlier]
    )
    assert line.startswith(f"vlpart: error: {named}: "), line
    assert problem in line, line
    assert snapshot(earlier) == before


@pytest.mark.parametrize(
    "case", ["truncated", "empty", "a .pth under a .safetensors name", "NaN weights"]
)
def test_bad_init_weights(case, capsys, tiny_checkpoint, fast_train_yaml, tmp_path):
    make, problem = SAFETENSORS_CASES[case]
    weights = make(tiny_checkpoint, tmp_path / "bad" / "model.safetensors")
    earlier = _earlier_run(tmp_path)
    before = snapshot(earlier)
    line = cli_error(
        capsys, ["train", fast_train_yaml, "--init-weights", weights, "--out", earlier]
    )
    assert line.startswith(f"vlpart: error: {weights}: "), line
    assert problem in line, line
    assert snapshot(earlier) == before


def test_nan_weights_refused_by_the_python_api(tiny_checkpoint, tmp_path):
    weights = _nan_weights(tiny_checkpoint, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="1 tensors hold NaN or infinite values"):
        load_checkpoint(weights)


def _malicious(path: Path, marker: Path) -> Path:
    buffer = io.BytesIO()
    torch.save({"model": _Payload(marker)}, buffer)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize("command", ["predict", "convert", "init-weights"])
def test_malicious_pickle_is_refused_in_one_line(command, capsys, fast_train_yaml, tmp_path):
    marker = tmp_path / "pwned"
    evil = _malicious(tmp_path / "evil.pth", marker)
    image = tmp_path / "a.png"
    _png(image)
    args = {
        "predict": ["predict", image, "--weights", evil, "--vocab", "dog"],
        "convert": ["convert", evil, tmp_path / "out.safetensors"],
        "init-weights": ["train", fast_train_yaml, "--init-weights", evil, "--out", tmp_path],
    }[command]
    line = cli_error(capsys, args)
    assert line.startswith(f"vlpart: error: {evil}: "), line
    if command == "init-weights":
        assert "not a safetensors weights file: it is a PyTorch torch.save file" in line
    else:
        assert "refused: unpickling it would call 'posix.system'" in line
        assert "weights_only=True" in line
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_foreign_and_truncated_pth_files(capsys, tiny_checkpoint, tmp_path):
    image = tmp_path / "a.png"
    _png(image)
    as_pth = tmp_path / "ours.pth"
    shutil.copyfile(tiny_checkpoint, as_pth)
    line = cli_error(capsys, ["predict", image, "--weights", as_pth, "--vocab", "dog"])
    assert line == (
        f"vlpart: error: {as_pth}: is a safetensors file, not a PyTorch checkpoint (.pth); "
        "load it under a .safetensors name"
    )
    truncated = tmp_path / "cut.pth"
    torch.save({"model": {"w": torch.ones(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:700])
    line = cli_error(capsys, ["convert", truncated, tmp_path / "x.safetensors"])
    assert line.startswith(f"vlpart: error: {truncated}: truncated or corrupt PyTorch checkpoint")


# ---------------------------------------------------------------- resume


def test_resume_from_a_truncated_state_falls_back_to_the_previous_checkpoint(
    caplog, fast_train_yaml, tmp_path
):
    config = _config(fast_train_yaml, tmp_path, lambda d: d["train"].update(keep_checkpoints=2))
    run = tmp_path / "run"
    assert _main(["train", config, "--out", run]) == 0
    final = load_file(run / "model.safetensors")  # what an uninterrupted run ends with
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-000002", "ckpt-000004"]
    state = run / "ckpt-000004" / "train_state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    caplog.clear()
    assert _main(["train", config, "--out", run, "--resume"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert f"{state}: truncated" in warnings[0]
    assert "resuming from the previous complete checkpoint" in warnings[0]
    resumed = load_file(run / "model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    iterations = [json.loads(x)["iteration"] for x in (run / "metrics.jsonl").open()]
    assert iterations == [1, 2, 3, 4]


def test_resume_with_every_checkpoint_damaged_is_one_error_line(capsys, fast_train_yaml, tmp_path):
    run = tmp_path / "run"
    assert _main(["train", fast_train_yaml, "--out", run]) == 0
    weights = run / "ckpt-000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    before = snapshot(run)
    line = cli_error(capsys, ["train", fast_train_yaml, "--out", run, "--resume"])
    assert line.startswith(f"vlpart: error: {weights}: truncated"), line
    assert "no other complete checkpoint" in line
    assert snapshot(run) == before


def test_resume_without_any_earlier_run(capsys, fast_train_yaml, tmp_path):
    line = cli_error(capsys, ["train", fast_train_yaml, "--out", tmp_path / "x", "--resume"])
    assert (
        line == f"vlpart: error: {tmp_path / 'x'}: no checkpoint to resume from (ckpt-*/ folders)"
    )


# ---------------------------------------------------------------- helpers


def _main(args) -> int:
    from vlpart.apps.cli import main

    return main([str(a) for a in args])


def _png(path: Path, size: int = 64) -> None:
    from PIL import Image

    Image.new("RGB", (size, size), (120, 90, 60)).save(path)


def _earlier_run(tmp: Path) -> Path:
    folder = tmp / "earlier_run"
    (folder / "ckpt-000002").mkdir(parents=True)
    (folder / "ckpt-000002" / "model.safetensors").write_bytes(b"earlier weights")
    (folder / "latest").write_text("ckpt-000002\n")
    (folder / "metrics.jsonl").write_text('{"iteration": 1}\n{"iteration": 2}\n')
    return folder


def _earlier_predict(tmp: Path) -> Path:
    folder = tmp / "earlier_predict"
    (folder / "overlays").mkdir(parents=True)
    (folder / "results.json").write_text('[{"image_id": 1}]')
    (folder / "dataset.json").write_text('{"images": [{"id": 1}]}')
    (folder / "overlays" / "old.png").write_bytes(b"png")
    return folder


# ---------------------------------------------------------------- Pascal-Part conversion


@pytest.mark.parametrize("damage", ["empty .mat", "truncated .mat", "broken photo"])
def test_bad_pascal_part_files(damage, capsys, shared_data, tmp_path):
    names = ["2008_003497", "2010_005243"]
    anno, images = tmp_path / "ann", tmp_path / "img"
    anno.mkdir()
    images.mkdir()
    for name in names:
        shutil.copyfile(shared_data / "pascal_part_examples" / f"{name}.mat", anno / f"{name}.mat")
        shutil.copyfile(
            shared_data / "pascal_part_examples" / f"{name}.jpg", images / f"{name}.jpg"
        )
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.json").write_text('{"earlier": "parts"}')
    (out / "train_objects.json").write_text('{"earlier": "objects"}')
    before = snapshot(out)
    bad = {
        "empty .mat": anno / f"{names[1]}.mat",
        "truncated .mat": anno / f"{names[1]}.mat",
        "broken photo": images / f"{names[1]}.jpg",
    }[damage]
    bad.write_bytes(b"" if damage == "empty .mat" else bad.read_bytes()[:200])
    line = cli_error(capsys, ["data", "convert-pascal-part", anno, images, out / "train.json"])
    assert line.startswith(f"vlpart: error: {bad}: "), line
    expected = (
        "not a readable image" if damage == "broken photo" else "not a Pascal-Part annotation"
    )
    assert expected in line
    assert snapshot(out) == before
