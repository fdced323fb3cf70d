"""Pascal-Part ``.mat`` annotations -> COCO-format JSON files (parts and objects).

The converter writes two files that share image ids:

* ``OUT.json`` — the part file: the 93 ``pascal_part`` categories (ids 1..93, with ``split``),
  one annotation per raw ``.mat`` part that maps onto a category (RLE mask, XYWH box, mask area,
  ``iscrowd=0``) and ``object_id``, the id of its parent object annotation in the object file.
  As in the official VLPart conversion, images without any mapped part are left out of it (they
  would only add false positives to part AP).
* ``OUT_objects.json`` (or ``objects_json``) — the object file: the 20 ``voc`` categories (their
  ids) and one annotation per object instance, for every image.

A raw part label belongs to the first category of its object, in id order, whose match token
(:func:`vlpart.core.vocab.pascal_part_mat_tokens`) is a substring of it (``lfleg`` -> ``leg``,
``lfpa`` -> ``paw``); labels matching nothing (``lfho``, ``backside``, ``engine_1``) are dropped,
counted per ``object:label`` and reported.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError
from tqdm import tqdm

from vlpart.core.coco import category_records, mask_annotation, write_coco
from vlpart.core.errors import InputError, MissingFileError
from vlpart.core.fileio import OutputSet, read_image_size, read_text_file, remove_orphans
from vlpart.core.vocab import Vocabulary, load_builtin, pascal_part_mat_tokens

__all__ = ["PascalPartSummary", "convert_pascal_part", "read_split_file"]

logger = logging.getLogger(__name__)

# .mat class names that differ from the VOC taxonomy beyond spaces ("tvmonitor" = "tv monitor").
_MAT_CLASS_ALIASES = {"table": "dining table"}
_VOC_IMAGE_NAME = re.compile(r"^(\d{4})_(\d{6})$")


@dataclass(frozen=True)
class PascalPartSummary:
    """What :func:`convert_pascal_part` wrote.

    Attributes:
        parts_json: the part file.
        objects_json: the object file.
        num_images: images in the object file (all converted images).
        num_part_images: images in the part file (those with at least one mapped part).
        num_objects: object annotations.
        num_parts: part annotations.
        dropped: raw labels that map onto no category, ``"horse:lfho" -> count``.
    """

    parts_json: Path
    objects_json: Path
    num_images: int
    num_part_images: int
    num_objects: int
    num_parts: int
    dropped: dict[str, int] = field(default_factory=dict)


def read_split_file(path: str | Path) -> list[str]:
    """The image names of a VOC ``ImageSets`` split file: the first word of each non-empty line.

    Raises:
        MissingFileError: no such file.
        InputError: a folder or a file that is not UTF-8 text.
    """
    text = read_text_file(path, "split")
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def convert_pascal_part(
    anno_dir: str | Path,
    image_dir: str | Path,
    out_json: str | Path,
    *,
    objects_json: str | Path | None = None,
    image_names: Sequence[str] | None = None,
) -> PascalPartSummary:
    """Convert a folder of Pascal-Part ``.mat`` files into COCO JSON (see the module docstring).

    Args:
        anno_dir: folder of ``<name>.mat`` files (``Annotations_Part``).
        image_dir: folder of the matching ``<name>.jpg`` photos (VOC2010 ``JPEGImages``); images
            are checked to exist and to have the annotation's size. ``file_name`` is relative
            to it.
        out_json: the part file to write.
        objects_json: the object file to write; default ``<out_json stem>_objects.json``.
        image_names: convert only these names (a VOC ``ImageSets`` split); default all files.

    Returns:
        The written paths, counts and the dropped raw labels.

    Raises:
        FileNotFoundError: a folder, ``.mat`` file of ``image_names`` or photo is missing.
        ValueError: a ``.mat`` file is malformed, names an unknown class or disagrees with its
            photo's size.
    """
    anno_dir, image_dir, out_json = Path(anno_dir), Path(image_dir), Path(out_json)
    objects_json = (
        Path(objects_json)
        if objects_json is not None
        else out_json.with_name(f"{out_json.stem}_objects.json")
    )
    for folder in (anno_dir, image_dir):
        if not folder.is_dir():
            raise MissingFileError(f"{folder}: folder not found")
    mat_files = _select_mat_files(anno_dir, image_names)
    image_ids = _image_ids([p.stem for p in mat_files])

    tables = _LabelTables.build()
    images, part_images, objects, parts = [], [], [], []
    dropped: Counter[str] = Counter()
    for mat_path, image_id in tqdm(
        list(zip(mat_files, image_ids, strict=True)), desc="pascal-part", disable=None
    ):
        records = _read_mat(mat_path)
        height, width = records[0][1].shape if records else _image_size(image_dir, mat_path)
        _check_image(image_dir, mat_path, height, width)
        image = {
            "id": image_id,
            "file_name": f"{mat_path.stem}.jpg",
            "height": height,
            "width": width,
        }
        images.append(image)
        num_parts_before = len(parts)
        for cls, obj_mask, raw_parts in records:
            tables.annotate(
                mat_path,
                image_id,
                cls,
                obj_mask,
                raw_parts,
                size=(height, width),
                objects=objects,
                parts=parts,
                dropped=dropped,
            )
        if len(parts) > num_parts_before:
            part_images.append(image)
    _write_pair(
        out_json,
        objects_json,
        tables,
        images=images,
        part_images=part_images,
        objects=objects,
        parts=parts,
    )
    # Debug level: the returned summary is what callers (the CLI) report.
    if dropped:
        logger.debug(
            "dropped %d raw part labels matching no pascal_part category: %s",
            sum(dropped.values()),
            ", ".join(f"{k} ({n})" for k, n in sorted(dropped.items())),
        )
    return PascalPartSummary(
        parts_json=out_json,
        objects_json=objects_json,
        num_images=len(images),
        num_part_images=len(part_images),
        num_objects=len(objects),
        num_parts=len(parts),
        dropped=dict(sorted(dropped.items())),
    )


@dataclass(frozen=True)
class _LabelTables:
    """How raw ``.mat`` labels become categories: ``part_table`` maps an object (spaces
    removed) to its ``(mat token, pascal_part category id)`` pairs, ``voc_ids`` a VOC class
    (spaces removed) to its id."""

    part_vocab: Vocabulary
    voc_vocab: Vocabulary
    part_table: dict[str, list[tuple[str, int]]]
    voc_ids: dict[str, int]

    @classmethod
    def build(cls) -> _LabelTables:
        part_vocab, voc_vocab = load_builtin("pascal_part"), load_builtin("voc")
        tokens = pascal_part_mat_tokens()
        table: dict[str, list[tuple[str, int]]] = {}
        for cat in part_vocab:
            table.setdefault(cat.object.replace(" ", ""), []).append((tokens[cat.name], cat.id))
        voc_ids = {cat.name.replace(" ", ""): cat.id for cat in voc_vocab}
        return cls(part_vocab, voc_vocab, table, voc_ids)

    def annotate(
        self,
        mat_path: Path,
        image_id: int,
        cls: str,
        obj_mask: np.ndarray,
        raw_parts: Sequence[tuple[str, np.ndarray]],
        *,
        size: tuple[int, int],
        objects: list[dict],
        parts: list[dict],
        dropped: Counter[str],
    ) -> None:
        """Append the annotations of one object record of ``mat_path`` (an image of ``size``)
        and of its parts."""
        key = cls.replace(" ", "")
        key = _MAT_CLASS_ALIASES.get(key, key).replace(" ", "")
        if key not in self.voc_ids:
            raise InputError(f"{mat_path}: unknown object class {cls!r}")
        if obj_mask.shape != size:
            raise InputError(f"{mat_path}: masks of different sizes in one file")
        if not obj_mask.any():
            logger.debug("%s: empty %s mask skipped", mat_path, cls)
            return
        object_id = len(objects) + 1
        objects.append(
            mask_annotation(
                obj_mask, ann_id=object_id, image_id=image_id, category_id=self.voc_ids[key]
            )
        )
        candidates = self.part_table.get(key, [])
        for raw_name, part_mask in raw_parts:
            cat_id = next((cid for token, cid in candidates if token in raw_name), None)
            if cat_id is None:
                dropped[f"{cls}:{raw_name}"] += 1
                continue
            if not part_mask.any():
                logger.debug("%s: empty %s:%s mask skipped", mat_path, cls, raw_name)
                continue
            ann = mask_annotation(
                part_mask, ann_id=len(parts) + 1, image_id=image_id, category_id=cat_id
            )
            ann["object_id"] = object_id
            parts.append(ann)


def _write_pair(
    out_json: Path,
    objects_json: Path,
    tables: _LabelTables,
    *,
    images: list[dict],
    part_images: list[dict],
    objects: list[dict],
    parts: list[dict],
) -> None:
    """Write the part and the object file as one output set: they share image and object ids,
    so they are replaced together or not at all."""
    for folder in {out_json.parent, objects_json.parent}:
        remove_orphans(folder)
    with OutputSet() as outputs:
        write_coco(
            out_json,
            images=part_images,
            categories=category_records(tables.part_vocab),
            annotations=parts,
            outputs=outputs,
        )
        write_coco(
            objects_json,
            images=images,
            categories=category_records(tables.voc_vocab),
            annotations=objects,
            outputs=outputs,
        )
        outputs.commit()
    logger.debug(
        "wrote %d part annotations on %d images to %s and %d objects on %d images to %s",
        len(parts),
        len(part_images),
        out_json,
        len(objects),
        len(images),
        objects_json,
    )


def _select_mat_files(anno_dir: Path, image_names: Sequence[str] | None) -> list[Path]:
    if image_names is None:
        files = sorted(anno_dir.glob("*.mat"))
        if not files:
            raise MissingFileError(f"{anno_dir}: no .mat files")
        return files
    files = [anno_dir / f"{name}.mat" for name in image_names]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise MissingFileError(
            f"{missing[0]}: annotation not found ({len(missing)} of {len(files)} missing)"
        )
    return files


def _image_ids(stems: Sequence[str]) -> list[int]:
    """VOC names ``2008_000652`` -> ``2008000652`` (the official ids); other names -> 1..N."""
    matches = [_VOC_IMAGE_NAME.match(s) for s in stems]
    if all(matches):
        return [int(m.group(1) + m.group(2)) for m in matches]
    return list(range(1, len(stems) + 1))


def _read_mat(path: Path) -> list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]]:
    """``[(class, object mask [H, W] uint8, [(raw part name, part mask [H, W] uint8)])]``."""
    try:
        anno = scipy.io.loadmat(str(path))["anno"][0, 0]
        records = []
        for obj in anno["objects"].ravel():
            raw_parts = [
                (str(p["part_name"].item()), np.asarray(p["mask"], dtype=np.uint8))
                for p in obj["parts"].ravel()
            ]
            records.append(
                (str(obj["class"].item()), np.asarray(obj["mask"], dtype=np.uint8), raw_parts)
            )
    except (KeyError, IndexError, ValueError, TypeError, OSError, MatReadError) as err:
        raise InputError(f"{path}: not a Pascal-Part annotation ({err})") from None
    return records


def _image_size(image_dir: Path, mat_path: Path) -> tuple[int, int]:
    photo = image_dir / f"{mat_path.stem}.jpg"
    if not photo.is_file():
        raise MissingFileError(f"{photo}: image of {mat_path.name} not found")
    return read_image_size(photo)


def _check_image(image_dir: Path, mat_path: Path, height: int, width: int) -> None:
    size = _image_size(image_dir, mat_path)
    if size != (height, width):
        raise InputError(
            f"{image_dir / (mat_path.stem + '.jpg')}: image is {size[1]}x{size[0]} but its "
            f"annotation {mat_path.name} is {width}x{height}"
        )
