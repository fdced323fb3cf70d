"""The released VLPart checkpoints by name: one plain dict, :data:`MODELS`.

Every checkpoint of the authors' model zoo (``MODEL_ZOO.md`` of facebookresearch/VLPart, release
``v0.1`` of ``PeizeSun/VLPart`` on GitHub) with its architecture, training data, the vocabulary
of its evaluation (the config's test set) and the numbers the authors report for it. Numbers the
zoo does not give are ``None``.

:func:`prepare` turns a name into a local vlpart checkpoint: the first use downloads the ``.pth``
into ``$VLPART_CACHE/checkpoints`` (through :func:`vlpart.core.weights.fetch`: resumable, mirror,
one-line offline error) and converts it once (:mod:`vlpart.model.convert`) to
``<name>.safetensors`` + ``<name>.json``; later uses load the converted file.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from vlpart.core.errors import InputError
from vlpart.core.weights import cache_dir, fetch

__all__ = [
    "CHECKPOINT_SUBDIR",
    "MODELS",
    "RELEASE_URL",
    "ModelSpec",
    "checkpoint_path",
    "get_model",
    "is_cached",
    "list_models",
    "model_table",
    "prepare",
]

logger = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/PeizeSun/VLPart/releases/download/v0.1/"
CHECKPOINT_SUBDIR = "checkpoints"
BENCHMARK_NAMES = {
    "voc": "VOC",
    "coco": "COCO",
    "lvis": "LVIS",
    "partimagenet": "PartImageNet",
    "pascal_part": "Pascal Part",
    "paco": "PACO",
}


@dataclass(frozen=True)
class ModelSpec:
    """One released checkpoint.

    Attributes:
        name: the release file's stem (``r50_pascalpart``).
        backbone: ``resnet50`` (Mask R-CNN) or ``swin_b`` (Cascade Mask R-CNN).
        training_data: the datasets it was trained on, in the zoo's words.
        vocabulary: built-in vocabulary of its evaluation, the default for prediction.
        reported: metric → value as the zoo reports it, keys ``<vocabulary>/<metric>``
            (``pascal_part/AP``, ``lvis/APr``, ``pascal_part/novel/AP50``). The zoo states mask
            AP for its PartImageNet and Pascal Part ablation tables and does not say, for the
            open-vocabulary tables, whether VOC/COCO/LVIS numbers are box or mask AP.
        config: the authors' config file it was trained with.
    """

    name: str
    backbone: str
    training_data: tuple[str, ...]
    vocabulary: str
    reported: Mapping[str, float | None]
    config: str

    @property
    def url(self) -> str:
        return f"{RELEASE_URL}{self.name}.pth"

    @property
    def cascade(self) -> bool:
        return self.backbone == "swin_b"

    @property
    def architecture(self) -> str:
        return "Swin-B Cascade Mask R-CNN" if self.cascade else "R50 Mask R-CNN"

    @property
    def reported_ap(self) -> float | None:
        """AP on the benchmark of :attr:`vocabulary`, as reported."""
        return self.reported.get(f"{self.vocabulary}/AP")


def _ov(*pairs: tuple[float, float]) -> dict[str, float]:
    """The six benchmark columns of the zoo's open-vocabulary tables, in their order: VOC,
    COCO (AP/AP50), LVIS (AP/APr), PartImageNet, Pascal Part, PACO (AP/AP50)."""
    keys = ("voc", "coco", "lvis", "partimagenet", "pascal_part", "paco")
    out = {}
    for key, (ap, second) in zip(keys, pairs, strict=True):
        out[f"{key}/AP"] = ap
        out[f"{key}/{'APr' if key == 'lvis' else 'AP50'}"] = second
    return out


def _one(vocabulary: str, ap: float, ap50: float | None, **extra: float) -> dict[str, float]:
    return {f"{vocabulary}/AP": ap, f"{vocabulary}/AP50": ap50, **extra}


def _pascal_ablation(all_: tuple, base: tuple, novel: tuple) -> dict[str, float]:
    """Cross-category rows: All (93) / Base (77) / Novel (16) parts, AP/AP50."""
    return {
        "pascal_part/AP": all_[0],
        "pascal_part/AP50": all_[1],
        "pascal_part/base/AP": base[0],
        "pascal_part/base/AP50": base[1],
        "pascal_part/novel/AP": novel[0],
        "pascal_part/novel/AP50": novel[1],
    }


_JOINT = ("LVIS", "PACO")
_R50, _SWIN = "resnet50", "swin_b"

_SPECS = (
    # ---- R50 Mask R-CNN, dataset-specific (open-vocabulary table, one column each)
    ModelSpec(
        "r50_voc", _R50, ("VOC",), "voc", _one("voc", 35.9, 69.7), "configs/voc/r50_voc.yaml"
    ),
    ModelSpec(
        "r50_coco", _R50, ("COCO",), "coco", _one("coco", 38.0, 60.8), "configs/coco/r50_coco.yaml"
    ),
    ModelSpec(
        "r50_lvis",
        _R50,
        ("LVIS",),
        "lvis",
        {"lvis/AP": 28.1, "lvis/APr": 20.8},
        "configs/lvis/r50_lvis.yaml",
    ),
    ModelSpec(
        "r50_partimagenet",
        _R50,
        ("PartImageNet",),
        "partimagenet",
        _one("partimagenet", 29.7, 54.1),
        "configs/partimagenet/r50_partimagenet.yaml",
    ),
    ModelSpec(
        "r50_pascalpart",
        _R50,
        ("Pascal Part",),
        "pascal_part",
        # + its cross-dataset PartImageNet AP (the PartImageNet table's first row).
        _one("pascal_part", 19.4, 42.3, **{"partimagenet/AP": 4.5}),
        "configs/pascal_part/r50_pascalpart.yaml",
    ),
    ModelSpec(
        "r50_paco", _R50, ("PACO",), "paco", _one("paco", 10.6, 21.7), "configs/paco/r50_paco.yaml"
    ),
    # ---- R50 Mask R-CNN, joint training (all six benchmarks)
    ModelSpec(
        "r50_lvis_paco",
        _R50,
        _JOINT,
        "paco",
        _ov((44.5, 70.3), (29.0, 48.1), (27.3, 19.0), (5.4, 11.3), (4.9, 11.3), (9.6, 19.5)),
        "configs/joint/r50_lvis_paco.yaml",
    ),
    ModelSpec(
        "r50_lvis_paco_pascalpart",
        _R50,
        (*_JOINT, "Pascal Part"),
        "pascal_part",
        _ov((42.8, 70.8), (28.6, 48.0), (26.8, 20.4), (7.8, 15.3), (21.6, 46.3), (9.3, 18.9)),
        "configs/joint/r50_lvis_paco_pascalpart.yaml",
    ),
    ModelSpec(
        "r50_lvis_paco_pascalpart_partimagenet",
        _R50,
        (*_JOINT, "Pascal Part", "PartImageNet"),
        "partimagenet",
        _ov((40.6, 69.3), (28.4, 47.8), (26.4, 16.0), (29.1, 52.0), (22.6, 47.8), (9.3, 18.9)),
        "configs/joint/r50_lvis_paco_pascalpart_partimagenet.yaml",
    ),
    ModelSpec(
        "r50_lvis_paco_pascalpart_partimagenet_in",
        _R50,
        (*_JOINT, "Pascal Part", "PartImageNet", "IN labels"),
        "partimagenet",
        _ov((38.0, 67.8), (28.2, 47.8), (26.0, 15.9), (30.8, 54.4), (23.6, 49.2), (9.0, 18.7)),
        "configs/joint_in/r50_lvis_paco_pascalpart_partimagenet_in.yaml",
    ),
    ModelSpec(
        "r50_lvis_paco_pascalpart_partimagenet_inparsed",
        _R50,
        (*_JOINT, "Pascal Part", "PartImageNet", "IN labels", "IN parsed"),
        "partimagenet",
        _ov((38.3, 67.8), (28.5, 47.8), (26.2, 17.8), (31.6, 55.7), (24.0, 49.8), (9.6, 20.2)),
        "configs/joint_in/r50_lvis_paco_pascalpart_partimagenet_inparsed.yaml",
    ),
    # ---- R50, cross-dataset ablation on PartImageNet (the zoo gives only All(40) mask AP)
    ModelSpec(
        "r50_pascalpart_ins11",
        _R50,
        ("Pascal Part", "IN-S11 labels"),
        "partimagenet",
        _one("partimagenet", 5.4, None),
        "configs/partimagenet_ablation/r50_pascalpart_ins11.yaml",
    ),
    ModelSpec(
        "r50_pascalpart_ins11_ins11parsed",
        _R50,
        ("Pascal Part", "IN-S11 labels", "IN-S11 parsed"),
        "partimagenet",
        _one("partimagenet", 7.8, None),
        "configs/partimagenet_ablation/r50_pascalpart_ins11_ins11parsed.yaml",
    ),
    ModelSpec(
        "r50_lvis_paco_pascalpart_ins11",
        _R50,
        (*_JOINT, "Pascal Part", "IN-S11 labels"),
        "partimagenet",
        _one("partimagenet", 8.8, None),
        "configs/partimagenet_ablation/r50_lvis_paco_pascalpart_ins11.yaml",
    ),
    ModelSpec(
        "r50_lvis_paco_pascalpart_ins11_ins11parsed",
        _R50,
        (*_JOINT, "Pascal Part", "IN-S11 labels", "IN-S11 parsed"),
        "partimagenet",
        _one("partimagenet", 11.8, None),
        "configs/partimagenet_ablation/r50_lvis_paco_pascalpart_ins11_ins11parsed.yaml",
    ),
    # ---- R50, cross-category ablation within Pascal Part (dog and bus parts are novel)
    ModelSpec(
        "r50_pascalpartbase",
        _R50,
        ("Pascal Part base",),
        "pascal_part",
        _pascal_ablation((15.0, 33.4), (17.8, 39.6), (1.5, 3.7)),
        "configs/pascal_part_ablation/r50_pascalpartbase.yaml",
    ),
    ModelSpec(
        "r50_pascalpartbase_voc",
        _R50,
        ("Pascal Part base", "VOC"),
        "pascal_part",
        _pascal_ablation((16.8, 36.8), (19.9, 43.3), (2.1, 5.9)),
        "configs/pascal_part_ablation/r50_pascalpartbase_voc.yaml",
    ),
    ModelSpec(
        "r50_pascalpartbase_voc_ins20",
        _R50,
        ("Pascal Part base", "VOC", "IN-S20 labels"),
        "pascal_part",
        _pascal_ablation((17.4, 37.5), (20.8, 44.7), (1.1, 3.1)),
        "configs/pascal_part_ablation/r50_pascalpartbase_voc_ins20.yaml",
    ),
    ModelSpec(
        "r50_pascalpartbase_voc_ins20_ins20parsed",
        _R50,
        ("Pascal Part base", "VOC", "IN-S20 labels", "IN-S20 parsed"),
        "pascal_part",
        _pascal_ablation((18.4, 39.4), (21.3, 45.3), (4.2, 11.0)),
        "configs/pascal_part_ablation/r50_pascalpartbase_voc_ins20_ins20parsed.yaml",
    ),
    # ---- Swin-B Cascade Mask R-CNN, dataset-specific
    ModelSpec(
        "swinbase_cascade_voc",
        _SWIN,
        ("VOC",),
        "voc",
        _one("voc", 59.0, 82.0),
        "configs/voc/swinbase_cascade_voc.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_coco",
        _SWIN,
        ("COCO",),
        "coco",
        _one("coco", 52.5, 72.0),
        "configs/coco/swinbase_cascade_coco.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_lvis",
        _SWIN,
        ("LVIS",),
        "lvis",
        {"lvis/AP": 43.1, "lvis/APr": 38.7},
        "configs/lvis/swinbase_cascade_lvis.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_partimagenet",
        _SWIN,
        ("PartImageNet",),
        "partimagenet",
        _one("partimagenet", 41.7, 68.7),
        "configs/partimagenet/swinbase_cascade_partimagenet.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_pascalpart",
        _SWIN,
        ("Pascal Part",),
        "pascal_part",
        _one("pascal_part", 27.4, 56.1),
        "configs/pascal_part/swinbase_cascade_pascalpart.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_paco",
        _SWIN,
        ("PACO",),
        "paco",
        _one("paco", 15.2, 29.4),
        "configs/paco/swinbase_cascade_paco.yaml",
    ),
    # ---- Swin-B Cascade Mask R-CNN, joint training
    ModelSpec(
        "swinbase_cascade_lvis_paco",
        _SWIN,
        _JOINT,
        "paco",
        _ov((55.2, 72.2), (41.0, 58.4), (41.3, 32.8), (6.9, 13.7), (5.6, 12.5), (15.9, 31.9)),
        "configs/joint/swinbase_cascade_lvis_paco.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_lvis_paco_pascalpart",
        _SWIN,
        (*_JOINT, "Pascal Part"),
        "pascal_part",
        _ov((52.6, 72.4), (40.4, 57.9), (39.9, 29.8), (11.8, 21.8), (30.5, 59.3), (15.4, 30.2)),
        "configs/joint/swinbase_cascade_lvis_paco_pascalpart.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_lvis_paco_pascalpart_partimagenet",
        _SWIN,
        (*_JOINT, "Pascal Part", "PartImageNet"),
        "partimagenet",
        _ov((50.3, 71.6), (40.3, 57.8), (39.6, 30.3), (40.0, 64.8), (31.2, 60.5), (15.4, 30.3)),
        "configs/joint/swinbase_cascade_lvis_paco_pascalpart_partimagenet.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_lvis_paco_pascalpart_partimagenet_in",
        _SWIN,
        (*_JOINT, "Pascal Part", "PartImageNet", "IN labels"),
        "partimagenet",
        _ov((48.1, 69.7), (40.3, 57.7), (39.3, 28.9), (41.2, 66.8), (31.7, 61.1), (15.9, 30.8)),
        "configs/joint_in/swinbase_cascade_lvis_paco_pascalpart_partimagenet_in.yaml",
    ),
    ModelSpec(
        "swinbase_cascade_lvis_paco_pascalpart_partimagenet_inparsed",
        _SWIN,
        (*_JOINT, "Pascal Part", "PartImageNet", "IN labels", "IN parsed"),
        "partimagenet",
        _ov((47.8, 69.7), (40.5, 58.1), (39.6, 30.5), (42.0, 68.2), (31.9, 61.6), (15.6, 30.6)),
        "configs/joint_in/swinbase_cascade_lvis_paco_pascalpart_partimagenet_inparsed.yaml",
    ),
)


def _registry(specs: Iterable[ModelSpec]) -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in out:
            raise InputError(f"model zoo: {spec.name!r} is registered twice")
        out[spec.name] = spec
    return out


MODELS: dict[str, ModelSpec] = _registry(_SPECS)
"""Every released checkpoint by name."""


def list_models() -> list[str]:
    """The names of :data:`MODELS`, in the zoo's order."""
    return list(MODELS)


def get_model(name: str) -> ModelSpec:
    """The spec of ``name``.

    Raises:
        ValueError: an unknown name, listing the closest ones.
    """
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise InputError(
            f"unknown model {name!r}{hint} (`vlpart models` lists all {len(MODELS)})"
        ) from None


def model_table() -> list[tuple[str, ...]]:
    """``vlpart models``: a header row, then per model its name, backbone, training data, the AP
    its authors report (on its benchmark) and whether it is in the cache."""
    rows = [("name", "backbone", "training data", "reported AP", "cached")]
    for spec in MODELS.values():
        ap = spec.reported_ap
        rows.append(
            (
                spec.name,
                "Swin-B cascade" if spec.cascade else "R50",
                " + ".join(spec.training_data),
                f"{ap:.1f} {BENCHMARK_NAMES[spec.vocabulary]}" if ap is not None else "-",
                "yes" if is_cached(spec.name) else "no",
            )
        )
    return rows


def checkpoint_path(name: str) -> Path:
    """Where the converted checkpoint of ``name`` lives (``<name>.safetensors``, sidecar
    ``<name>.json`` beside it)."""
    return cache_dir(CHECKPOINT_SUBDIR) / f"{get_model(name).name}.safetensors"


def is_cached(name: str) -> bool:
    """Has ``name`` been downloaded and converted?"""
    from vlpart.model.checkpoint import sidecar_path

    path = checkpoint_path(name)
    return path.is_file() and sidecar_path(path).is_file()


def prepare(name: str, *, progress: bool = True) -> Path:
    """The converted checkpoint of ``name``, downloading and converting it on first use.

    Returns:
        ``$VLPART_CACHE/checkpoints/<name>.safetensors`` (with its sidecar).

    Raises:
        ValueError: unknown name, or a downloaded file that is not a VLPart checkpoint.
        FileNotFoundError: offline and not cached (one line: what to download, where to put it).
        vlpart.core.weights.DownloadError: the download failed.
    """
    from vlpart.model.checkpoint import save_checkpoint
    from vlpart.model.convert import load_official_state_dict, official_checkpoint

    spec = get_model(name)
    target = checkpoint_path(name)
    if is_cached(name):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(f".{name}.prepare.lock"))):  # e.g. DDP ranks
        if is_cached(name):
            return target
        raw = fetch(spec.url, subdir=CHECKPOINT_SUBDIR, progress=progress)
        try:  # truncated, corrupt, not a checkpoint or another model: do not keep it
            model, info = official_checkpoint(load_official_state_dict(raw), source=str(raw))
            if (info.config.backbone, info.config.cascade) != (spec.backbone, spec.cascade):
                raise InputError(
                    f"{raw}: holds a {info.config.backbone} (cascade={info.config.cascade}) "
                    f"detector, but {name} is a {spec.architecture}"
                )
        except ValueError as err:
            raw.unlink(missing_ok=True)
            raise InputError(f"{err}; removed the download, run again to fetch it anew") from None
        save_checkpoint(model, target, config=info.config, text_encoder=info.text_encoder)
        logger.info("converted %s to %s", raw, target)
        raw.unlink(missing_ok=True)  # the converted checkpoint replaces the download
    return target
