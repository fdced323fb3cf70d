"""Checkpoints: weights as safetensors plus a JSON sidecar (config, vocabulary, text encoder)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from vlpart.core.config import MAX_CHANNELS, ConfigError, ModelConfig, config_from_dict
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import read_text_file, write_bytes_atomic, write_text_atomic
from vlpart.core.weights import FILE_KIND_TEXT, file_kind, load_torch_file, one_line
from vlpart.model.detector import VLPartDetector, build_model

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointInfo",
    "check_finite",
    "checkpoint_files",
    "file_kind",
    "load_checkpoint",
    "load_state_dict_strict",
    "load_torch_file",
    "load_weights",
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


def checkpoint_files(
    model: nn.Module,
    *,
    config: ModelConfig,
    vocabulary: Sequence[dict] | None = None,
    text_encoder: str | None = None,
) -> tuple[bytes, str]:
    """The bytes of ``model``'s safetensors weights and the text of their JSON sidecar.

    The sidecar holds no iteration or other per-save value: every checkpoint of one training
    run has the same sidecar.
    """
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    info = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": dataclasses.asdict(config),
        "vocabulary": list(vocabulary) if vocabulary is not None else None,
        "text_encoder": text_encoder,
        "text_dim": config.text_dim,
    }
    weights = safetensors_bytes(state, metadata={"format": "pt"})
    return weights, json.dumps(info, indent=2) + "\n"


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    config: ModelConfig,
    vocabulary: Sequence[dict] | None = None,
    text_encoder: str | None = None,
) -> Path:
    """Write ``model``'s weights to ``path`` (safetensors) and the sidecar next to it.

    Both files are written to temporary names, flushed to disk and renamed, so a crash or a
    full disk never leaves a half-written file; the sidecar is written first (it is the same
    for every checkpoint of a run, see :func:`checkpoint_files`).

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
    weights, sidecar = checkpoint_files(
        model, config=config, vocabulary=vocabulary, text_encoder=text_encoder
    )
    write_text_atomic(sidecar_path(path), sidecar)
    write_bytes_atomic(path, weights)
    return path


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors weights file, refusing anything else and non-finite values.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a ``.pth``/pickle or other foreign file, a truncated or corrupt file, or
            tensors holding NaN/inf (a diverged run); the message starts with the path.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: weights file not found")
    kind = file_kind(path)
    if kind != "safetensors":
        hint = (
            "; official VLPart checkpoints load under a .pth name or convert with 'vlpart convert'"
            if kind in ("torch-zip", "pickle")
            else ""
        )
        raise InputError(
            f"{path}: not a safetensors weights file: it is {FILE_KIND_TEXT[kind]}"
            f"{' (empty)' if path.stat().st_size == 0 else ''}{hint}"
        )
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(
            f"{path}: truncated or corrupt safetensors file ({one_line(err)})"
        ) from None
    check_finite(state, source=str(path))
    return state


def check_finite(state: Mapping[str, Tensor], *, source: str) -> None:
    """Raise ``ValueError`` naming the tensors of ``state`` that hold NaN or infinity."""
    bad = [
        k
        for k, v in state.items()
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise InputError(
            f"{source}: {len(bad)} tensors hold NaN or infinite values{_first(bad)}; the "
            "checkpoint is corrupt or its training diverged"
        )


def load_checkpoint(path: str | Path) -> tuple[VLPartDetector, CheckpointInfo]:
    """Rebuild a detector from ``path`` and its sidecar, loading the weights strictly.

    Returns:
        The model (eval mode, CPU, no vocabulary set) and the sidecar information.

    Raises:
        FileNotFoundError: the weights or the sidecar are missing.
        ValueError: unreadable files, a newer format, or weights that do not fit the config.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: checkpoint not found")
    info = read_sidecar(path)
    state = load_weights(path)
    model = build_model(dataclasses.replace(info.config, backbone_weights=None))
    load_state_dict_strict(model, state, source=str(path))
    return model.eval(), info


def read_sidecar(path: str | Path) -> CheckpointInfo:
    """Read and check the JSON sidecar of weights file ``path``.

    Raises:
        FileNotFoundError: no sidecar.
        ValueError: not UTF-8 JSON, or fields of the wrong shape (the message names the field).
    """
    side = sidecar_path(path)
    if not side.is_file():
        raise MissingFileError(f"{side}: checkpoint sidecar (config and vocabulary) not found")
    try:
        data = json.loads(read_text_file(side, "checkpoint sidecar (JSON)"))
    except json.JSONDecodeError as err:
        raise InputError(f"{side}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(
            f"{side}: expected a JSON object with format_version, config, vocabulary, "
            f"text_encoder and text_dim, got a {type(data).__name__}"
        )
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{side}: format_version: expected a positive integer, got {version!r}")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise InputError(
            f"{side}: checkpoint format {version!r} is not supported (this vlpart reads up to "
            f"{CHECKPOINT_FORMAT_VERSION}); upgrade vlpart"
        )
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise InputError(f"{side}: config: expected an object, got {type(config).__name__}")
    vocabulary = data.get("vocabulary")
    if vocabulary is not None:
        if not isinstance(vocabulary, list):
            raise InputError(
                f"{side}: vocabulary: expected a list of categories, got "
                f"{type(vocabulary).__name__}"
            )
        for i, record in enumerate(vocabulary):
            if not isinstance(record, dict) or not isinstance(record.get("name"), str):
                raise InputError(
                    f"{side}: vocabulary[{i}]: expected an object with a 'name' string, got "
                    f"{record!r:.60}"
                )
    text_encoder = data.get("text_encoder")
    if text_encoder is not None and not isinstance(text_encoder, str):
        raise InputError(f"{side}: text_encoder: expected a string, got {text_encoder!r:.60}")
    text_dim = data.get("text_dim")
    if text_dim is not None and (
        not isinstance(text_dim, int)
        or isinstance(text_dim, bool)
        or not 1 <= text_dim <= MAX_CHANNELS
    ):
        raise InputError(
            f"{side}: text_dim: expected an integer from 1 to {MAX_CHANNELS}, got {text_dim!r:.60}"
        )
    try:
        model_config = config_from_dict({"model": config}, source=str(side)).model
    except ConfigError as err:
        raise InputError(str(err)) from None
    return CheckpointInfo(
        config=model_config,
        vocabulary=vocabulary,
        text_encoder=text_encoder,
        text_dim=text_dim,
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
        raise InputError(
            f"{source}: weights do not match the model: {len(missing)} missing keys"
            f"{_first(missing)}; {len(unexpected)} unexpected keys{_first(unexpected)}"
        )
    wrong = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise InputError(f"{source}: {len(wrong)} tensors have the wrong shape{_first(wrong)}")
    model.load_state_dict(dict(state), strict=True)


def _first(keys: Sequence[str]) -> str:
    if not keys:
        return ""
    more = f", ... (+{len(keys) - _SHOWN_KEYS})" if len(keys) > _SHOWN_KEYS else ""
    return " (" + ", ".join(keys[:_SHOWN_KEYS]) + more + ")"
