"""PartSegmenter's optimised inference gives the unoptimised model's detections."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vlpart.core.config import ModelConfig
from vlpart.inference.segmenter import MASK_THRESH, PartSegmenter
from vlpart.model import build_model
from vlpart.model.optimize import inference_copy
from vlpart.text.base import TextEncoder

PHOTO = "pascal_part_examples/2008_000700.jpg"
NUM_CLASSES = 6
MASK_MARGIN = 0.05


class _FixedEncoder(TextEncoder):
    identity = "test:fixed"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def _encode(self, prompts: Sequence[str]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(len(prompts))
        return torch.randn(len(prompts), self.dim, generator=gen)


TINY = dict(fpn_channels=32, min_size=160, max_size=224, text_dim=32)


def _seeded_model(**overrides) -> nn.Module:
    """Random init with spread mask logits (the paper's std-0.001 predictor init gives
    probabilities of ~0.5 everywhere, where any rounding flips a pixel)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone_weights=None, **overrides)).eval()
    nn.init.normal_(model.roi_heads.mask_predictor.mask_fcn_logits.weight, std=1.0)
    return model


def _photo(shared_data) -> torch.Tensor:
    array = np.asarray(Image.open(shared_data / PHOTO).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _assert_same_detections(model, segmenter, image, embeddings, *, min_dets):
    """The segmenter's optimised path against the model's own (unoptimised) forward."""
    with torch.inference_mode():
        ref = model([image], text_embeddings=embeddings)[0]
    out = segmenter.predict_tensors([image], embeddings)[0]
    assert len(ref["boxes"]) >= min_dets
    torch.testing.assert_close(out["boxes"], ref["boxes"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out["scores"], ref["scores"], rtol=1e-4, atol=1e-5)
    assert torch.equal(out["labels"], ref["labels"])
    # Thresholded masks agree wherever the probability is clearly decided. (Random-init R50
    # activations reach ~1e3, so float noise moves probabilities near 0.5 by up to ~1e-2.)
    probs = ref["masks"][:, 0]
    assert out["masks"].dtype == torch.bool and out["masks"].shape == probs.shape
    decided = (probs - MASK_THRESH).abs() > MASK_MARGIN
    assert decided.float().mean() > 0.95
    assert torch.equal(out["masks"][decided], (probs >= MASK_THRESH)[decided])
    return out


@pytest.mark.parametrize("backbone", ["resnet50", "efficientnet_lite0"])
def test_fast_path_matches_the_model_tiny(shared_data, backbone):
    model = _seeded_model(backbone=backbone, **TINY)
    seg = PartSegmenter(model, _FixedEncoder(32))
    embeddings = seg.text_encoder.encode([f"c{i}" for i in range(NUM_CLASSES)])
    out = _assert_same_detections(model, seg, _photo(shared_data), embeddings, min_dets=20)
    if backbone == "resnet50":  # a random-init EfficientNet gives spatially flat masks
        assert out["masks"].any() and not out["masks"].all()


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet50", "efficientnet_lite0"])
def test_fast_path_matches_the_model_official_numerics(shared_data, backbone):
    # The released R50 detector's settings (800 px, FPN 256, 1000 proposals, 100 detections).
    model = _seeded_model(backbone=backbone)
    seg = PartSegmenter(model, _FixedEncoder(1024))
    embeddings = seg.text_encoder.encode([f"c{i}" for i in range(NUM_CLASSES)])
    _assert_same_detections(model, seg, _photo(shared_data), embeddings, min_dets=100)


def test_inference_copy_follows_weight_updates():
    model = _seeded_model(**TINY)
    seg = PartSegmenter(model, _FixedEncoder(32))
    first = seg.backend.inference_model()
    assert seg.backend.inference_model() is first
    with torch.no_grad():
        model.backbone.body.conv1.weight.mul_(2.0)  # what an optimizer step does
    assert seg.backend.inference_model() is not first
    assert isinstance(inference_copy(model), type(model))


def test_score_threshold_pastes_only_kept_detections(shared_data):
    model = _seeded_model(**TINY, detections_per_image=30)
    seg = PartSegmenter(model, _FixedEncoder(32))
    embeddings = seg.text_encoder.encode(["a", "b", "c"])
    image = _photo(shared_data)
    mask_batches = []
    seg.backend.inference_model().roi_heads.mask_head.register_forward_hook(
        lambda module, args, out: mask_batches.append(len(args[0]))
    )
    everything = seg.predict_tensors([image], embeddings)[0]
    thresh = float(everything["scores"].median())
    kept = seg.predict_tensors([image], embeddings, score_threshold=thresh)[0]
    expected = everything["scores"] >= thresh
    assert 0 < len(kept["scores"]) < len(everything["scores"])
    # Masks are computed only for the kept detections (once per distinct box), and are the same.
    distinct = [len(torch.unique(out["boxes"], dim=0)) for out in (everything, kept)]
    assert mask_batches == distinct and distinct[1] < distinct[0]
    torch.testing.assert_close(kept["boxes"], everything["boxes"][expected])
    assert torch.equal(kept["scores"], everything["scores"][expected])
    # The mask head runs on a smaller batch, which may pick another conv kernel (thread count,
    # CPU): a logit at the 0.5 boundary can round the other way. Allow such single pixels.
    flipped = (kept["masks"] != everything["masks"][expected]).flatten(1).sum(1)
    union = (kept["masks"] | everything["masks"][expected]).flatten(1).sum(1)
    assert (union > 0).all() and (flipped <= 1e-3 * union).all()
    assert (kept["scores"].diff() <= 0).all()


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        PartSegmenter(_seeded_model(**TINY), _FixedEncoder(32), precision="fp16")


@pytest.mark.cuda
def test_cuda_gives_the_cpu_detections(shared_data):
    model = _seeded_model(**TINY)
    image = _photo(shared_data)
    cpu = PartSegmenter(model, _FixedEncoder(32))
    embeddings = cpu.text_encoder.encode([f"c{i}" for i in range(NUM_CLASSES)])
    ref = cpu.predict_tensors([image], embeddings)[0]
    gpu = PartSegmenter(copy.deepcopy(model), _FixedEncoder(32), device="cuda")
    out = {k: v.cpu() for k, v in gpu.predict_tensors([image], embeddings)[0].items()}
    assert len(ref["scores"]) > 0
    torch.testing.assert_close(out["boxes"], ref["boxes"], rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(out["scores"], ref["scores"], rtol=1e-4, atol=1e-4)
    assert torch.equal(out["labels"], ref["labels"])
    assert (out["masks"] != ref["masks"]).float().mean() < 1e-3


def test_embedding_cache_keeps_the_most_recent_vocabularies(monkeypatch):
    import vlpart.inference.segmenter as predictor
    from vlpart.core.vocab import parse_vocabulary

    monkeypatch.setattr(predictor, "EMBEDDING_CACHE_SIZE", 2)
    seg = PartSegmenter(_seeded_model(**TINY), _FixedEncoder(32))
    encoded = []
    original = seg.text_encoder.encode
    monkeypatch.setattr(seg.text_encoder, "encode", lambda p: encoded.append(p) or original(p))
    dog, cat, bus = (parse_vocabulary(v) for v in ("dog", "cat", "bus"))
    first = seg.text_embeddings(dog)
    seg.text_embeddings(cat)
    assert seg.text_embeddings(dog) is first  # cached, and now the most recent
    seg.text_embeddings(bus)  # evicts cat, the least recently used
    assert len(seg._embeddings) == 2 and len(encoded) == 3
    seg.text_embeddings(dog)
    assert len(encoded) == 3
    seg.text_embeddings(cat)
    assert encoded[-1] == ["a cat"] and len(encoded) == 4


def test_predict_defaults_to_the_recorded_vocabulary_and_says_when_there_is_none(
    tiny_checkpoint, tmp_path, capsys
):
    from vlpart.apps.cli import main
    from vlpart.core.errors import InputError
    from vlpart.model import load_checkpoint, save_checkpoint

    seg = PartSegmenter.from_pretrained(tiny_checkpoint)
    with pytest.raises(InputError, match="record no training vocabulary"):
        seg.recorded_vocabulary()
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="record no training vocabulary"):
        seg.predict(image)
    model, info = load_checkpoint(tiny_checkpoint)
    records = [
        {"name": "dog:head", "object": "dog", "part": "head"},
        {"name": "dog", "object": "dog", "part": None},
    ]
    path = save_checkpoint(
        model, tmp_path / "m.safetensors", config=info.config, vocabulary=records,
        text_encoder=info.text_encoder,
    )  # fmt: skip
    seg = PartSegmenter.from_pretrained(path)
    assert seg.recorded_vocabulary().names == ["dog:head", "dog"]
    assert (
        seg.predict(image, score_threshold=0.0).labels
        == seg.predict(image, vocabulary="dog:head;dog", score_threshold=0.0).labels
    )
    picture = tmp_path / "x.png"
    Image.fromarray(image).save(picture)
    assert main(["predict", str(picture), "--weights", str(tiny_checkpoint), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "record no training vocabulary" in capsys.readouterr().err
