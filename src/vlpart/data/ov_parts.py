"""Label maps for the OV-PARTS protocol (``vlpart data convert-ov-parts``).

Every converter writes the same layout, which ``vlpart eval --semantic`` reads::

    OUT/gt/<stem>.png       part labels, uint8: label c = row c of the vocabulary, 255 = ignore
    OUT/objects/<stem>.png  object labels, uint8: object index, 255 = no object (Oracle-Obj)
    OUT/objects/names.json  the object name of each index (``["aeroplane", ...]``)

Both folders are written together or not at all. Sources:

* :func:`convert_ov_parts` — the released archives of OV-PARTS. Pascal-Part-116:
  ``images/<split>``, ``annotations_detectron2_part/<split>`` (labels 0..115, 255 = ignore) and
  ``annotations_detectron2_obj/<split>`` (objects 0..19, 255 = none). ADE20K-Part-234:
  ``images/<split>``, ``annotations_detectron2_part/<split>`` (labels 0..233, 16-bit, 65535 =
  ignore) and the object instances of ``ade20k_instance_{train,val}.json`` (COCO, ``category_id``
  = object index 0..43). Every value is checked; ADE's 65535 becomes 255.
* :func:`pascal_part_mat_to_116` — raw Pascal-Part ``.mat`` files: each raw part label is mapped
  onto a Pascal-Part-116 part by :data:`PASCAL_PART_116_RAW` (sides and numbering dropped,
  ``lfuleg`` -> ``leg``, ``llarm`` -> ``lower arm``, ``fliplate`` -> ``license plate``).
  Within an object, parts are painted largest first (a car's side mask covers its doors,
  windows and plates). OV-PARTS does not publish these rules; the table is ours, read off the
  class names, and the released PNGs stay the reference (their authors refined the masks).
* :func:`coco_to_label_maps` — any COCO part file (the quickstart world): category ``i`` in id
  order is label ``i``; masks are painted largest first, so a small part lying on a large one
  keeps its pixels.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vlpart.core.coco import category_vocabulary, decode_segmentation, load_coco, read_json
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import OutputSet, read_image_size, read_label_map
from vlpart.core.vocab import Vocabulary, load_builtin
from vlpart.data.pascal_part import read_mat

__all__ = [
    "OV_PARTS_DATASETS",
    "OBJECT_NAMES",
    "PASCAL_PART_116_RAW",
    "LabelMapSummary",
    "coco_to_label_maps",
    "convert_ov_parts",
    "pascal_part_mat_to_116",
    "read_object_names",
]

IGNORE = 255
# ADE20K-Part-234's 16-bit ignore value.
ADE_IGNORE = 65535
OV_PARTS_DATASETS = ("pascal_part_116", "ade20k_part_234")
_DEFAULT_SPLIT = {"pascal_part_116": "val", "ade20k_part_234": "validation"}
_ADE_JSON = {"training": "ade20k_instance_train.json", "validation": "ade20k_instance_val.json"}

# Raw Pascal-Part part label (side prefix and ``_<n>`` suffix removed where the table has no
# entry) -> Pascal-Part-116 part. Labels not listed keep their name (``head``, ``torso``).
PASCAL_PART_116_RAW = {
    **dict.fromkeys(("lwing", "rwing"), "wing"),
    **dict.fromkeys(("leye", "reye"), "eye"),
    **dict.fromkeys(("lear", "rear"), "ear"),
    **dict.fromkeys(("lebrow", "rebrow"), "eyebrow"),
    **dict.fromkeys(("lhorn", "rhorn"), "horn"),
    **dict.fromkeys(("lhand", "rhand"), "hand"),
    **dict.fromkeys(("lfoot", "rfoot"), "foot"),
    **dict.fromkeys(("llarm", "rlarm"), "lower arm"),
    **dict.fromkeys(("luarm", "ruarm"), "upper arm"),
    **dict.fromkeys(("fwheel", "bwheel"), "wheel"),
    **dict.fromkeys(("fliplate", "bliplate"), "license plate"),
    **dict.fromkeys(("leftmirror", "rightmirror"), "mirror"),
    **dict.fromkeys(("frontside", "hfrontside", "cfrontside"), "front"),
    **dict.fromkeys(("leftside", "rightside", "hleftside", "hrightside"), "side"),
    **dict.fromkeys(("cleftside", "crightside"), "side"),
    **dict.fromkeys(("backside", "hbackside", "cbackside"), "back"),
    **dict.fromkeys(("roofside", "hroofside", "croofside"), "roof"),
    **dict.fromkeys(("lfpa", "rfpa", "lbpa", "rbpa"), "paw"),
    **dict.fromkeys(("lfho", "rfho", "lbho", "rbho"), "hoof"),
    **dict.fromkeys(
        ("lleg", "rleg", "lfleg", "rfleg", "lbleg", "rbleg", "llleg", "luleg", "rlleg", "ruleg"),
        "leg",
    ),
    **dict.fromkeys(
        ("lfuleg", "lflleg", "rfuleg", "rflleg", "lbuleg", "lblleg", "rbuleg", "rblleg"), "leg"
    ),
}
_NUMBERED = re.compile(r"_\d+$")
# .mat class spellings that differ from the VOC object names.
_MAT_CLASSES = {"table": "diningtable"}
# The 20 VOC objects in OV-PARTS' order (annotations_detectron2_obj values).
VOC_OBJECTS = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike "
    "person pottedplant sheep sofa train tvmonitor"
).split()
# ADE20K-Part-234's 44 objects in OV-PARTS' order (its instance files' category_id values).
ADE20K_OBJECTS = (
    "airplane, armchair, bed, bench, bookcase, bus, cabinet, car, chair, chandelier, "
    "chest of drawers, clock, coffee table, computer, cooking stove, desk, dishwasher, door, fan, "
    "glass, kitchen island, lamp, light, microwave, minibike, ottoman, oven, person, pool table, "
    "refrigerator, sconce, shelf, sink, sofa, stool, swivel chair, table, television receiver, "
    "toilet, traffic light, truck, van, wardrobe, washer"
).split(", ")
# Object index -> name of the released object maps, by vocabulary.
OBJECT_NAMES = {"pascal_part_116": tuple(VOC_OBJECTS), "ade20k_part_234": tuple(ADE20K_OBJECTS)}
NAMES_FILE = "names.json"


@dataclass(frozen=True)
class LabelMapSummary:
    """What a converter wrote.

    Attributes:
        gt_dir: the part label maps.
        objects_dir: the object label maps.
        num_images: label maps written (one per image, in each folder).
        dropped: source labels with no class, ``"horse:lfho" -> count`` (``.mat`` only).
    """

    gt_dir: Path
    objects_dir: Path
    num_images: int
    dropped: dict[str, int] = field(default_factory=dict)


def read_object_names(object_dir: str | Path, vocabulary: Vocabulary) -> tuple[str, ...] | None:
    """The object name of each index of an ``objects/`` folder: its ``names.json`` (written by
    every converter here), else the released maps' list for a built-in OV-PARTS vocabulary
    (:data:`OBJECT_NAMES`), else ``None``.

    Raises:
        ValueError: a ``names.json`` that is not a list of strings.
    """
    path = Path(object_dir) / NAMES_FILE
    if path.is_file():
        names = read_json(path, what="object names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path}: expected a JSON list of object names")
        return tuple(names)
    return OBJECT_NAMES.get(vocabulary.name)


def _write_maps(
    out: str | Path, maps: Iterator[tuple[str, np.ndarray, np.ndarray]], object_names: Sequence[str]
):
    """Stage ``OUT/gt`` and ``OUT/objects`` from ``(stem, parts, objects)`` and commit them."""
    out = Path(out)
    gt_dir, obj_dir = out / "gt", out / "objects"
    count = 0
    with OutputSet() as staged:
        staged.folder(gt_dir)
        staged.folder(obj_dir)
        for stem, parts, objects in maps:
            for folder, labels in ((gt_dir, parts), (obj_dir, objects)):
                image = Image.fromarray(labels.astype(np.uint8))
                staged.write(folder / f"{stem}.png", lambda tmp, im=image: im.save(tmp, "PNG"))
            count += 1
        if count == 0:
            raise InputError(f"{out}: nothing to convert (no images)")
        staged.write_json(obj_dir / NAMES_FILE, list(object_names))
        staged.commit()
    return gt_dir, obj_dir, count


def _checked(labels: np.ndarray, num_classes: int, ignore: Sequence[int], name: str) -> np.ndarray:
    """``labels`` as uint8 with every ignore value 255; other values must be classes."""
    is_ignore = np.isin(labels, ignore)
    bad = ~is_ignore & (labels >= num_classes)
    if bad.any():
        found = ", ".join(str(v) for v in np.unique(labels[bad])[:5])
        raise InputError(
            f"{name}: label values {found} are outside 0..{num_classes - 1} "
            f"(ignore: {', '.join(map(str, ignore))})"
        )
    return np.where(is_ignore, IGNORE, labels).astype(np.uint8)


def convert_ov_parts(
    root: str | Path, out: str | Path, *, dataset: str, split: str | None = None
) -> LabelMapSummary:
    """Convert one split of a released OV-PARTS dataset (see the module docstring).

    Args:
        root: the extracted archive (``PascalPart116/`` or ``ADE20KPart234/``).
        out: where ``gt/`` and ``objects/`` go.
        dataset: ``pascal_part_116`` or ``ade20k_part_234``.
        split: ``val``/``train`` (Pascal) or ``validation``/``training`` (ADE); default the
            evaluation split.

    Raises:
        FileNotFoundError: a folder, the instance JSON, or a PNG of some image is missing.
        ValueError: an unknown dataset or split, a value outside the classes, maps of
            different sizes.
    """
    if dataset not in OV_PARTS_DATASETS:
        raise InputError(f"unknown OV-PARTS dataset {dataset!r}; choose {OV_PARTS_DATASETS}")
    split = split or _DEFAULT_SPLIT[dataset]
    if dataset == "ade20k_part_234" and split not in _ADE_JSON:
        raise InputError(f"unknown ADE20K-Part-234 split {split!r}; choose {tuple(_ADE_JSON)}")
    root = Path(root)
    part_dir = root / "annotations_detectron2_part" / split
    if not part_dir.is_dir():
        raise MissingFileError(f"{part_dir}: folder not found (is {root} the extracted archive?)")
    files = sorted(part_dir.glob("*.png"))
    if not files:
        raise MissingFileError(f"{part_dir}: no .png label maps")
    num_classes = len(load_builtin(dataset))
    if dataset == "pascal_part_116":
        maps = _released_pascal(files, root / "annotations_detectron2_obj" / split, num_classes)
    else:
        maps = _released_ade(files, root / _ADE_JSON[split], num_classes)
    gt_dir, obj_dir, count = _write_maps(out, maps, OBJECT_NAMES[dataset])
    return LabelMapSummary(gt_dir, obj_dir, count)


def _released_pascal(files: list[Path], obj_dir: Path, num_classes: int):
    if not obj_dir.is_dir():
        raise MissingFileError(f"{obj_dir}: folder not found")
    for path in tqdm(files, desc="pascal-part-116", disable=None):
        parts = _checked(read_label_map(path), num_classes, (IGNORE,), str(path))
        obj_path = obj_dir / path.name
        if not obj_path.is_file():
            raise MissingFileError(f"{obj_path}: no object map for {path}")
        objects = _checked(read_label_map(obj_path), len(VOC_OBJECTS), (IGNORE,), str(obj_path))
        if objects.shape != parts.shape:
            raise InputError(f"{obj_path}: size differs from its part map {path}")
        yield path.stem, parts, objects


def _released_ade(files: list[Path], instance_json: Path, num_classes: int):
    data = load_coco(instance_json, what="ADE20K-Part-234 instance file")
    num_objects = len(ADE20K_OBJECTS)
    by_stem = {Path(im["file_name"]).stem: im for im in data["images"]}
    anns: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    for path in tqdm(files, desc="ade20k-part-234", disable=None):
        parts = _checked(read_label_map(path), num_classes, (IGNORE, ADE_IGNORE), str(path))
        info = by_stem.get(path.stem)
        if info is None:
            raise InputError(f"{instance_json}: no image {path.stem} (the part map {path})")
        objects = np.full(parts.shape, IGNORE, dtype=np.uint8)
        height, width = parts.shape
        if (info["height"], info["width"]) != (height, width):
            raise InputError(f"{path}: {width}x{height}, but {instance_json} says otherwise")
        for ann in anns.get(info["id"], []):
            if not 0 <= ann["category_id"] < num_objects:
                raise InputError(
                    f"{instance_json}: annotation {ann['id']}: category_id "
                    f"{ann['category_id']} is no object index 0..{num_objects - 1}"
                )
            mask = decode_segmentation(ann["segmentation"], height, width).astype(bool)
            objects[mask] = ann["category_id"]
        yield path.stem, parts, objects


def pascal_part_mat_to_116(
    anno_dir: str | Path,
    out: str | Path,
    *,
    image_dir: str | Path | None = None,
    image_names: Sequence[str] | None = None,
) -> LabelMapSummary:
    """Raw Pascal-Part ``.mat`` annotations -> Pascal-Part-116 label maps (module docstring).

    Args:
        anno_dir: folder of ``<name>.mat`` (``Annotations_Part``).
        out: where ``gt/`` and ``objects/`` go.
        image_dir: the photos; when given, each must exist with its annotation's size.
        image_names: convert only these names (a VOC ``ImageSets`` split); default all.

    Raises:
        FileNotFoundError: a folder, ``.mat`` file or photo is missing.
        ValueError: a malformed ``.mat`` file or an unknown object class.
    """
    anno_dir = Path(anno_dir)
    if not anno_dir.is_dir():
        raise MissingFileError(f"{anno_dir}: folder not found")
    if image_names is None:
        files = sorted(anno_dir.glob("*.mat"))
    else:
        files = [anno_dir / f"{n}.mat" for n in image_names]
    if not files:
        raise MissingFileError(f"{anno_dir}: no .mat files")
    vocab = load_builtin("pascal_part_116")
    dropped: Counter[str] = Counter()
    maps = _mat_maps(files, vocab, None if image_dir is None else Path(image_dir), dropped)
    gt_dir, obj_dir, count = _write_maps(out, maps, VOC_OBJECTS)
    return LabelMapSummary(gt_dir, obj_dir, count, dict(sorted(dropped.items())))


def _mat_maps(files: list[Path], vocab: Vocabulary, image_dir: Path | None, dropped: Counter):
    for path in tqdm(files, desc="pascal-part .mat", disable=None):
        if not path.is_file():
            raise MissingFileError(f"{path}: annotation not found")
        records = read_mat(path)
        if not records:
            continue
        shape = records[0][1].shape
        if image_dir is not None:
            size = read_image_size(image_dir / f"{path.stem}.jpg")
            if size != shape:
                raise InputError(f"{image_dir / path.stem}.jpg: size differs from {path.name}")
        parts = np.full(shape, IGNORE, dtype=np.uint8)
        objects = np.full(shape, IGNORE, dtype=np.uint8)
        for cls, obj_mask, raw_parts in records:
            obj = _MAT_CLASSES.get(cls, cls)
            if obj not in VOC_OBJECTS:
                raise InputError(f"{path}: unknown object class {cls!r}")
            if obj_mask.shape != shape:
                raise InputError(f"{path}: masks of different sizes in one file")
            objects[obj_mask.astype(bool)] = VOC_OBJECTS.index(obj)
            # Largest first: car and bus sides overlap their plates, doors and windows.
            for raw, mask in sorted(raw_parts, key=lambda rm: -int(rm[1].sum())):
                base = _NUMBERED.sub("", raw)
                name = f"{obj}:{PASCAL_PART_116_RAW.get(base, base)}"
                if name not in vocab:
                    dropped[f"{obj}:{raw}"] += 1
                    continue
                parts[mask.astype(bool)] = vocab.index(name)
        yield path.stem, parts, objects


def coco_to_label_maps(
    parts_json: str | Path,
    out: str | Path,
    *,
    objects_json: str | Path | None = None,
) -> tuple[LabelMapSummary, Vocabulary]:
    """Label maps of a COCO part file (and of its object file for ``objects/``; without one,
    every pixel of ``objects/`` is "no object").

    Returns:
        The summary, and the vocabulary of the part file (label ``i`` = its ``i``-th category in
        id order, with the file's ``split``), to evaluate with.
    """
    data = load_coco(parts_json, masks=True)
    vocab = category_vocabulary(data["categories"], name=Path(parts_json).stem)
    if len(vocab) >= IGNORE:
        raise InputError(f"{parts_json}: {len(vocab)} categories do not fit 8-bit label maps")
    label = {c.id: i for i, c in enumerate(vocab)}
    obj_data = load_coco(objects_json, masks=True) if objects_json else None
    obj_label, obj_names = {}, []
    if obj_data is not None:
        obj_cats = sorted(obj_data["categories"], key=lambda c: c["id"])
        obj_label = {c["id"]: i for i, c in enumerate(obj_cats)}
        obj_names = [str(c["name"]) for c in obj_cats]

    def by_image(coco: dict | None) -> dict[int, list[dict]]:
        grouped: dict[int, list[dict]] = {}
        for ann in coco["annotations"] if coco else []:
            grouped.setdefault(ann["image_id"], []).append(ann)
        return grouped

    part_anns, obj_anns = by_image(data), by_image(obj_data)

    def maps():
        for info in tqdm(data["images"], desc="label maps", disable=None):
            shape = (info["height"], info["width"])
            parts = np.full(shape, IGNORE, dtype=np.uint8)
            objects = np.full(shape, IGNORE, dtype=np.uint8)
            for anns, target, table in (
                (obj_anns.get(info["id"], []), objects, obj_label),
                (part_anns.get(info["id"], []), parts, label),
            ):
                masks = [decode_segmentation(a["segmentation"], *shape).astype(bool) for a in anns]
                for i in np.argsort([-m.sum() for m in masks], kind="stable"):
                    target[masks[i]] = table[anns[i]["category_id"]]
            yield Path(info["file_name"]).stem, parts, objects

    gt_dir, obj_dir, count = _write_maps(out, maps(), obj_names)
    return LabelMapSummary(gt_dir, obj_dir, count), vocab
