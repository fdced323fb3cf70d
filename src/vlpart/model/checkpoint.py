"""Checkpoints: weights as safetensors plus a JSON sidecar (config, vocabulary, text encoder)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vlpart._io import atomic_write, write_text_atomic
from vlpart.config import ConfigError, ModelConfig, config_from_dict
from vlpart.model.detector import VLPartDetector, build_model

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointInfo",
    "load_checkpoint",
    "load_state_dict_strict",
    "read_sidecar",
    "save_checkpoint",
    "sidecar_path",
]

CHECKPOINT_FORMAT_VERSION = 1
_SHOWN_KEYS = 5


@dataclass
class CheckpointInfo:
    """What travels with the weights.

    Attributes:
        config: the model settings (``backbone_weights`` is irrelevant once trained).
        vocabulary: the training vocabulary as ``Vocabulary.to_json()`` records, if known.
        text_encoder: identity of the text encoder the classifier was trained with.
        text_dim: width D of its embeddings.
        format_version: sidecar format.
    """

    config: ModelConfig
    vocabulary: list[dict] | None = None
    text_encoder: str | None = None
    text_dim: int | None = None
    format_version: int = CHECKPOINT_FORMAT_VERSION


def sidecar_path(path: str | Path) -> Path:
    """``model.safetensors`` → ``model.json``."""
    return Path(path).with_suffix(".json")


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    config: ModelConfig,
    vocabulary: Sequence[dict] | None = None,
    text_encoder: str | None = None,
) -> Path:
    """Write ``model``'s weights to ``path`` (safetensors) and the sidecar next to it.

    Both files are written to temporary names first and renamed, so a crash never leaves a
    half-written checkpoint.

    Args:
        model: the detector (or any module with ``state_dict``).
        path: target ``.safetensors`` file.
        config: settings that rebuild the model.
        vocabulary: training vocabulary records (``Vocabulary.to_json()``).
        text_encoder: text encoder identity (``TextEncoder.identity``).

    Returns:
        The weights path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    info = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": dataclasses.asdict(config),
        "vocabulary": list(vocabulary) if vocabulary is not None else None,
        "text_encoder": text_encoder,
        "text_dim": config.text_dim,
    }
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    write_text_atomic(sidecar_path(path), json.dumps(info, indent=2) + "\n")
    return path


def load_checkpoint(path: str | Path) -> tuple[VLPartDetector, CheckpointInfo]:
    """Rebuild a detector from ``path`` and its sidecar, loading the weights strictly.

    Returns:
        The model (eval mode, CPU, no vocabulary set) and the sidecar information.

    Raises:
        FileNotFoundError: the weights or the sidecar are missing.
        ValueError: unreadable files, a newer format, or weights that do not fit the config.
    """
    path = Path(path)
    info = read_sidecar(path)
    model = build_model(dataclasses.replace(info.config, backbone_weights=None))
    try:
        state = load_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found") from None
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a safetensors file ({err})") from None
    load_state_dict_strict(model, state, source=str(path))
    return model.eval(), info


def read_sidecar(path: str | Path) -> CheckpointInfo:
    """Read the JSON sidecar of weights file ``path``."""
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side}: checkpoint sidecar (config and vocabulary) not found")
    try:
        data = json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{side}: not valid JSON ({err})") from None
    version = data.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{side}: checkpoint format {version!r} is not supported (this vlpart reads up to "
            f"{CHECKPOINT_FORMAT_VERSION}); upgrade vlpart"
        )
    try:
        config = config_from_dict({"model": data.get("config") or {}}, source=str(side)).model
    except ConfigError as err:
        raise ValueError(str(err)) from None
    return CheckpointInfo(
        config=config,
        vocabulary=data.get("vocabulary"),
        text_encoder=data.get("text_encoder"),
        text_dim=data.get("text_dim"),
        format_version=version,
    )


def load_state_dict_strict(
    model: nn.Module, state: Mapping[str, Tensor], *, source: str = "state dict"
) -> None:
    """Load ``state`` into ``model`` requiring exactly the same keys and shapes.

    Raises:
        ValueError: listing the first missing and unexpected keys with their counts, or the
            first shape mismatches.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not match the model: {len(missing)} missing keys"
            f"{_first(missing)}; {len(unexpected)} unexpected keys{_first(unexpected)}"
        )
    wrong = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ValueError(f"{source}: {len(wrong)} tensors have the wrong shape{_first(wrong)}")
    model.load_state_dict(dict(state), strict=True)


def _first(keys: Sequence[str]) -> str:
    if not keys:
        return ""
    more = f", ... (+{len(keys) - _SHOWN_KEYS})" if len(keys) > _SHOWN_KEYS else ""
    return " (" + ", ".join(keys[:_SHOWN_KEYS]) + more + ")"
