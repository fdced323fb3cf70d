"""precision="int8": the onnxruntime-quantized graph runs, is quantized, and agrees with fp32."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from vlpart.apps.cli import main
from vlpart.core.errors import InputError
from vlpart.core.vocab import parse_vocabulary
from vlpart.inference.backends import PRECISIONS, TorchBackend
from vlpart.inference.segmenter import PartSegmenter
from vlpart.text.precomputed import PrecomputedTextEncoder

VOCAB = "dog:head,torso,leg;cat"


@pytest.fixture(scope="module")
def pair(tiny_models, synthetic_world):
    """fp32 and int8 segmenters of the tiny model (int8 calibrated on 8 world photos), and 6
    other photos."""
    model = tiny_models("resnet50")
    prompts = parse_vocabulary(VOCAB).prompts()
    gen = torch.Generator().manual_seed(1)
    encoder = PrecomputedTextEncoder(
        torch.randn(len(prompts), model.text_dim, generator=gen), prompts
    )
    photos = sorted((synthetic_world / "images").glob("*.png"))
    fp32 = PartSegmenter(model, encoder)
    int8 = PartSegmenter(model, encoder, precision="int8", calibration=photos[:8])
    return fp32, int8, photos[8:14]


def _best_iou(ref, out) -> torch.Tensor:
    """For each detection of ``ref``, the best box IoU of a detection of ``out`` with its label."""
    if not len(ref) or not len(out):
        return torch.zeros(len(ref))
    iou = box_iou(torch.as_tensor(ref.boxes), torch.as_tensor(out.boxes))
    same = torch.from_numpy(ref.label_ids[:, None] == out.label_ids[None, :])
    return (iou * same).amax(dim=1)


def test_int8_detections_agree_with_fp32(pair):
    """Measured on this CPU (random-init tiny model, whose near-tied candidates reorder under
    any perturbation): 55 of the 60 fp32 detections have a same-label int8 box at IoU >= 0.5,
    mean best IoU 0.90, each image's top score within 0.004 (51, 0.82 and 0.006 before the
    activations were folded into their layers' ranges). The bars are well below."""
    fp32, int8, photos = pair
    vocab = parse_vocabulary(VOCAB)
    refs = fp32.predict(photos, vocabulary=vocab, score_threshold=0.0)
    outs = int8.predict(photos, vocabulary=vocab, score_threshold=0.0)
    best = torch.cat([_best_iou(r, o) for r, o in zip(refs, outs, strict=True)])
    assert len(best) == sum(len(r) for r in refs) > 0
    assert float((best >= 0.5).float().mean()) >= 0.6
    assert float(best.mean()) >= 0.6
    for ref, out in zip(refs, outs, strict=True):
        assert out.image_size == ref.image_size
        assert out.masks.shape[1:] == ref.masks.shape[1:]
        assert abs(float(out.scores.max() - ref.scores.max())) <= 0.03


def test_int8_graph_has_int8_convolutions(pair):
    """Every convolution of the graph takes int8 weights (the file is not a float copy)."""
    import onnx

    fp32, int8, photos = pair
    int8.predict(photos[:1], vocabulary=parse_vocabulary(VOCAB))
    proto = int8.backend.quantized([], torch.zeros(0)).export.proto
    int8_weights = {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    producers = {out: node for node in proto.graph.node for out in node.output}
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert len(convs) > 20
    for conv in convs:
        weight = producers[conv.input[1]]
        assert weight.op_type == "DequantizeLinear" and weight.input[0] in int8_weights


def test_int8_activations_are_folded_into_their_layer(pair):
    """No ReLU/ReLU6 runs on a quantized layer's dequantized output: onnxruntime folded each
    into that output's quantization range (docs/int8.md: 3.9 AP50 points lost without it)."""
    fp32, int8, photos = pair
    int8.predict(photos[:1], vocabulary=parse_vocabulary(VOCAB))
    proto = int8.backend.quantized([], torch.zeros(0)).export.proto
    producers = {out: node for node in proto.graph.node for out in node.output}

    def source(name: str) -> str:
        """The op type behind ``name``, looking through a QuantizeLinear/DequantizeLinear pair."""
        node = producers.get(name)
        while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            node = producers.get(node.input[0])
        return "" if node is None else node.op_type

    activations = [node for node in proto.graph.node if node.op_type in ("Relu", "Clip")]
    assert not [node.name for node in activations if source(node.input[0]) in ("Conv", "Gemm")]
    quantized_outputs = [
        node
        for node in proto.graph.node
        if node.op_type == "QuantizeLinear" and source(node.input[0]) in ("Conv", "Gemm")
    ]
    assert len(quantized_outputs) > 20


def test_int8_is_a_precision_of_the_segmenter_only(tiny_models):
    model = tiny_models("resnet50")
    encoder = PrecomputedTextEncoder(torch.randn(1, model.text_dim), ["a dog"])
    assert "int8" in PRECISIONS
    with pytest.raises(InputError, match="int8"):
        TorchBackend(model, precision="int8")
    with pytest.raises(InputError, match="at least one image"):
        PartSegmenter(model, encoder, precision="int8", calibration=[])
    with pytest.raises(InputError, match="CPU"):
        PartSegmenter(model, encoder, precision="int8", device="cuda")


def test_cli_calibration_needs_int8(tiny_checkpoint, synthetic_world, tmp_path, capsys):
    photo = next((synthetic_world / "images").glob("*.png"))
    argv = ["predict", str(photo), "--weights", str(tiny_checkpoint), "--vocab", "dog"]
    assert main([*argv, "--calibration", str(photo), "--out", str(tmp_path / "out")]) == 2
    assert "--calibration is for --precision int8" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_int8_export_then_predict(tiny_config, synthetic_world, tmp_path):
    """``vlpart export --precision int8`` writes an int8 dynamic-vocabulary file that
    ``vlpart predict`` runs with its recorded text encoder."""
    import json

    import numpy as np
    import onnx

    from vlpart.model import build_model, save_checkpoint

    cfg = tiny_config()
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        build_model(cfg), tmp_path / "model.safetensors", config=cfg, text_encoder="precomputed"
    )
    prompts = parse_vocabulary(VOCAB).prompts()
    emb = tmp_path / "emb.npy"
    np.save(emb, torch.randn(len(prompts), cfg.text_dim).numpy())
    text = ["--encoder", "precomputed", "--embeddings", str(emb)]
    photos = sorted((synthetic_world / "images").glob("*.png"))
    out = tmp_path / "model.int8.onnx"
    args = ["export", "--weights", str(ckpt), "--vocab", VOCAB, *text, "--precision", "int8"]
    assert main([*args, str(out), "--calibration", *map(str, photos[:4])]) == 0
    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["vlpart"])
    assert meta["precision"] == "int8" and meta["vocabulary"] is None
    assert any(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer)
    pred = tmp_path / "pred"
    argv = ["predict", str(photos[5]), "--weights", str(out), "--vocab", VOCAB, *text]
    assert main([*argv, "--out", str(pred), "--score-thresh", "0"]) == 0
    results = json.loads((pred / "results.json").read_text())
    assert len(results) == cfg.detections_per_image
