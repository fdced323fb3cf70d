"""Convert the released VLPart detectron2 checkpoints (R50 Mask R-CNN, Swin-B Cascade) to
vlpart checkpoints.

Every source key is either renamed by :data:`RENAME_RULES` or listed in :data:`DROPPED_KEYS`
with the reason; any other key is an error, and the renamed weights must load strictly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from vlpart.core.config import ModelConfig
from vlpart.core.errors import InputError
from vlpart.core.weights import load_torch_file
from vlpart.model.checkpoint import (
    CheckpointInfo,
    check_finite,
    load_state_dict_strict,
    save_checkpoint,
)
from vlpart.model.detector import VLPartDetector, build_model

__all__ = [
    "CONVERSION_TABLE_VERSION",
    "DROPPED_KEYS",
    "RENAME_RULES",
    "config_from_official",
    "convert_official_checkpoint",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "load_official_state_dict",
    "official_checkpoint",
    "official_model",
]

logger = logging.getLogger(__name__)

# Bump when a rule changes; recorded nowhere else, so a reviewer sees every change here.
CONVERSION_TABLE_VERSION = 1
# Text encoder of the released models (CLIP RN50 prompt embeddings, 1024-d).
OFFICIAL_TEXT_ENCODER = "clip:RN50:openai"


@dataclass(frozen=True)
class RenameRule:
    """``re.sub(pattern, replacement, key)`` for keys matching ``pattern``; ``transform``
    reshapes the value where layouts differ."""

    pattern: str
    replacement: str
    transform: Callable[[Tensor], Tensor] | None = None


def _flatten(t: Tensor) -> Tensor:
    return t.reshape(-1)


_BB = r"^backbone\.bottom_up\."
RENAME_RULES: tuple[RenameRule, ...] = (
    # ResNet-50 trunk: torchvision keys under backbone.bottom_up.base.
    RenameRule(_BB + r"base\.((?:conv1|bn1|layer[1-4])\..+)$", r"backbone.body.\1"),
    # Swin-B trunk (official Swin layout) onto torchvision's blocks.
    RenameRule(_BB + r"patch_embed\.proj\.", "backbone.body.patch_embed.0."),
    RenameRule(_BB + r"patch_embed\.norm\.", "backbone.body.patch_embed.2."),
    RenameRule(
        _BB + r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"backbone.body.stages.\1.\2.mlp.0."
    ),
    RenameRule(
        _BB + r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"backbone.body.stages.\1.\2.mlp.3."
    ),
    RenameRule(
        _BB + r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_index$",
        r"backbone.body.stages.\1.\2.attn.relative_position_index",
        _flatten,  # [49, 49] there, flattened [2401] in torchvision
    ),
    RenameRule(
        _BB + r"layers\.(\d+)\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|"
        r"attn\.relative_position_bias_table)\b",
        r"backbone.body.stages.\1.\2.\3",
    ),
    RenameRule(
        _BB + r"layers\.(\d+)\.downsample\.(reduction|norm)\.", r"backbone.body.downsamples.\1.\2."
    ),
    RenameRule(_BB + r"norm([0-3])\.", r"backbone.body.norms.\1."),
    # FPN: lateral (1x1) and output (3x3) convs of levels 2-5.
    *(
        RenameRule(rf"^backbone\.fpn_lateral{lvl}\.", f"backbone.fpn.inner_blocks.{lvl - 2}.0.")
        for lvl in range(2, 6)
    ),
    *(
        RenameRule(rf"^backbone\.fpn_output{lvl}\.", f"backbone.fpn.layer_blocks.{lvl - 2}.0.")
        for lvl in range(2, 6)
    ),
    # RPN head.
    RenameRule(r"^proposal_generator\.rpn_head\.conv\.", "rpn.head.conv.0.0."),
    RenameRule(r"^proposal_generator\.rpn_head\.objectness_logits\.", "rpn.head.cls_logits."),
    RenameRule(r"^proposal_generator\.rpn_head\.anchor_deltas\.", "rpn.head.bbox_pred."),
    # Box heads (single or cascade stage k) and text-classifier predictors.
    RenameRule(r"^roi_heads\.box_head\.((?:\d\.)?)fc1\.", r"roi_heads.box_head.\1fc6."),
    RenameRule(r"^roi_heads\.box_head\.((?:\d\.)?)fc2\.", r"roi_heads.box_head.\1fc7."),
    RenameRule(
        r"^roi_heads\.box_predictor\.((?:\d\.)?(?:cls_score\.linear|bbox_pred\.[02])\."
        r"(?:weight|bias))$",
        r"roi_heads.box_predictor.\1",
    ),
    # Class-agnostic mask head.
    *(
        RenameRule(rf"^roi_heads\.mask_head\.mask_fcn{i}\.", f"roi_heads.mask_head.{i - 1}.0.")
        for i in range(1, 5)
    ),
    RenameRule(r"^roi_heads\.mask_head\.deconv\.", "roi_heads.mask_predictor.conv5_mask."),
    RenameRule(r"^roi_heads\.mask_head\.predictor\.", "roi_heads.mask_predictor.mask_fcn_logits."),
)
"""Version :data:`CONVERSION_TABLE_VERSION` of the key renames (first match wins)."""

DROPPED_KEYS: tuple[tuple[str, str], ...] = (
    (r"\.num_batches_tracked$", "BatchNorm step counters; FrozenBatchNorm2d has none"),
    (
        r"^roi_heads\.box_predictor\.(?:\d\.)?cls_score\.zs_weight$",
        "the training vocabulary's text matrix; vocabularies are set at run time",
    ),
    (r"^pixel_(?:mean|std)$", "input normalisation; kept in the model config instead"),
)
"""Source keys deliberately not carried over, with the reason."""


def load_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a detectron2 checkpoint (:func:`vlpart.core.weights.load_torch_file`), unwrapping
    ``{"model": ...}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a tensor state dict, a pickle that would run code, a truncated file
            or non-finite weights.
    """
    path = Path(path)
    obj = load_torch_file(path, what="PyTorch checkpoint (.pth)")
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a state dict of tensors (optionally under 'model')")
    check_finite(obj, source=str(path))
    return dict(obj)


def convert_official_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename official keys to vlpart keys.

    Returns:
        The renamed state dict (dropped keys removed).

    Raises:
        ValueError: keys matched by no rule (the first few are listed), or two keys renamed to
            the same name.
    """
    out: dict[str, Tensor] = {}
    unmapped = []
    for key, value in state.items():
        if any(re.search(pattern, key) for pattern, _ in DROPPED_KEYS):
            continue
        for rule in RENAME_RULES:
            if re.search(rule.pattern, key):
                new_key = re.sub(rule.pattern, rule.replacement, key)
                if new_key in out:
                    raise InputError(
                        f"conversion table v{CONVERSION_TABLE_VERSION}: two keys map to '{new_key}'"
                    )
                out[new_key] = rule.transform(value) if rule.transform else value
                break
        else:
            unmapped.append(key)
    if unmapped:
        shown = ", ".join(unmapped[:8]) + (", ..." if len(unmapped) > 8 else "")
        raise InputError(
            f"{len(unmapped)} checkpoint keys are not covered by conversion table "
            f"v{CONVERSION_TABLE_VERSION}: {shown}; is this a VLPart R50 or Swin-B checkpoint?"
        )
    return out


def config_from_official(state: Mapping[str, Tensor]) -> ModelConfig:
    """Infer the model settings (backbone, cascade, FPN and text widths, pixel statistics) from
    an official state dict; everything else keeps the reference defaults."""
    if "backbone.bottom_up.base.conv1.weight" in state:
        backbone = "resnet50"
    elif "backbone.bottom_up.patch_embed.proj.weight" in state:
        backbone = "swin_b"
    else:
        raise InputError(
            "not a VLPart R50 or Swin-B checkpoint: found neither "
            "backbone.bottom_up.base.conv1.weight nor "
            "backbone.bottom_up.patch_embed.proj.weight"
        )
    cascade = "roi_heads.box_predictor.0.cls_score.linear.weight" in state
    prefix = "roi_heads.box_predictor.0." if cascade else "roi_heads.box_predictor."
    try:
        text_dim = state[prefix + "cls_score.linear.weight"].shape[0]
        fpn_channels = state["backbone.fpn_lateral2.weight"].shape[0]
    except KeyError as err:
        raise InputError(
            f"checkpoint lacks {err.args[0]}: not a VLPart text-classifier detector"
        ) from None
    extra = {}
    for name in ("pixel_mean", "pixel_std"):
        if name in state:
            extra[name] = tuple(float(v) for v in state[name].flatten())
    return ModelConfig(
        backbone=backbone,
        backbone_weights=None,
        cascade=cascade,
        text_dim=int(text_dim),
        fpn_channels=int(fpn_channels),
        **extra,
    )


def official_checkpoint(
    state: Mapping[str, Tensor], *, source: str = "checkpoint"
) -> tuple[VLPartDetector, CheckpointInfo]:
    """Build and strictly load the detector of an official state dict.

    Returns:
        The model (eval mode, no vocabulary set) and the sidecar information it would be saved
        with (inferred config, the CLIP RN50 text encoder).

    Raises:
        ValueError: unmapped keys, or weights that do not load strictly into the inferred model.
    """
    config = config_from_official(state)
    model = official_model(state, config, source=source)
    zs = [v for k, v in state.items() if k.endswith("cls_score.zs_weight")]
    if zs:
        logger.info(
            "%s: trained with %d classes (vocabulary not stored; set it at run time)",
            source,
            zs[0].shape[1] - 1,
        )
    info = CheckpointInfo(
        config=config, text_encoder=OFFICIAL_TEXT_ENCODER, text_dim=config.text_dim
    )
    return model, info


def load_official_checkpoint(path: str | Path) -> tuple[VLPartDetector, CheckpointInfo]:
    """:func:`load_official_state_dict` then :func:`official_checkpoint`: an official ``.pth``
    as a ready model, converted in memory."""
    return official_checkpoint(load_official_state_dict(path), source=str(path))


def convert_official_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Convert official checkpoint ``src`` into ``dst`` (safetensors) plus its JSON sidecar.

    Returns:
        ``dst``.

    Raises:
        FileNotFoundError / ValueError: unreadable input, unmapped keys, or weights that do not
            load strictly into the inferred model.
    """
    model, info = load_official_checkpoint(src)
    return save_checkpoint(model, dst, config=info.config, text_encoder=info.text_encoder)


def official_model(
    state: Mapping[str, Tensor], config: ModelConfig, *, source: str = "checkpoint"
) -> VLPartDetector:
    """Build ``config``'s model and strictly load the converted ``state`` into it."""
    model = build_model(config)
    load_state_dict_strict(model, convert_official_state_dict(state), source=source)
    return model.eval()
