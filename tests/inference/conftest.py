"""Fixtures of the inference tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def label_weights(tmp_path_factory, tiny_model_settings):
    """The tiny detector (random init, 10 detections) with a mask predictor that draws
    non-empty masks of varied shapes (a default init gives probabilities of 0.5: empty masks)."""
    from vlpart.core.config import config_from_dict
    from vlpart.model import build_model, save_checkpoint

    cfg = config_from_dict({"model": {**tiny_model_settings, "detections_per_image": 10}}).model
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.normal_(0, 0.05)
        model.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(0.5)
    path = tmp_path_factory.mktemp("label_ckpt") / "model.safetensors"
    return save_checkpoint(model, path, config=cfg, text_encoder="minilm:all-MiniLM-L6-v2")
