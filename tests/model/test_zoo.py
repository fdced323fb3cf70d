"""The model zoo: the registry, names, and ``from_pretrained(name)`` through a local mirror."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlpart.apps.cli import main
from vlpart.core.vocab import BUILTIN_VOCABULARIES, load_builtin
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import zoo
from vlpart.model.zoo import MODELS, ModelSpec, get_model, list_models

RELEASE = "https://github.com/PeizeSun/VLPart/releases/download/v0.1/"


def test_registry_holds_every_released_checkpoint():
    names = list_models()
    assert len(names) == len(set(names)) == 30  # every model linked from the authors' zoo
    assert sum(MODELS[n].backbone == "swin_b" for n in names) == 11
    for spec in MODELS.values():
        assert spec.url == f"{RELEASE}{spec.name}.pth"
        assert spec.cascade == spec.name.startswith("swinbase_cascade_")
        assert spec.vocabulary in BUILTIN_VOCABULARIES
        assert spec.reported_ap is not None and 0 < spec.reported_ap < 100, spec.name
        assert spec.training_data and spec.config.endswith(".yaml")
    # Spot checks against MODEL_ZOO.md.
    assert get_model("r50_pascalpart").reported == {
        "pascal_part/AP": 19.4,
        "pascal_part/AP50": 42.3,
        "partimagenet/AP": 4.5,
    }
    swin = get_model("swinbase_cascade_lvis_paco_pascalpart_partimagenet_inparsed")
    assert (swin.reported["partimagenet/AP"], swin.reported["partimagenet/AP50"]) == (42.0, 68.2)
    assert swin.reported["lvis/APr"] == 30.5 and swin.architecture.startswith("Swin-B Cascade")
    assert (
        get_model("r50_pascalpartbase_voc_ins20_ins20parsed").reported["pascal_part/novel/AP50"]
        == 11.0
    )
    assert get_model("r50_pascalpart_ins11").reported["partimagenet/AP50"] is None  # not given


def test_duplicate_names_fail_and_unknown_names_suggest():
    spec = get_model("r50_voc")
    with pytest.raises(ValueError, match="'r50_voc' is registered twice"):
        zoo._registry([spec, ModelSpec("r50_voc", "resnet50", ("VOC",), "voc", {}, "x.yaml")])
    with pytest.raises(
        ValueError,
        match=r"unknown model 'r50_pascalprt'; did you mean "
        r"'r50_pascalpart'.*`vlpart models` lists all 30",
    ):
        get_model("r50_pascalprt")


def test_default_vocabularies_use_the_released_embedding_prompts(shared_data):
    """Row i of the released ``<vocab>_clip_RN50_a+cname.npy`` embeds the taxonomy's prompt i;
    the built-in vocabulary each zoo model defaults to yields those prompts (up to case, which
    CLIP's tokenizer drops)."""
    taxonomies = shared_data / "taxonomies"
    reference = {
        "pascal_part": [c["prompt"] for c in _load(taxonomies / "pascal_part.json")["categories"]],
        "partimagenet": [
            c["prompt"] for c in _load(taxonomies / "partimagenet.json")["categories"]
        ],
        "paco": [
            f"a {c['name'].replace(':', ' ')}"
            for c in sorted(
                _load(taxonomies / "paco.json")["objects"]
                + _load(taxonomies / "paco.json")["object_parts"],
                key=lambda c: c["id"],
            )
        ],
        "lvis": [f"a {c['name']}" for c in _load(taxonomies / "voc_lvis.json")["lvis_v1"]],
    }
    used = {spec.vocabulary for spec in MODELS.values()}
    assert set(reference) <= used
    for name, prompts in reference.items():
        # CLIP's tokenizer lowercases (LVIS spells 'Band_Aid'); everything else is verbatim.
        assert [p.lower() for p in load_builtin(name).prompts()] == [p.lower() for p in prompts]


def _load(path):
    return json.loads(path.read_text())


def test_offline_uncached_name_fails_in_one_line(monkeypatch, cache_dir, capsys, tmp_path):
    monkeypatch.delenv("VLPART_MIRROR", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        PartSegmenter.from_pretrained("r50_pascalpart")
    message = str(info.value)
    expected = cache_dir / "checkpoints" / "r50_pascalpart.pth"
    assert f"download {RELEASE}r50_pascalpart.pth and put it at {expected}" in message
    assert "\n" not in message
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["predict", str(image), "--model", "r50_pascalpart", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlpart: error: ") and str(expected) in err[0]


def test_models_command_lists_every_model_and_what_is_cached(cache_dir, capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "backbone", "training", "data", "reported", "AP", "cached"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == list_models()
    assert "19.4 Pascal Part" in rows["r50_pascalpart"] and rows["r50_pascalpart"].endswith("no")
    folder = cache_dir / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "r50_pascalpart.safetensors").write_bytes(b"")
    assert main(["models"]) == 0 and not zoo.is_cached("r50_pascalpart")  # no sidecar yet
    (folder / "r50_pascalpart.json").write_text("{}")
    assert main(["models"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["r50_pascalpart"].endswith("yes") and rows["r50_voc"].endswith("no")


def test_a_download_that_is_not_a_checkpoint_is_removed(file_server, monkeypatch, cache_dir):
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1000)}}, buffer)
    bodies = {
        "r50_coco": b"<html>captive portal</html>",  # a page instead of the file
        "r50_voc": buffer.getvalue()[:2000],  # a cut-off checkpoint the server calls complete
    }
    monkeypatch.setenv("VLPART_MIRROR", file_server.url)
    for name, body in bodies.items():
        file_server.files[f"/checkpoints/{name}.pth"] = body
        with pytest.raises(ValueError, match=rf"{name}\.pth: .*removed the download"):
            zoo.prepare(name, progress=False)
        assert list((cache_dir / "checkpoints").glob(f"{name}*")) == []
        assert not zoo.is_cached(name)


def _serve(file_server, name: str, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"model": state, "iteration": 1}, buffer)
    file_server.files[f"/checkpoints/{name}.pth"] = buffer.getvalue()


def _photo_segmenter_check(seg: PartSegmenter, shared_data) -> None:
    seg.model.transform.min_size, seg.model.transform.max_size = 128, 160  # CPU time
    vocab = load_builtin("pascal_part")
    photo = shared_data / "pascal_part_examples" / "2008_000652.jpg"
    pred = seg.predict(str(photo), vocabulary=vocab, score_threshold=0.0)
    assert len(pred.boxes) > 0
    assert pred.masks.shape[1:] == np.asarray(Image.open(photo)).shape[:2]
    assert set(pred.labels) <= set(vocab.names)


@pytest.mark.slow
def test_from_pretrained_name_downloads_converts_once_and_reloads(
    file_server, monkeypatch, cache_dir, official_state, shared_data, tmp_path
):
    monkeypatch.setenv("VLPART_MIRROR", file_server.url)
    _serve(file_server, "r50_pascalpart", official_state(dtype=torch.float16))
    npy = shared_data / "vlpart_metadata" / "pascal_part_clip_RN50_a+cname.npy"
    kwargs = dict(text_encoder="precomputed", embeddings=npy, vocabulary="pascal_part")
    seg = PartSegmenter.from_pretrained("r50_pascalpart", **kwargs)
    converted = cache_dir / "checkpoints" / "r50_pascalpart.safetensors"
    assert converted.is_file() and (cache_dir / "checkpoints" / "r50_pascalpart.json").is_file()
    assert not (cache_dir / "checkpoints" / "r50_pascalpart.pth").exists()  # replaced
    assert seg.info.text_encoder == "clip:RN50:openai" and seg.info.config.backbone == "resnet50"
    expected = official_state(dtype=torch.float16)["backbone.fpn_lateral3.weight"].float()
    assert torch.equal(seg.model.backbone.fpn.inner_blocks[1][0].weight, expected)
    _photo_segmenter_check(seg, shared_data)
    # Later uses load the converted file: the server is not asked again.
    requests = len(file_server.requests)
    file_server.files.clear()
    again = PartSegmenter.from_pretrained("r50_pascalpart", **kwargs)
    assert len(file_server.requests) == requests
    assert torch.equal(
        again.model.roi_heads.box_head.fc6.weight, seg.model.roi_heads.box_head.fc6.weight
    )
    assert main(["models"]) == 0
    # The CLI by name, with the model's own evaluation vocabulary as the default.
    out = tmp_path / "out"
    photo = shared_data / "pascal_part_examples" / "2008_000652.jpg"
    args = ["predict", str(photo), "--model", "r50_pascalpart", "--out", str(out)]
    args += ["--encoder", "precomputed", "--embeddings", str(npy), "--score-thresh", "0.0"]
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())
    # A file whose architecture is not the named model's is refused, not converted.
    _serve(file_server, "swinbase_cascade_voc", official_state(dtype=torch.float16))
    with pytest.raises(ValueError, match="holds a resnet50 .* is a Swin-B Cascade"):
        zoo.prepare("swinbase_cascade_voc", progress=False)


@pytest.mark.slow
def test_swin_cascade_by_name(file_server, monkeypatch, cache_dir, official_state, shared_data):
    monkeypatch.setenv("VLPART_MIRROR", file_server.url)
    state = official_state(backbone="swin_b", cascade=True, dtype=torch.float16)
    _serve(file_server, "swinbase_cascade_pascalpart", state)
    npy = shared_data / "vlpart_metadata" / "pascal_part_clip_RN50_a+cname.npy"
    seg = PartSegmenter.from_pretrained(
        "swinbase_cascade_pascalpart",
        text_encoder="precomputed",
        embeddings=npy,
        vocabulary="pascal_part",
    )
    assert seg.info.config.backbone == "swin_b" and seg.info.config.cascade
    assert zoo.is_cached("swinbase_cascade_pascalpart")
    _photo_segmenter_check(seg, shared_data)
