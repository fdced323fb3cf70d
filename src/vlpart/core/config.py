"""One dataclass tree of settings, loaded from YAML.

Every field has a default, so an empty file is a valid config. Loading is strict: an unknown key
or a value of the wrong type raises ``ConfigError`` naming the file, the dotted key and, for a
typo, the closest valid key. Only builders and engine entry points read a :class:`Config`;
modules below them take plain keyword arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vlpart.core.errors import InputError
from vlpart.core.fileio import read_text_file, write_text_atomic
from vlpart.core.vocab import prompt_template

__all__ = [
    "Config",
    "ConfigError",
    "ModelConfig",
    "ParsingConfig",
    "SourceConfig",
    "TextConfig",
    "TrainConfig",
    "config_from_dict",
    "read_yaml",
]


class ConfigError(InputError):
    """A config file or dict does not match the :class:`Config` schema."""


# Bounds of the size fields: far above any real use, low enough that a wrong value (a typo, a
# hand-edited checkpoint sidecar) fails at load time instead of exhausting memory later.
MAX_IMAGE_SIDE = 8192  # input sides (min_size, max_size) in pixels
MAX_CHANNELS = 8192  # feature and text-embedding widths
MAX_COUNT = 100_000  # proposals, RoIs and detections per image


def _at_least(
    minimum: float, default: Any = None, *, factory: Any = None, allow_empty: bool = False
) -> Any:
    """A field whose value (each item, for a list) must be >= ``minimum``; a list field may be
    empty only with ``allow_empty``."""
    return _ranged(default, factory, {"ge": minimum, "allow_empty": allow_empty})


def _within(minimum: float, maximum: float, default: Any = None, *, factory: Any = None) -> Any:
    """A field whose value (each item, for a list) must lie in ``[minimum, maximum]``: sizes,
    whose absurd values (from a hand-edited sidecar, say) would exhaust memory."""
    return _ranged(default, factory, {"ge": minimum, "le": maximum})


def _above(minimum: float, default: Any = None, *, factory: Any = None) -> Any:
    """A field whose value (each item, for a list or tuple) must be > ``minimum``."""
    return _ranged(default, factory, {"gt": minimum})


def _ranged(default: Any, factory: Any, bound: dict[str, float]) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata=bound)
    return field(default=default, metadata=bound)


def _check_range(value: Any, bound: Mapping[str, float], *, key: str, source: str) -> None:
    items = value if isinstance(value, list | tuple) else [value]
    if isinstance(value, list | tuple) and not value and not bound.get("allow_empty"):
        raise ConfigError(f"{source}: {key}: must not be empty")
    for item in items:
        if item is None:
            continue
        if not math.isfinite(item):
            raise ConfigError(f"{source}: {key}: must be a finite number, got {item!r}")
        if "ge" in bound and item < bound["ge"]:
            raise ConfigError(f"{source}: {key}: must be at least {bound['ge']}, got {item!r}")
        if "gt" in bound and item <= bound["gt"]:
            raise ConfigError(f"{source}: {key}: must be greater than {bound['gt']}, got {item!r}")
        if "le" in bound and item > bound["le"]:
            raise ConfigError(f"{source}: {key}: must be at most {bound['le']}, got {item!r}")


@dataclass
class TextConfig:
    """How category prompts become classifier rows (see :mod:`vlpart.text`)."""

    # Encoder of every source's category prompts (a source with ``embeddings`` uses its file).
    encoder: Literal["clip", "minilm"] = "minilm"
    template: str = "a_object_part"
    clip_model: str = "RN50"
    # "openai" (download from the hub) or a local weights file.
    clip_weights: str = "openai"
    # On-disk embedding cache; None uses $VLPART_CACHE or ~/.cache/vlpart.
    cache_dir: str | None = None


@dataclass
class ModelConfig:
    """The detector built by :func:`vlpart.model.build_model`; defaults are the paper's R50
    Mask R-CNN and the reference numerics of the released checkpoints."""

    backbone: Literal["resnet50", "efficientnet_lite0", "swin_b"] = "resnet50"
    # "imagenet" (bundled file or download, see vlpart.model.resolve_weights), a local weights
    # file, or null for random initialisation.
    backbone_weights: str | None = "imagenet"
    fpn_channels: int = _within(1, MAX_CHANNELS, 256)
    # Cascade R-CNN box heads (3 stages), as the paper uses with Swin-B.
    cascade: bool = False
    min_size: int = _within(1, MAX_IMAGE_SIDE, 800)
    max_size: int = _within(1, MAX_IMAGE_SIDE, 1333)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = _above(0, (58.395, 57.12, 57.375))
    # Width of the text embeddings (CLIP RN50: 1024).
    text_dim: int = _within(1, MAX_CHANNELS, 1024)
    rpn_pre_nms_top_n_train: int = _within(1, MAX_COUNT, 2000)
    rpn_pre_nms_top_n_test: int = _within(1, MAX_COUNT, 1000)
    rpn_post_nms_top_n_train: int = _within(1, MAX_COUNT, 1000)
    rpn_post_nms_top_n_test: int = _within(1, MAX_COUNT, 1000)
    rpn_nms_thresh: float = _above(0, 0.7)
    roi_batch_size_per_image: int = _within(1, MAX_COUNT, 512)
    roi_positive_fraction: float = _above(0, 0.25)
    # Cap on positive RoIs per image that train the mask head; null = no cap.
    mask_rois_per_image: int | None = _within(1, MAX_COUNT, None)
    # Channels of the mask head's convs (256 in the paper and the released checkpoints).
    mask_head_dim: int = _within(1, MAX_CHANNELS, 256)
    score_thresh: float = _at_least(0, 0.05)
    nms_thresh: float = _above(0, 0.5)
    detections_per_image: int = _within(1, MAX_COUNT, 100)
    # Federated sigmoid loss (LVIS/PACO-size vocabularies); needs per-class image counts.
    federated_loss: bool = False
    image_label_mode: Literal["max_size", "max_score"] = "max_size"


@dataclass
class SourceConfig:
    """One training data source; each batch comes from one source, with its own vocabulary."""

    name: str = "parts"
    kind: Literal["part", "object", "image", "parsed"] = "part"
    # COCO-format (or LVIS-format, see ``lvis``) annotation file and the folder its
    # ``file_name`` entries are relative to.
    ann_file: str = ""
    image_root: str = ""
    # LVIS-style file (LVIS, PACO): its category image counts feed the federated loss and
    # repeat-factor sampling.
    lvis: bool = False
    # Keep only the categories of this split (their ``split`` field in the file), e.g. train on
    # the base parts of a file that holds all of them.
    split: Literal["base", "novel"] | None = None
    # Relative frequency of this source's batches; 0 turns the source off (it is not loaded).
    ratio: float = _at_least(0, 1.0)
    batch_size: int = _at_least(1, 2)
    # Training short sides, one drawn per image, and the long-side cap.
    min_size: list[int] = _within(1, MAX_IMAGE_SIDE, factory=lambda: [800])
    max_size: int = _within(1, MAX_IMAGE_SIDE, 1333)
    flip: bool = True
    # LVIS repeat-factor threshold t; null = uniform sampling.
    repeat_thresh: float | None = _above(0, None)
    # Precomputed [C, D] text embeddings of this source's categories (rows in id order);
    # null = encode them with the ``text`` encoder.
    embeddings: str | None = None


@dataclass
class TrainConfig:
    """Optimisation schedule and bookkeeping of :func:`vlpart.training.train.train`."""

    max_iter: int = _at_least(1, 90000)
    lr: float = _above(0, 2e-4)
    weight_decay: float = _at_least(0, 1e-4)
    # Linear warm-up from ``warmup_factor * lr`` over ``warmup_iters`` iterations.
    warmup_iters: int = _at_least(0, 1000)
    warmup_factor: float = _above(0, 0.001)
    # Iterations at which the learning rate is multiplied by ``lr_gamma``; [] = constant.
    lr_steps: list[int] = _at_least(0, factory=lambda: [60000, 80000], allow_empty=True)
    lr_gamma: float = _above(0, 0.1)
    # Gradient clipping by total L2 norm; null = off.
    clip_grad_norm: float | None = _above(0, 1.0)
    # Modules (dotted parameter-name prefixes, e.g. "backbone", "rpn") that are not trained;
    # [] = only what the backbone freezes itself (ResNet-50 stem and res2).
    freeze: list[str] = field(default_factory=list)
    # Mixed precision: bfloat16 autocast on CPU, float16 with loss scaling on CUDA.
    amp: bool = False
    checkpoint_period: int = _at_least(1, 5000)
    # Complete checkpoints kept in ``ckpt-<iteration>/`` folders (older ones are deleted).
    keep_checkpoints: int = _at_least(1, 2)
    log_period: int = _at_least(1, 20)
    seed: int = 0
    num_workers: int = _at_least(0, 2)
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class ParsingConfig:
    """``vlpart parse``: parse the instances of novel objects into parts by dense correspondence
    to annotated base objects (see :mod:`vlpart.parsing.run`)."""

    # Feature backend: DINO ViT-S/8 (the paper's) or the offline EfficientNet-Lite0.
    backend: Literal["dino_vits8", "efficientnet_lite0"] = "dino_vits8"
    # "pretrained" (hub or packaged weights) or a local weights file.
    weights: str = "pretrained"
    # DINO patch stride: 8, or 4 for denser features (null: the backbone's own).
    stride: int | None = _at_least(1, None)
    image_size: int = _within(1, MAX_IMAGE_SIDE, 224)
    batch_size: int = _at_least(1, 8)
    # Base objects: COCO object file, part file (parts carry ``object_id``) and image folder.
    base_objects: str = ""
    base_parts: str = ""
    base_image_root: str = ""
    base_categories: list[str] = field(default_factory=list)
    # Novel objects: COCO object file (boxes and masks) and image folder.
    novel_objects: str = ""
    novel_image_root: str = ""
    novel_categories: list[str] = field(default_factory=lambda: ["dog", "bus"])
    # Vocabulary that names the parsed parts (parts it cannot name are dropped).
    vocabulary: str = "pascal_part"
    # Trained detector whose proposals the parsed boxes snap to (null: keep transferred boxes).
    detector: str | None = None
    # Also write the transferred masks as RLE.
    include_masks: bool = False


@dataclass
class Config:
    """Root of the settings tree."""

    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: list[SourceConfig] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    parse: ParsingConfig = field(default_factory=ParsingConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        data = read_yaml(path)
        return config_from_dict({} if data is None else data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a :class:`Config` from nested dicts, validating every key, type and range."""
    cfg = _build(Config, data, prefix="", source=source)
    if cfg.data and not any(src.ratio > 0 for src in cfg.data):
        raise ConfigError(f"{source}: data: every source has ratio 0; turn at least one on")
    try:
        prompt_template(cfg.text.template)
    except ValueError as err:
        raise ConfigError(f"{source}: text.template: {err}") from None
    return cfg


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path`` (``yaml.safe_load``: no tags run code).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not UTF-8 text, or a YAML error as one ``file:line:column:`` line.
    """
    path = Path(path)
    text = read_text_file(path, "config (YAML)")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(path, err)) from None


def _yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """One line: ``file:line:column: not valid YAML: <problem>``."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{where}: not valid YAML: {problem}"


def _build(cls: type, data: Any, *, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], key=f"{prefix}{key}", source=source)
        bound = fields[key].metadata
        if bound:
            _check_range(kwargs[key], bound, key=f"{prefix}{key}", source=source)
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
