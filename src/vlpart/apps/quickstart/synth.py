"""The synthetic parts world: procedurally drawn objects made of annotated parts.

Each image shows one to three objects — four-legged animals (cat, dog, cow, horse, sheep), birds,
aeroplanes, cars and buses — drawn as coloured polygons in side view over a cluttered background,
with pose, size, colour, texture and occlusion varied per instance. Every class keeps its own part
layout (a cat's pointed ears and long raised tail, a horse's neck and long legs, a bus's row of
windows), so a detector can learn the parts and transfer them across classes. Category names are
those of the ``pascal_part`` taxonomy (parts, with its ids) and the ``voc`` taxonomy (objects),
so the released CLIP embeddings of those vocabularies apply.

:func:`synthesize_world` writes, under ``out_dir``:

* ``images/<id>.png``;
* ``parts_base_train.json`` — part boxes and masks of the *base* objects on training images;
* ``objects_train.json`` — object boxes and masks of every class on training images;
* ``image_labels_train.json`` — the object classes of each training image
  (``images[i]["pos_category_ids"]``);
* ``parts_val.json`` and ``objects_val.json`` — all parts and all objects of held-out images;
* ``world.json`` — the manifest (seed, sizes, classes, their parts, base/novel split, files).

Part annotations carry ``object_id``, the id of their object's annotation in the object file of
the same split. The output is a function of the arguments only (same seed, same bytes).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from vlpart.apps.quickstart.shapes import (
    ObjectTemplate,
    build_object,
    ellipse,
    polygon,
)
from vlpart.core.coco import category_records, mask_annotation, write_coco
from vlpart.core.errors import InputError
from vlpart.core.fileio import atomic_write, write_json_atomic
from vlpart.core.vocab import Category, Vocabulary, load_builtin

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_NOVEL_OBJECTS",
    "DEFAULT_NUM_IMAGES",
    "Placement",
    "WORLD_PARTS",
    "Scene",
    "SceneObject",
    "WorldSummary",
    "background",
    "draw_scene",
    "render_scene",
    "synthesize_world",
]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 256
DEFAULT_NUM_IMAGES = 500
# The paper's Pascal-Part split: parts of dogs and buses are novel, all others base.
DEFAULT_NOVEL_OBJECTS = ("dog", "bus")
DEFAULT_VAL_FRACTION = 0.2
WORLD_FORMAT_VERSION = 1

# Annotated parts of each class (``pascal_part`` names are ``"<class>:<part>"``).
WORLD_PARTS: dict[str, tuple[str, ...]] = {
    "cat": ("head", "torso", "leg", "tail", "ear"),
    "dog": ("head", "torso", "leg", "tail", "ear"),
    "cow": ("head", "torso", "leg", "tail", "ear", "horn"),
    "horse": ("head", "torso", "leg", "tail", "ear", "neck"),
    "sheep": ("head", "torso", "leg", "tail", "ear"),
    "bird": ("head", "beak", "torso", "wing", "tail", "leg"),
    "aeroplane": ("body", "wing", "tail", "wheel"),
    "car": ("wheel", "window", "door", "headlight"),
    "bus": ("wheel", "window", "door", "headlight"),
}
_NUM_OBJECTS_PROBS = (0.45, 0.35, 0.2)  # one, two or three objects per image
_MIN_OBJECT_AREA = 24  # px; less visible than this and an object is not annotated
_MIN_PART_AREA = 6  # px
_PIXEL_NOISE_STD = 5.0
# Huffman-only zlib: PNGs ~40% smaller than uncompressed and fast to write (the noise makes
# dictionary matching slow and useless).
_PNG_OPTIONS = {"compress_level": 1, "compress_type": zlib.Z_HUFFMAN_ONLY}


@dataclass
class SceneObject:
    """An object drawn in a scene, with its visible parts.

    Attributes:
        name: object class (``"dog"``).
        mask: np.ndarray[H, W] bool, visible pixels.
        parts: ``(part name, np.ndarray[H, W] bool)`` per visible part instance.
        placement: index of the object among those :func:`render_scene` drew.
        part_ids: per visible part, its index among the object's part shapes (the same part
            of the same object keeps it from one render to the next).
    """

    name: str
    mask: np.ndarray
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)
    placement: int = -1
    part_ids: list[int] = field(default_factory=list)


@dataclass
class Scene:
    """One rendered image: ``image`` np.ndarray[H, W, 3] uint8 RGB and its visible objects."""

    image: np.ndarray
    objects: list[SceneObject]


@dataclass(frozen=True)
class WorldSummary:
    """What :func:`synthesize_world` wrote: file paths by role and counts."""

    out_dir: Path
    files: dict[str, Path]
    num_train: int
    num_val: int
    num_objects: int
    num_parts: int


# Object length relative to the other classes (a bird is drawn smaller than a bus).
_RELATIVE_SIZE = {
    "cat": 0.8,
    "dog": 0.9,
    "cow": 1.1,
    "horse": 1.1,
    "sheep": 0.95,
    "bird": 0.6,
    "aeroplane": 1.2,
    "car": 1.1,
    "bus": 1.25,
}
_MAX_TILT = {"aeroplane": 0.3, "bird": 0.2}
_DEFAULT_TILT = 0.1


# --- rendering ----------------------------------------------------------------------------------


def draw_scene(
    rng: np.random.Generator,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    classes: Sequence[str] = tuple(WORLD_PARTS),
) -> Scene:
    """Draw one image of the world with objects of ``classes``.

    Returns:
        The image and its visible objects (masks of at least a few pixels) with their parts.
    """
    size = image_size
    image, ids = background(rng, size)
    num_objects = int(rng.choice(len(_NUM_OBJECTS_PROBS), p=_NUM_OBJECTS_PROBS)) + 1
    placed = []
    for _ in range(num_objects):
        name = str(rng.choice(list(classes)))
        span = (0.4, 0.8) if num_objects == 1 else (0.28, 0.58)
        length = size * rng.uniform(*span) * _RELATIVE_SIZE[name]
        margin = min(length * 0.4, size / 2)
        centre = (rng.uniform(margin, size - margin), rng.uniform(size * 0.3, size * 0.78))
        placed.append((centre[1], name, length, centre))
    placements = []
    for _, name, length, centre in sorted(placed, key=lambda p: p[0]):  # far (higher) first
        obj = build_object(name, rng)
        tilt = rng.uniform(-1, 1) * _MAX_TILT.get(name, _DEFAULT_TILT)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        placements.append(Placement(obj, centre, length, tilt, flip, rng.uniform(0.9, 1.1)))
    return render_scene(rng, image, ids, placements)


@dataclass(frozen=True)
class Placement:
    """Where and how one object is drawn: ``centre`` ``(x, y)`` pixels, ``length`` pixels,
    ``tilt`` radians, ``flip`` ±1 (facing), ``stretch`` (height over length factor)."""

    obj: ObjectTemplate
    centre: tuple[float, float]
    length: float
    tilt: float = 0.0
    flip: float = 1.0
    stretch: float = 1.0


def render_scene(
    rng: np.random.Generator,
    image: Image.Image,
    ids: Image.Image,
    placements: Sequence[Placement],
    *,
    occluder_probability: float = 0.25,
) -> Scene:
    """Draw ``placements`` in order (later ones in front) over ``image`` (RGB) and its id map
    ``ids`` (mode ``L``, zeros; both are drawn on), maybe an occluder, textures and pixel noise.

    Returns:
        The image and its visible objects; ``SceneObject.placement`` is the index of each in
        ``placements`` (objects hidden or outside the image are left out).
    """
    size = image.size[0]
    draw, id_draw = ImageDraw.Draw(image), ImageDraw.Draw(ids)
    slots: list[tuple[int, str | None]] = []  # id-map value - 1 -> (object, part)
    for obj_index, place in enumerate(placements):
        obj, length = place.obj, place.length
        cos, sin = math.cos(place.tilt), math.sin(place.tilt)
        affine = np.array([[cos, -sin], [sin, cos]])
        affine = affine @ np.diag([place.flip * length, length * place.stretch])
        for shape in obj.shapes:
            pts = shape.points @ affine.T + np.asarray(place.centre)
            xy = [tuple(p) for p in pts.tolist()]
            if not shape.decor and not shape.extends:
                slots.append((obj_index, shape.part))
            slot = len(slots)
            assert slot < 256, "the id map is 8-bit"  # at most 3 objects of < 20 shapes
            width = max(1, round(shape.width * length))
            for canvas, fill in ((draw, shape.colour), (id_draw, slot)):
                if canvas is id_draw and shape.decor:
                    continue
                if shape.width > 0:
                    canvas.line(xy, fill=fill, width=width, joint="curve")
                else:
                    canvas.polygon(xy, fill=fill)
    if rng.random() < occluder_probability:
        _occluder(rng, size, draw, id_draw)
    pixels = np.asarray(image, dtype=np.float32).copy()
    id_map = np.asarray(ids)
    # Masks are built column-major (a transposed C-order map) so RLE encoding needs no copy.
    id_map_t = np.ascontiguousarray(id_map.T)
    areas = np.bincount(id_map.ravel(), minlength=len(slots) + 1)
    scene_objects = []
    for obj_index, place in enumerate(placements):
        obj = place.obj
        obj_slots = [i + 1 for i, (o, _) in enumerate(slots) if o == obj_index]
        if areas[obj_slots].sum() < _MIN_OBJECT_AREA:
            continue
        textured = [
            i + 1 for i, (o, p) in enumerate(slots) if o == obj_index and p in obj.textured_parts
        ]
        if textured:
            _apply_texture(rng, pixels, np.isin(id_map, textured), obj)
        part_slots = [slot for slot in obj_slots if slots[slot - 1][1] is not None]
        visible = [k for k, slot in enumerate(part_slots) if areas[slot] >= _MIN_PART_AREA]
        parts = [(slots[part_slots[k] - 1][1], (id_map_t == part_slots[k]).T) for k in visible]
        mask = np.isin(id_map_t, obj_slots).T
        scene_objects.append(
            SceneObject(obj.name, mask, parts, placement=obj_index, part_ids=visible)
        )
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * _PIXEL_NOISE_STD
    return Scene(np.clip(pixels, 0, 255).astype(np.uint8), scene_objects)


def background(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    """A sky/wall gradient over a ground band with unlabelled clutter; and an empty id map."""
    top, bottom = rng.integers(40, 256, 3), rng.integers(20, 230, 3)
    ground = rng.integers(30, 200, 3)
    horizon = int(size * rng.uniform(0.3, 0.7))
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
    rows = top[None, :] * (1 - t) + bottom[None, :] * t
    rows[horizon:] = (
        ground * rng.uniform(0.8, 1.0) + (rows[horizon:] - rows[horizon:].mean(0)) * 0.2
    )
    pixels = np.broadcast_to(rows[:, None, :], (size, size, 3)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 6))):
        cx, cy = rng.uniform(0, size, 2)
        r = size * rng.uniform(0.03, 0.18)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            pts = ellipse(cx, cy, r, r * rng.uniform(0.4, 1.5), rng.uniform(0, math.pi))
        else:
            pts = np.stack([cx + rng.uniform(-r, r, 5), cy + rng.uniform(-r, r, 5)], axis=1)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=colour)
    return image, Image.new("L", (size, size), 0)


def _occluder(
    rng: np.random.Generator, size: int, draw: ImageDraw.ImageDraw, id_draw: ImageDraw.ImageDraw
) -> None:
    """An unlabelled foreground post or bush hiding part of whatever is behind it."""
    colour = tuple(int(c) for c in rng.integers(20, 200, 3))
    if rng.random() < 0.5:
        x = rng.uniform(0, size)
        w = size * rng.uniform(0.03, 0.08)
        pts = polygon((x, -1), (x + w, -1), (x + w, size + 1), (x, size + 1))
    else:
        r = size * rng.uniform(0.08, 0.18)
        pts = ellipse(rng.uniform(0, size), size - r * rng.uniform(0.2, 1.0), r * 1.4, r)
    xy = [tuple(p) for p in pts.tolist()]
    draw.polygon(xy, fill=colour)
    id_draw.polygon(xy, fill=0)


def _apply_texture(
    rng: np.random.Generator, pixels: np.ndarray, mask: np.ndarray, obj: ObjectTemplate
) -> None:
    """Paint the object's texture over its ``mask`` pixels of ``pixels`` (in place)."""
    ys, xs = np.nonzero(mask)
    if obj.texture == "plain" or len(ys) == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    scale = max(y1 - y0, x1 - x0)
    region = mask[y0:y1, x0:x1]
    crop = pixels[y0:y1, x0:x1]
    colour = np.asarray(obj.texture_colour, dtype=np.float32)
    if obj.texture == "stripes":
        angle = rng.uniform(-0.4, 0.4)
        period = scale * rng.uniform(0.07, 0.11)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        paint = region & (np.sin(2 * math.pi * phase) > 0.35)
        crop[paint] = crop[paint] * 0.45 + colour * 0.55
    elif obj.texture == "wool":
        period = scale * rng.uniform(0.05, 0.08)
        bumps = np.sin(xx / period * 2.1) * np.sin(yy / period * 1.9)
        crop[region] *= (0.86 + 0.14 * bumps[region])[:, None]
    else:  # spots, patches: a few blobs
        num, radius = (
            (int(rng.integers(3, 7)), 0.16)
            if obj.texture == "spots"
            else (int(rng.integers(1, 3)), 0.3)
        )
        paint = np.zeros_like(region)
        for _ in range(num):
            cy, cx = rng.uniform(y0, y1), rng.uniform(x0, x1)
            ry, rx = scale * radius * rng.uniform(0.5, 1.0), scale * radius * rng.uniform(0.5, 1.2)
            paint |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        paint &= region
        crop[paint] = colour


# --- the world on disk --------------------------------------------------------------------------


def synthesize_world(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_images: int = DEFAULT_NUM_IMAGES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    novel_objects: Sequence[str] = DEFAULT_NOVEL_OBJECTS,
) -> WorldSummary:
    """Render ``num_images`` images and write the world's files (see the module docstring).

    The last ``round(num_images * val_fraction)`` images (at least one) are held out for
    validation. Image ``i`` is drawn from ``np.random.default_rng([seed, i])``.

    Raises:
        ValueError: too few images, a tiny image size, a bad fraction or an unknown novel class.
    """
    _check_world(num_images, image_size, val_fraction, novel_objects)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    num_val = min(num_images - 1, max(1, round(num_images * val_fraction)))
    num_train = num_images - num_val
    novel = tuple(o for o in WORLD_PARTS if o in set(novel_objects))
    base = tuple(o for o in WORLD_PARTS if o not in novel)
    ids = _WorldIds.of(novel)
    records = {split: {"images": [], "objects": [], "parts": []} for split in ("train", "val")}
    for i in tqdm(range(num_images), desc="synthetic world", disable=None):
        scene = draw_scene(np.random.default_rng([seed, i]), image_size=image_size)
        image_id = i + 1
        file_name = f"images/{image_id:06d}.png"
        picture = Image.fromarray(scene.image)
        atomic_write(
            out_dir / file_name, lambda tmp, im=picture: im.save(tmp, "PNG", **_PNG_OPTIONS)
        )
        rec = records["train" if i < num_train else "val"]
        rec["images"].append(
            {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size}
        )
        _annotate(scene, image_id, ids, rec)
    files = _coco_files(records["train"], records["val"], ids, base)
    paths = {role: out_dir / f"{role}.json" for role in files}
    for role, data in files.items():
        write_coco(paths[role], **data)
    manifest = {
        "format": WORLD_FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        "num_train": num_train,
        "num_val": num_val,
        "objects": {o: list(p) for o, p in WORLD_PARTS.items()},
        "base_objects": list(base),
        "novel_objects": list(novel),
        "part_taxonomy": "pascal_part",
        "object_taxonomy": "voc",
        "files": {role: p.name for role, p in paths.items()},
    }
    paths["world"] = out_dir / "world.json"
    write_json_atomic(manifest, paths["world"])
    num_objects = sum(len(r["objects"]) for r in records.values())
    num_parts = sum(len(r["parts"]) for r in records.values())
    logger.info(
        "wrote %d train + %d val images (%d objects, %d parts) to %s",
        num_train,
        num_val,
        num_objects,
        num_parts,
        out_dir,
    )
    return WorldSummary(
        out_dir=out_dir,
        files=paths,
        num_train=num_train,
        num_val=num_val,
        num_objects=num_objects,
        num_parts=num_parts,
    )


def _check_world(
    num_images: int, image_size: int, val_fraction: float, novel_objects: Sequence[str]
) -> None:
    if num_images < 2:
        raise InputError(f"the world needs at least 2 images (train + val), got {num_images}")
    if image_size < 32:
        raise InputError(f"image size must be at least 32 px, got {image_size}")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    unknown = sorted(set(novel_objects) - set(WORLD_PARTS))
    if unknown:
        raise InputError(
            f"unknown novel object(s) {unknown}; the world has {', '.join(WORLD_PARTS)}"
        )


@dataclass(frozen=True)
class _WorldIds:
    """Category ids of the world's parts (``pascal_part``) and objects (``voc``), and the set
    of novel objects."""

    parts: dict[str, int]
    objects: dict[str, int]
    novel: tuple[str, ...]

    @classmethod
    def of(cls, novel: tuple[str, ...]) -> _WorldIds:
        part_vocab, object_vocab = load_builtin("pascal_part"), load_builtin("voc")
        parts = {
            f"{o}:{p}": part_vocab[part_vocab.index(f"{o}:{p}")].id
            for o, names in WORLD_PARTS.items()
            for p in names
        }
        objects = {o: object_vocab[object_vocab.index(o)].id for o in WORLD_PARTS}
        return cls(parts, objects, novel)

    def split_of(self, obj: str) -> str:
        return "novel" if obj in self.novel else "base"

    def part_categories(self, objects: Sequence[str]) -> list[dict]:
        cats = [
            Category(
                name=f"{o}:{p}", object=o, part=p, id=self.parts[f"{o}:{p}"], split=self.split_of(o)
            )
            for o in objects
            for p in WORLD_PARTS[o]
        ]
        return category_records(Vocabulary(tuple(sorted(cats, key=lambda c: c.id))))

    def object_categories(self) -> list[dict]:
        cats = (
            Category(name=o, object=o, id=self.objects[o], split=self.split_of(o))
            for o in WORLD_PARTS
        )
        return category_records(Vocabulary(tuple(sorted(cats, key=lambda c: c.id))))


def _annotate(scene: Scene, image_id: int, ids: _WorldIds, rec: dict[str, list]) -> None:
    """Append the object and part annotations of ``scene`` to the split's records ``rec``."""
    for obj in scene.objects:
        object_ann = mask_annotation(
            obj.mask,
            ann_id=len(rec["objects"]) + 1,
            image_id=image_id,
            category_id=ids.objects[obj.name],
        )
        rec["objects"].append(object_ann)
        for part, part_mask in obj.parts:
            ann = mask_annotation(
                part_mask,
                ann_id=len(rec["parts"]) + 1,
                image_id=image_id,
                category_id=ids.parts[f"{obj.name}:{part}"],
            )
            ann["object_id"] = object_ann["id"]
            rec["parts"].append(ann)


def _coco_files(
    train: dict[str, list], val: dict[str, list], ids: _WorldIds, base: tuple[str, ...]
) -> dict[str, dict]:
    """The COCO files of the world by role (``write_coco`` keyword arguments)."""
    base_part_ids = {ids.parts[f"{o}:{p}"] for o in base for p in WORLD_PARTS[o]}
    label_ids: dict[int, set[int]] = {img["id"]: set() for img in train["images"]}
    for ann in train["objects"]:
        label_ids[ann["image_id"]].add(ann["category_id"])
    object_categories = ids.object_categories()
    return {
        "parts_base_train": {
            "images": train["images"],
            "annotations": [a for a in train["parts"] if a["category_id"] in base_part_ids],
            "categories": ids.part_categories(base),
        },
        "objects_train": {
            "images": train["images"],
            "annotations": train["objects"],
            "categories": object_categories,
        },
        "image_labels_train": {
            "images": [
                dict(img, pos_category_ids=sorted(label_ids[img["id"]])) for img in train["images"]
            ],
            "categories": object_categories,
        },
        "parts_val": {
            "images": val["images"],
            "annotations": val["parts"],
            "categories": ids.part_categories(tuple(WORLD_PARTS)),
        },
        "objects_val": {
            "images": val["images"],
            "annotations": val["objects"],
            "categories": object_categories,
        },
    }
