"""Checkpoints, backbone weight resolution and the official-checkpoint converter."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.models import resnet50

from vlpart.apps.cli import main
from vlpart.model import build_backbone, load_checkpoint, resolve_weights, save_checkpoint
from vlpart.model.checkpoint import load_state_dict_strict
from vlpart.model.convert import (
    DROPPED_KEYS,
    config_from_official,
    convert_official_state_dict,
    official_model,
)


def test_safetensors_round_trip_is_exact(tiny_models, tiny_config, tmp_path):
    model = tiny_models()
    path = save_checkpoint(
        model,
        tmp_path / "m.safetensors",
        config=tiny_config(),
        vocabulary=[{"id": 1, "name": "dog:head"}],
        text_encoder="minilm:x",
    )
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["format_version"] == 1 and side["text_encoder"] == "minilm:x"
    assert side["text_dim"] == 32 and side["config"]["fpn_channels"] == 32
    loaded, info = load_checkpoint(path)
    assert info.config == tiny_config() and info.vocabulary == [{"id": 1, "name": "dog:head"}]
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert not list(tmp_path.glob("*.tmp"))


def test_strict_loading_lists_missing_and_unexpected_keys(tiny_models):
    model = tiny_models()
    state = dict(model.state_dict())
    state.pop("rpn.head.cls_logits.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError,
        match=r"1 missing keys \(rpn.head.cls_logits.weight\); "
        r"1 unexpected keys \(extra.weight\)",
    ):
        load_state_dict_strict(model, state)


def test_missing_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.safetensors: checkpoint not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    (tmp_path / "alone.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="alone.json: checkpoint sidecar"):
        load_checkpoint(tmp_path / "alone.safetensors")


def test_resolve_weights_order_and_errors(tmp_path, monkeypatch):
    assert resolve_weights("resnet50", None) is None
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*offline"):
        resolve_weights("resnet50", tmp_path / "nope.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(
        FileNotFoundError,
        match=r"swin_b ImageNet weights: not in the cache and vlpart is offline .*download "
        r"https://download\.pytorch\.org/models/swin_b-68c6b09e\.pth and put it at "
        r".*backbones/swin_b-68c6b09e\.pth; to work offline",
    ):
        resolve_weights("swin_b")  # the suite runs offline
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"")
    assert resolve_weights("resnet50").source == "cache"
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"")
    assert resolve_weights("resnet50", explicit).source == "file"
    with pytest.raises(ValueError, match="unknown backbone"):
        resolve_weights("vgg16")


def test_efficientnet_weights_ship_in_a_package():
    resolved = resolve_weights("efficientnet_lite0")
    assert resolved.source == "package" and resolved.path.is_file()
    state = torch.load(resolved.path, map_location="cpu", weights_only=True)
    backbone = build_backbone("efficientnet_lite0", out_channels=16)
    torch.testing.assert_close(backbone.body.conv_stem.weight, state["_conv_stem.weight"])
    torch.testing.assert_close(
        backbone.body.blocks[15]._bn2.running_var, state["_blocks.15._bn2.running_var"]
    )
    feats = backbone(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
        (1, 1),
    ]


def test_resnet_weights_from_a_local_file(tmp_path):
    net = resnet50()
    path = tmp_path / "r50.pth"
    torch.save(net.state_dict(), path)
    backbone = build_backbone("resnet50", weights=path, out_channels=16)
    torch.testing.assert_close(backbone.body.layer3[0].conv1.weight, net.layer3[0].conv1.weight)
    torch.testing.assert_close(backbone.body.bn1.running_mean, net.bn1.running_mean)


# ---------------------------------------------------------------- official checkpoints
@pytest.mark.parametrize("cascade", [False, True])
def test_converter_maps_every_key_and_runs(cascade, official_state):
    import re

    state = official_state(cascade=cascade)
    converted = convert_official_state_dict(state)
    dropped = [k for k in state if any(re.search(p, k) for p, _ in DROPPED_KEYS)]
    assert len(converted) + len(dropped) == len(state)  # zero unmapped keys
    assert {k.rsplit(".", 1)[-1] for k in dropped} == {
        "num_batches_tracked",
        "zs_weight",
        "pixel_mean",
        "pixel_std",
    }
    config = config_from_official(state)
    assert (config.backbone, config.cascade, config.text_dim) == ("resnet50", cascade, 1024)
    model = official_model(state, config)  # strict load
    stage = "0." if cascade else ""
    assert torch.equal(
        model.backbone.fpn.inner_blocks[0][0].weight, state["backbone.fpn_lateral2.weight"]
    )
    assert torch.equal(
        model.state_dict()[f"roi_heads.box_head.{stage}fc6.weight"],
        state[f"roi_heads.box_head.{stage}fc1.weight"],
    )
    assert torch.equal(
        model.roi_heads.mask_predictor.conv5_mask.weight, state["roi_heads.mask_head.deconv.weight"]
    )
    model.roi_heads.detections_per_img = 5
    model.transform.min_size, model.transform.max_size = 64, 96
    model.set_vocabulary(torch.randn(3, 1024))
    with torch.inference_mode():
        out = model([torch.rand(3, 64, 80)])
    assert out[0]["masks"].shape[1:] == (1, 64, 80) and out[0]["boxes"].shape[1] == 4


def test_converter_rejects_unknown_keys(official_state):
    state = official_state(cascade=False)
    state["roi_heads.box_predictor.freq_weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"1 checkpoint keys .*freq_weight"):
        convert_official_state_dict(state)


def test_swin_trunk_keys_convert_strictly(official_state):
    from vlpart.model.backbones import build_backbone

    state = official_state(backbone="swin_b", cascade=True, trunk_only=True)
    converted = convert_official_state_dict(state)
    assert len(converted) == len(state)
    trunk = build_backbone("swin_b", weights=None).body
    load_state_dict_strict(
        trunk, {k.removeprefix("backbone.body."): v for k, v in converted.items()}
    )


def test_cli_convert(tmp_path, capsys, official_state):
    src = tmp_path / "vlpart_r50.pth"
    torch.save({"model": official_state(cascade=False), "iteration": 5}, src)
    out = tmp_path / "r50.safetensors"
    assert main(["convert", str(src), str(out)]) == 0
    assert out.is_file() and (tmp_path / "r50.json").is_file()
    model, info = load_checkpoint(out)
    assert info.text_encoder == "clip:RN50:openai" and info.config.backbone == "resnet50"
    assert info.vocabulary is None
    assert main(["convert", str(tmp_path / "none.pth"), str(out)]) == 2
    assert "none.pth: PyTorch checkpoint (.pth) not found" in capsys.readouterr().err


def test_backbone_weights_are_checked_against_the_hash_in_their_name(tmp_path, monkeypatch):
    from vlpart.core.weights import DownloadError

    mirror = tmp_path / "mirror" / "backbones"
    mirror.mkdir(parents=True)
    (mirror / "resnet50-0676ba61.pth").write_bytes(b"not the torchvision file")
    monkeypatch.setenv("VLPART_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(DownloadError, match="SHA-256 .* does not match the expected 0676ba61"):
        resolve_weights("resnet50")


def test_efficientnet_trunk_trains_in_float32_under_cpu_autocast():
    # bfloat16 depthwise-convolution gradients are slow on CPUs: training under autocast runs
    # the trunk in float32: the same maps as without autocast.
    trunk = build_backbone("efficientnet_lite0", weights=None, out_channels=16).body
    x = torch.rand(1, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = trunk(x)
    assert all(f.dtype == torch.float32 for f in trained.values())
    torch.testing.assert_close(dict(trained), dict(trunk(x)))
