"""ONNX export: the exported graph run by onnxruntime gives PyTorch's detections."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlpart.apps.cli import main
from vlpart.core.vocab import parse_vocabulary
from vlpart.export.onnx import export_onnx
from vlpart.inference.onnx_backend import OnnxBackend
from vlpart.inference.prediction import Prediction
from vlpart.inference.segmenter import PartSegmenter
from vlpart.model import build_model, save_checkpoint
from vlpart.text.precomputed import PrecomputedTextEncoder

VOCAB_A = "dog:head,torso,leg;dog;cat"
VOCAB_B = "bird:wing,beak;car"
# Original image sizes (H, W): square, landscape, portrait, long and thin.
SIZES = ((96, 96), (120, 180), (150, 90), (60, 200))


def _encoder(dim: int, *specs: str) -> PrecomputedTextEncoder:
    """Random ``dim``-d rows for the prompts of ``specs`` (seeded)."""
    prompts = [p for spec in specs for p in parse_vocabulary(spec).prompts()]
    gen = torch.Generator().manual_seed(1)
    return PrecomputedTextEncoder(torch.randn(len(prompts), dim, generator=gen), prompts)


def _images(world) -> list[np.ndarray]:
    """Synthetic-world photos resized to each of :data:`SIZES`."""
    photos = sorted((world / "images").glob("*.png"))
    return [
        np.array(Image.open(photos[i]).convert("RGB").resize((w, h), Image.BILINEAR))
        for i, (h, w) in enumerate(SIZES)
    ]


def assert_same_detections(ref: Prediction, out: Prediction) -> None:
    """Same instances: equal labels, boxes within 0.01 px, scores within 1e-4, mask IoU >= 0.99
    (instances are matched, since near-equal scores may come out in either order)."""
    assert len(out) == len(ref)
    assert out.image_size == ref.image_size
    free = set(range(len(out)))
    for i in range(len(ref)):
        matches = [
            j
            for j in free
            if out.labels[j] == ref.labels[i]
            and np.abs(out.boxes[j] - ref.boxes[i]).max() <= 0.01
            and abs(float(out.scores[j] - ref.scores[i])) <= 1e-4
        ]
        assert matches, f"no exported match for {ref.labels[i]} {ref.boxes[i]} {ref.scores[i]}"
        j = matches[0]
        free.remove(j)
        inter = np.logical_and(ref.masks[i], out.masks[j]).sum()
        union = np.logical_or(ref.masks[i], out.masks[j]).sum()
        assert union == 0 or inter / union >= 0.99


def _check_parity(torch_seg, onnx_seg, images, vocabulary) -> int:
    found = 0
    for image in images:
        ref = torch_seg.predict(image, vocabulary=vocabulary, score_threshold=0.0)
        out = onnx_seg.predict(image, vocabulary=vocabulary, score_threshold=0.0)
        assert_same_detections(ref, out)
        found += len(ref)
    return found


@pytest.fixture(scope="module")
def r50_dynamic(tmp_path_factory, tiny_config):
    """A ResNet-50 detector exported with --dynamic-vocab, and the PyTorch segmenter."""
    torch.manual_seed(0)
    cfg = tiny_config(score_thresh=0.05)
    model = build_model(cfg)
    encoder = _encoder(cfg.text_dim, VOCAB_A, VOCAB_B)
    seg = PartSegmenter(model, encoder)
    path = tmp_path_factory.mktemp("onnx") / "r50.onnx"
    export_onnx(seg, parse_vocabulary(VOCAB_A), path, dynamic_vocab=True)
    return seg, PartSegmenter.from_onnx(path, text_encoder=encoder)


@pytest.mark.slow
def test_dynamic_vocabulary_matches_pytorch(r50_dynamic, synthetic_world):
    torch_seg, onnx_seg = r50_dynamic
    assert onnx_seg.backend.baked_embeddings is None
    images = _images(synthetic_world)
    for spec in (VOCAB_A, VOCAB_B):
        assert _check_parity(torch_seg, onnx_seg, images, spec) > 0


@pytest.mark.slow
def test_no_detections(r50_dynamic, synthetic_world):
    """A vocabulary row pointing away from every region's classifier feature scores ~0
    everywhere: the graph returns zero instances, with masks of the image's size."""
    torch_seg, onnx_seg = r50_dynamic
    image = torch.from_numpy(_images(synthetic_world)[1]).permute(2, 0, 1).contiguous()
    model = torch_seg.model
    with torch.no_grad():
        batch, _ = model.transform([image])
        features = model.backbone(batch.tensors)
        proposals, _, _ = model.rpn(batch, features, None, compute_losses=False)
        heads = model.roi_heads
        pooled = heads.box_roi_pool(list(features.values())[:4], proposals)
        directions = F.normalize(heads.box_predictor.cls_score.linear(heads.box_head(pooled)))
    away = -directions.mean(0, keepdim=True)
    for seg in (torch_seg, onnx_seg):
        [out] = seg.predict_tensors([image], away)
        assert out["boxes"].shape == (0, 4)
        assert out["masks"].shape == (0, *image.shape[1:])


@pytest.mark.slow
def test_cascade_exports_and_matches(tmp_path, tiny_config, synthetic_world):
    torch.manual_seed(0)
    cfg = tiny_config(cascade=True)
    seg = PartSegmenter(build_model(cfg), _encoder(cfg.text_dim, VOCAB_A))
    path = export_onnx(seg, parse_vocabulary(VOCAB_A), tmp_path / "cascade.onnx")
    onnx_seg = PartSegmenter.from_onnx(path)
    assert _check_parity(seg, onnx_seg, _images(synthetic_world), VOCAB_A) > 0


@pytest.fixture(scope="module")
def effnet_cli_export(tmp_path_factory, tiny_config):
    """An EfficientNet-Lite0 checkpoint (the packaged ImageNet trunk, so that scores differ
    between regions) exported by ``vlpart export`` with the vocabulary baked in."""
    root = tmp_path_factory.mktemp("effnet")
    cfg = tiny_config(backbone="efficientnet_lite0", backbone_weights="imagenet")
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        build_model(cfg), root / "model.safetensors", config=cfg, text_encoder="precomputed"
    )
    emb = root / "emb.npy"
    np.save(
        emb, _encoder(cfg.text_dim, VOCAB_A).encode(parse_vocabulary(VOCAB_A).prompts()).numpy()
    )
    text = ["--encoder", "precomputed", "--embeddings", str(emb)]
    out = root / "model.onnx"
    assert main(["export", "--weights", str(ckpt), "--vocab", VOCAB_A, *text, str(out)]) == 0
    torch_seg = PartSegmenter.from_pretrained(
        ckpt, text_encoder="precomputed", embeddings=emb, vocabulary=VOCAB_A
    )
    return torch_seg, out


@pytest.mark.slow
def test_baked_vocabulary_matches_pytorch(effnet_cli_export, synthetic_world):
    torch_seg, path = effnet_cli_export
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["vlpart"])
    assert meta["vocabulary"] == parse_vocabulary(VOCAB_A).names
    onnx_seg = PartSegmenter.from_pretrained(path)  # .onnx goes to from_onnx
    assert isinstance(onnx_seg.backend, OnnxBackend)
    assert [i.name for i in onnx_seg.backend.session.get_inputs()] == ["image"]
    assert _check_parity(torch_seg, onnx_seg, _images(synthetic_world), VOCAB_A) > 0


@pytest.mark.slow
def test_baked_vocabulary_refuses_another(effnet_cli_export, synthetic_world):
    onnx_seg = PartSegmenter.from_onnx(effnet_cli_export[1])
    image = _images(synthetic_world)[0]
    with pytest.raises(ValueError, match="--dynamic-vocab"):
        onnx_seg.predict(image, vocabulary="dog:torso,head")  # same prompts, other order
    with pytest.raises(KeyError, match="a bird"):
        onnx_seg.predict(image, vocabulary="bird")


@pytest.mark.slow
def test_predict_cli_runs_an_onnx_file(effnet_cli_export, synthetic_world, tmp_path):
    image = synthetic_world / "images" / "000001.png"
    out = tmp_path / "out"
    args = ["predict", str(image), "--weights", str(effnet_cli_export[1]), "--vocab", VOCAB_A]
    assert main([*args, "--out", str(out), "--score-thresh", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    ref = effnet_cli_export[0].predict(image, vocabulary=VOCAB_A, score_threshold=0.0)
    assert sorted(r["label"] for r in results) == sorted(ref.labels)


def test_from_onnx_rejects_foreign_files(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        PartSegmenter.from_onnx(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(ValueError, match="garbage.onnx: not a readable ONNX file"):
        PartSegmenter.from_onnx(garbage)
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [value("x", onnx.TensorProto.FLOAT, [1])], [value("y", 1, [1])]
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ValueError, match="foreign.onnx: not a vlpart export"):
        PartSegmenter.from_onnx(foreign)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["predict", str(image), "--weights", str(foreign), "--vocab", "dog"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vlpart: error: ") and "not a vlpart export" in err[-1]


def test_export_cli_needs_an_onnx_path(tiny_checkpoint, capsys):
    rc = main(["export", "--weights", str(tiny_checkpoint), "--vocab", "dog", "model.bin"])
    assert rc != 0
    assert capsys.readouterr().err.strip() == (
        "vlpart: error: model.bin: the output must be a .onnx file"
    )


def test_swin_is_refused_in_one_line(tmp_path, tiny_config):
    cfg = tiny_config(backbone="swin_b")
    seg = PartSegmenter(build_model(cfg), _encoder(cfg.text_dim, "dog"))
    with pytest.raises(ValueError) as err:
        export_onnx(seg, parse_vocabulary("dog"), tmp_path / "swin.onnx")
    assert str(err.value).startswith("swin_b models cannot be exported")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_onnx_predict_applies_the_score_threshold(effnet_cli_export, synthetic_world):
    torch_seg, onnx_path = effnet_cli_export
    onnx_seg = PartSegmenter.from_onnx(onnx_path)
    image = synthetic_world / "images" / "000001.png"
    everything = onnx_seg.predict(image, vocabulary=VOCAB_A, score_threshold=0.0)
    thresh = float(np.median(everything.scores))
    kept = onnx_seg.predict(image, vocabulary=VOCAB_A, score_threshold=thresh)
    assert 0 < len(kept) < len(everything) and (kept.scores >= thresh).all()
    assert_same_detections(
        torch_seg.predict(image, vocabulary=VOCAB_A, score_threshold=thresh), kept
    )
