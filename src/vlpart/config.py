"""One dataclass tree of settings, loaded from YAML.

Every field has a default, so an empty file is a valid config. Loading is strict: an unknown key
or a value of the wrong type raises ``ConfigError`` naming the file, the dotted key and, for a
typo, the closest valid key. Only builders and engine entry points read a :class:`Config`;
modules below them take plain keyword arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["Config", "ConfigError", "TextConfig", "config_from_dict"]


class ConfigError(ValueError):
    """A config file or dict does not match the :class:`Config` schema."""


@dataclass
class TextConfig:
    """How category prompts become classifier rows (see :mod:`vlpart.text`)."""

    encoder: Literal["clip", "minilm", "precomputed"] = "minilm"
    template: str = "a_object_part"
    clip_model: str = "RN50"
    # "openai" (download from the hub) or a local weights file.
    clip_weights: str = "openai"
    # ``.npy`` matrix for the ``precomputed`` encoder (rows follow the vocabulary's order).
    embeddings: str | None = None
    # On-disk embedding cache; None uses $VLPART_CACHE or ~/.cache/vlpart.
    cache_dir: str | None = None


@dataclass
class Config:
    """Root of the settings tree."""

    vocabulary: str = "pascal_part"
    text: TextConfig = field(default_factory=TextConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        return config_from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a :class:`Config` from nested dicts, validating every key and type."""
    return _build(Config, data, prefix="", source=source)


def _build(cls: type, data: Any, *, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], key=f"{prefix}{key}", source=source)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, *, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=f"{key}.", source=source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key=key, source=source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"{source}: {key}: {value!r} matches none of {_type_name(tp)}"
        )
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{source}: {key}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{source}: {key}: expected {len(args)} items, got {value!r}")
            return tuple(
                _coerce(v, a, key=f"{key}[{i}]", source=source)
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        items = [_coerce(v, item, key=f"{key}[{i}]", source=source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
        return {
            str(k): _coerce(v, args[1], key=f"{key}.{k}", source=source) for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(
            f"{source}: {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
