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

from vlpart.core.coco import category_records, mask_annotation, write_coco
from vlpart.core.errors import InputError
from vlpart.core.fileio import write_json_atomic
from vlpart.core.vocab import Category, Vocabulary, load_builtin

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_NOVEL_OBJECTS",
    "DEFAULT_NUM_IMAGES",
    "WORLD_PARTS",
    "Scene",
    "SceneObject",
    "WorldSummary",
    "draw_scene",
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

Colour = tuple[int, int, int]


@dataclass
class _Shape:
    """One drawing primitive in an object's canonical frame (length 1, facing right, y down).

    ``part`` names the annotated part it belongs to (``None``: object pixels without a part,
    e.g. a car's body). ``width > 0`` draws a polyline of that width instead of a polygon.
    ``extends`` continues the previous shape's part instance; ``decor`` paints the image only
    (a wheel's hub stays wheel pixels).
    """

    part: str | None
    points: np.ndarray
    colour: Colour
    width: float = 0.0
    extends: bool = False
    decor: bool = False


@dataclass
class _Object:
    name: str
    shapes: list[_Shape]
    texture: str
    textured_parts: tuple[str, ...] = ()
    texture_colour: Colour = (0, 0, 0)


@dataclass
class SceneObject:
    """An object drawn in a scene, with its visible parts.

    Attributes:
        name: object class (``"dog"``).
        mask: np.ndarray[H, W] bool, visible pixels.
        parts: ``(part name, np.ndarray[H, W] bool)`` per visible part instance.
    """

    name: str
    mask: np.ndarray
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)


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


# --- geometry -----------------------------------------------------------------------------------


def _ellipse(
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float = 0.0,
    *,
    power: float = 2.0,
    num: int = 24,
) -> np.ndarray:
    """Points of a (super-)ellipse rotated by ``angle`` radians; ``power > 2`` is boxier."""
    t = np.linspace(0.0, 2.0 * math.pi, num, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = rx * np.sign(c) * np.abs(c) ** (2.0 / power)
    y = ry * np.sign(s) * np.abs(s) ** (2.0 / power)
    ca, sa = math.cos(angle), math.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def _limb(x0: float, y0: float, length: float, angle: float, w0: float, w1: float) -> np.ndarray:
    """Tapered quad from ``(x0, y0)`` along ``angle`` (0 = straight down), widths ``w0 -> w1``."""
    dx, dy = math.sin(angle), math.cos(angle)
    px, py = dy, -dx  # unit normal
    x1, y1 = x0 + length * dx, y0 + length * dy
    return np.array(
        [
            [x0 - px * w0 / 2, y0 - py * w0 / 2],
            [x0 + px * w0 / 2, y0 + py * w0 / 2],
            [x1 + px * w1 / 2, y1 + py * w1 / 2],
            [x1 - px * w1 / 2, y1 - py * w1 / 2],
        ]
    )


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=np.float64)


def _rotate_about(points: np.ndarray, cx: float, cy: float, angle: float) -> np.ndarray:
    ca, sa = math.cos(angle), math.sin(angle)
    x, y = points[:, 0] - cx, points[:, 1] - cy
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def _shade(colour: Colour, factor: float) -> Colour:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)  # type: ignore[return-value]


def _jitter(rng: np.random.Generator, colour: Colour, amount: int = 18) -> Colour:
    return tuple(
        int(v) for v in np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    )  # type: ignore[return-value]


# --- object templates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Quadruped:
    torso: tuple[float, float, float]  # rx, ry, superellipse power
    leg: tuple[float, float]  # length below the torso, width
    head: tuple[float, float, float, float, float]  # cx, cy, rx, ry, angle
    ears: str
    tail: str
    colours: tuple[Colour, ...]
    textures: tuple[str, ...]
    textured_parts: tuple[str, ...]
    texture_colours: tuple[Colour, ...] = ((25, 20, 20),)
    head_colour: Colour | None = None
    neck: bool = False
    horns: bool = False
    snout: bool = False


_QUADRUPEDS = {
    "cat": _Quadruped(
        torso=(0.30, 0.12, 2.0),
        leg=(0.20, 0.05),
        head=(0.36, -0.17, 0.12, 0.11, 0.0),
        ears="pointed",
        tail="raised_long",
        colours=((215, 130, 50), (130, 130, 135), (40, 38, 40), (225, 220, 210), (150, 105, 70)),
        textures=("stripes", "plain"),
        textured_parts=("torso", "head", "tail", "leg"),
        texture_colours=((60, 45, 35),),
    ),
    "dog": _Quadruped(
        torso=(0.32, 0.14, 2.2),
        leg=(0.27, 0.065),
        head=(0.40, -0.19, 0.11, 0.10, 0.15),
        ears="floppy",
        tail="raised_short",
        snout=True,
        colours=((140, 90, 45), (205, 160, 85), (45, 40, 38), (230, 225, 215), (120, 115, 110)),
        textures=("patches", "plain"),
        textured_parts=("torso", "head"),
        texture_colours=((235, 230, 220), (50, 40, 35)),
    ),
    "cow": _Quadruped(
        torso=(0.40, 0.19, 3.0),
        leg=(0.27, 0.08),
        head=(0.47, -0.09, 0.09, 0.14, -0.35),
        ears="sideways",
        tail="hanging_thin",
        horns=True,
        colours=((235, 232, 225), (120, 75, 40), (40, 35, 35)),
        textures=("spots", "plain"),
        textured_parts=("torso", "head"),
        texture_colours=((30, 28, 28), (110, 70, 40)),
    ),
    "horse": _Quadruped(
        torso=(0.36, 0.15, 2.4),
        leg=(0.42, 0.055),
        head=(0.57, -0.41, 0.065, 0.15, -0.75),
        ears="small",
        tail="hanging_thick",
        neck=True,
        colours=((125, 75, 40), (50, 35, 28), (215, 210, 200), (150, 140, 130), (170, 100, 55)),
        textures=("plain",),
        textured_parts=(),
    ),
    "sheep": _Quadruped(
        torso=(0.36, 0.21, 2.0),
        leg=(0.19, 0.055),
        head=(0.42, -0.13, 0.08, 0.11, -0.25),
        ears="sideways_small",
        tail="stub",
        head_colour=(55, 45, 40),
        colours=((235, 230, 210), (215, 205, 185), (190, 185, 180)),
        textures=("wool",),
        textured_parts=("torso",),
    ),
}


def _quadruped(name: str, rng: np.random.Generator) -> _Object:
    spec = _QUADRUPEDS[name]
    body = _jitter(rng, spec.colours[rng.integers(len(spec.colours))])
    head_colour = _jitter(rng, spec.head_colour, 10) if spec.head_colour else body
    leg_colour = head_colour if spec.head_colour else _shade(body, 0.92)
    rx, ry, power = spec.torso
    rx *= rng.uniform(0.92, 1.08)
    ry *= rng.uniform(0.9, 1.1)
    leg_len, leg_w = spec.leg[0] * rng.uniform(0.9, 1.12), spec.leg[1]
    hx, hy, hrx, hry, hangle = spec.head
    hangle += rng.uniform(-0.2, 0.2)
    hy += rng.uniform(-0.04, 0.04)
    shapes: list[_Shape] = []

    def leg(x: float, far: bool) -> _Shape:
        angle = rng.uniform(-0.35, 0.35)
        colour = _shade(leg_colour, 0.72 if far else 1.0)
        top = ry * 0.3
        return _Shape(
            "leg", _limb(x, top, leg_len + ry * 0.7, angle, leg_w * 1.25, leg_w * 0.85), colour
        )

    stride = rng.uniform(0.02, 0.08)
    for x in (rx * 0.62 - stride, -rx * 0.62 + stride):  # far side, behind the torso
        shapes.append(leg(x, far=True))
    shapes.extend(_tail(spec.tail, rx, ry, _shade(body, 0.95), rng))
    shapes.append(_Shape("torso", _ellipse(0.0, 0.0, rx, ry, power=power), body))
    for x in (rx * 0.62, -rx * 0.62):
        shapes.append(leg(x, far=False))
    if spec.neck:
        shapes.append(
            _Shape(
                "neck",
                _poly(
                    (rx * 0.45, -ry * 0.6),
                    (rx * 0.95, -ry * 0.1),
                    (hx + 0.03, hy + 0.06),
                    (hx - 0.08, hy - 0.07),
                ),
                _shade(body, 0.97),
            )
        )
    if spec.horns:
        for dx in (-0.03, 0.03):
            horn = _limb(hx + dx, hy - hry * 0.7, hry * 0.6, math.pi * 0.85 + dx * 8, 0.03, 0.012)
            shapes.append(_Shape("horn", _rotate_about(horn, hx, hy, hangle), (225, 215, 180)))
    ear_shapes = _ears(spec.ears, hx, hy, hrx, hry, hangle, _shade(head_colour, 0.8))
    floppy = spec.ears == "floppy"
    if not floppy:
        shapes.extend(ear_shapes)
    shapes.append(_Shape("head", _ellipse(hx, hy, hrx, hry, hangle), head_colour))
    if spec.snout:
        snout = _ellipse(hx + hrx * 0.95, hy + hry * 0.35, hrx * 0.65, hry * 0.5, hangle)
        shapes.append(
            _Shape("head", _rotate_about(snout, hx, hy, hangle), head_colour, extends=True)
        )
    if floppy:
        shapes.extend(ear_shapes)
    eye = _rotate_about(_poly((hx + hrx * 0.35, hy - hry * 0.25)), hx, hy, hangle)[0]
    shapes.append(
        _Shape("head", _ellipse(eye[0], eye[1], 0.014, 0.014, num=8), (15, 15, 15), decor=True)
    )
    return _Object(
        name,
        shapes,
        texture=str(rng.choice(spec.textures)),
        textured_parts=spec.textured_parts,
        texture_colour=spec.texture_colours[rng.integers(len(spec.texture_colours))],
    )


def _tail(
    kind: str, rx: float, ry: float, colour: Colour, rng: np.random.Generator
) -> list[_Shape]:
    bend = rng.uniform(-0.05, 0.05)
    x0 = -rx * 0.92
    if kind == "raised_long":
        pts, width = (
            _poly(
                (x0, -ry * 0.2),
                (x0 - 0.1, -ry - 0.02),
                (x0 - 0.12 + bend, -ry - 0.15),
                (x0 - 0.05 + bend, -ry - 0.24),
            ),
            0.035,
        )
    elif kind == "raised_short":
        pts, width = (
            _poly((x0, -ry * 0.4), (x0 - 0.08, -ry - 0.04), (x0 - 0.06 + bend, -ry - 0.13)),
            0.045,
        )
    elif kind == "hanging_thin":
        pts = _poly((x0 + 0.02, -ry * 0.6), (x0 - 0.03, -ry * 0.1), (x0 - 0.02 + bend, ry + 0.12))
        tuft = _ellipse(pts[-1, 0], pts[-1, 1] + 0.02, 0.025, 0.04)
        return [
            _Shape("tail", pts, colour, width=0.018),
            _Shape("tail", tuft, _shade(colour, 0.6), extends=True),
        ]
    elif kind == "hanging_thick":
        pts, width = (
            _poly((x0 + 0.02, -ry * 0.6), (x0 - 0.08, -ry * 0.1), (x0 - 0.08 + bend, ry + 0.2)),
            0.07,
        )
        colour = _shade(colour, 0.6)
    else:  # stub
        pts, width = _poly((x0 + 0.02, -ry * 0.3), (x0 - 0.06, -ry * 0.1 + bend)), 0.06
    return [_Shape("tail", pts, colour, width=width)]


def _ears(
    kind: str, hx: float, hy: float, hrx: float, hry: float, angle: float, colour: Colour
) -> list[_Shape]:
    if kind == "pointed":
        ears = [
            _poly(
                (hx + dx - hrx * 0.3, hy - hry * 0.5),
                (hx + dx + hrx * 0.3, hy - hry * 0.6),
                (hx + dx, hy - hry * 1.55),
            )
            for dx in (-hrx * 0.5, hrx * 0.4)
        ]
    elif kind == "floppy":
        ears = [_ellipse(hx - hrx * 0.45, hy + hry * 0.25, hrx * 0.3, hry * 0.75, 0.35)]
    elif kind == "sideways":
        ears = [_ellipse(hx - hrx * 1.1, hy - hry * 0.55, hrx * 0.65, hry * 0.22, 0.3)]
    elif kind == "sideways_small":
        ears = [_ellipse(hx - hrx * 0.95, hy - hry * 0.5, hrx * 0.55, hry * 0.22, 0.4)]
    else:  # small, upright (horse)
        ears = [
            _poly(
                (hx - hrx * 0.5, hy - hry * 0.85),
                (hx + hrx * 0.3, hy - hry * 0.9),
                (hx - hrx * 0.2, hy - hry * 1.35),
            )
        ]
    return [_Shape("ear", _rotate_about(e, hx, hy, angle), colour) for e in ears]


_BIRD_COLOURS = (
    (90, 70, 50),
    (60, 90, 160),
    (200, 60, 40),
    (230, 200, 60),
    (40, 40, 45),
    (150, 150, 150),
)
_VEHICLE_COLOURS = (
    (200, 30, 35),
    (30, 70, 170),
    (235, 200, 40),
    (235, 235, 235),
    (40, 130, 60),
    (70, 70, 75),
    (180, 180, 185),
)
_GLASS = ((60, 90, 120), (150, 190, 215), (40, 50, 60))
_TYRE = (28, 28, 30)


def _bird(rng: np.random.Generator) -> _Object:
    body = _jitter(rng, _BIRD_COLOURS[rng.integers(len(_BIRD_COLOURS))])
    leg_colour = (200, 150, 60)
    tilt = rng.uniform(-0.35, 0.05)
    shapes = [
        _Shape("tail", _poly((-0.22, -0.02), (-0.5, -0.1), (-0.48, 0.06)), _shade(body, 0.8)),
        *[
            _Shape("leg", _poly((x, 0.1), (x - 0.04, 0.34)), leg_colour, width=0.025)
            for x in (-0.02, 0.07)
        ],
        _Shape("torso", _ellipse(0.0, 0.0, 0.28, 0.16, tilt), body),
        _Shape("wing", _ellipse(-0.06, -0.02, 0.2, 0.085, tilt - 0.2), _shade(body, 0.7)),
        _Shape("head", _ellipse(0.28, -0.17, 0.11, 0.1), _shade(body, 1.1)),
        _Shape("beak", _poly((0.36, -0.2), (0.37, -0.13), (0.5, -0.16)), (235, 170, 40)),
        _Shape("head", _ellipse(0.31, -0.2, 0.018, 0.018, num=8), (10, 10, 10), decor=True),
    ]
    return _Object("bird", shapes, texture="plain")


def _aeroplane(rng: np.random.Generator) -> _Object:
    body = _jitter(rng, _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))], 10)
    shapes = [
        _Shape(
            "wing",
            _poly((0.0, -0.03), (0.08, -0.03), (-0.12, -0.14), (-0.17, -0.14)),
            _shade(body, 0.7),
        ),
        _Shape("body", _ellipse(0.0, 0.0, 0.5, 0.065, power=2.6), body),
        _Shape(
            "tail",
            _poly((-0.47, -0.02), (-0.36, -0.03), (-0.45, -0.25), (-0.5, -0.25)),
            _shade(body, 0.9),
        ),
        _Shape(
            "wing",
            _poly((-0.04, 0.01), (0.1, 0.01), (-0.1, 0.24), (-0.18, 0.24)),
            _shade(body, 0.85),
        ),
    ]
    for i in range(7):
        shapes.append(
            _Shape(
                "body", _ellipse(0.3 - 0.09 * i, -0.015, 0.015, 0.015, num=8), _GLASS[0], decor=True
            )
        )
    if rng.random() < 0.6:  # landing gear out
        for x in (-0.25, 0.3):
            shapes.append(_Shape("wheel", _ellipse(x, 0.11, 0.035, 0.035, num=12), _TYRE))
    return _Object("aeroplane", shapes, texture="plain")


def _car(rng: np.random.Generator) -> _Object:
    body = _jitter(rng, _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))], 10)
    glass = _GLASS[rng.integers(len(_GLASS))]
    shapes = [
        _Shape(
            None,
            _poly(
                (-0.5, 0.12),
                (-0.5, -0.02),
                (-0.42, -0.07),
                (0.3, -0.08),
                (0.48, -0.03),
                (0.5, 0.05),
                (0.5, 0.12),
            ),
            body,
        ),
        _Shape(None, _poly((-0.33, -0.06), (-0.22, -0.25), (0.1, -0.25), (0.25, -0.07)), body),
        _Shape(
            "window", _poly((-0.28, -0.08), (-0.19, -0.22), (-0.06, -0.22), (-0.06, -0.08)), glass
        ),
        _Shape("window", _poly((-0.02, -0.08), (-0.02, -0.22), (0.08, -0.22), (0.2, -0.08)), glass),
        _Shape(
            "door",
            _poly((-0.27, -0.05), (-0.04, -0.05), (-0.04, 0.1), (-0.27, 0.1)),
            _shade(body, 0.85),
        ),
        _Shape(
            "door",
            _poly((-0.02, -0.05), (0.21, -0.05), (0.21, 0.1), (-0.02, 0.1)),
            _shade(body, 0.85),
        ),
        _Shape("headlight", _ellipse(0.465, 0.0, 0.035, 0.028), (250, 240, 170)),
    ]
    for x in (-0.3, 0.3):
        shapes.append(_Shape("wheel", _ellipse(x, 0.12, 0.1, 0.1), _TYRE))
        shapes.append(
            _Shape("wheel", _ellipse(x, 0.12, 0.045, 0.045, num=12), (170, 170, 175), decor=True)
        )
    return _Object("car", shapes, texture="plain")


def _bus(rng: np.random.Generator) -> _Object:
    body = _jitter(rng, _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))], 10)
    glass = _GLASS[rng.integers(len(_GLASS))]
    shapes = [
        _Shape(
            None,
            _poly(
                (-0.5, -0.22),
                (-0.47, -0.25),
                (0.47, -0.25),
                (0.5, -0.22),
                (0.5, 0.15),
                (-0.5, 0.15),
            ),
            body,
        ),
        _Shape(
            None,
            _poly((-0.5, 0.02), (0.5, 0.02), (0.5, 0.05), (-0.5, 0.05)),
            _shade(body, 0.6),
            decor=True,
        ),
    ]
    num_windows = int(rng.integers(3, 6))
    step = 0.72 / num_windows
    for i in range(num_windows):
        x0 = -0.45 + i * step
        shapes.append(
            _Shape(
                "window",
                _poly(
                    (x0, -0.2), (x0 + step - 0.025, -0.2), (x0 + step - 0.025, -0.04), (x0, -0.04)
                ),
                glass,
            )
        )
    shapes.append(
        _Shape(
            "door",
            _poly((0.31, -0.2), (0.43, -0.2), (0.43, 0.13), (0.31, 0.13)),
            _shade(glass, 0.8),
        )
    )
    shapes.append(_Shape("headlight", _ellipse(0.47, 0.09, 0.025, 0.025), (250, 240, 170)))
    for x in (-0.3, 0.22):
        shapes.append(_Shape("wheel", _ellipse(x, 0.15, 0.085, 0.085), _TYRE))
        shapes.append(
            _Shape("wheel", _ellipse(x, 0.15, 0.04, 0.04, num=12), (170, 170, 175), decor=True)
        )
    return _Object("bus", shapes, texture="plain")


def _build_object(name: str, rng: np.random.Generator) -> _Object:
    if name in _QUADRUPEDS:
        return _quadruped(name, rng)
    return {"bird": _bird, "aeroplane": _aeroplane, "car": _car, "bus": _bus}[name](rng)


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
    image, ids = _background(rng, size)
    draw, id_draw = ImageDraw.Draw(image), ImageDraw.Draw(ids)
    num_objects = int(rng.choice(len(_NUM_OBJECTS_PROBS), p=_NUM_OBJECTS_PROBS)) + 1
    placed = []
    for _ in range(num_objects):
        name = str(rng.choice(list(classes)))
        span = (0.4, 0.8) if num_objects == 1 else (0.28, 0.58)
        length = size * rng.uniform(*span) * _RELATIVE_SIZE[name]
        margin = min(length * 0.4, size / 2)
        centre = (rng.uniform(margin, size - margin), rng.uniform(size * 0.3, size * 0.78))
        placed.append((centre[1], name, length, centre))
    slots: list[tuple[int, str | None]] = []  # id-map value - 1 -> (object, part)
    objects = []
    for _, name, length, centre in sorted(placed, key=lambda p: p[0]):  # far (higher) first
        obj = _build_object(name, rng)
        tilt = rng.uniform(-1, 1) * _MAX_TILT.get(name, _DEFAULT_TILT)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        stretch = rng.uniform(0.9, 1.1)
        affine = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
        affine = affine @ np.diag([flip * length, length * stretch])
        obj_index = len(objects)
        objects.append(obj)
        for shape in obj.shapes:
            pts = shape.points @ affine.T + np.asarray(centre)
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
    if rng.random() < 0.25:
        _occluder(rng, size, draw, id_draw)
    pixels = np.asarray(image, dtype=np.float32).copy()
    id_map = np.asarray(ids)
    # Masks are built column-major (a transposed C-order map) so RLE encoding needs no copy.
    id_map_t = np.ascontiguousarray(id_map.T)
    areas = np.bincount(id_map.ravel(), minlength=len(slots) + 1)
    scene_objects = []
    for obj_index, obj in enumerate(objects):
        obj_slots = [i + 1 for i, (o, _) in enumerate(slots) if o == obj_index]
        if areas[obj_slots].sum() < _MIN_OBJECT_AREA:
            continue
        textured = [
            i + 1 for i, (o, p) in enumerate(slots) if o == obj_index and p in obj.textured_parts
        ]
        if textured:
            _apply_texture(rng, pixels, np.isin(id_map, textured), obj)
        parts = [
            (part, (id_map_t == slot).T)
            for slot in obj_slots
            if (part := slots[slot - 1][1]) is not None and areas[slot] >= _MIN_PART_AREA
        ]
        mask = np.isin(id_map_t, obj_slots).T
        scene_objects.append(SceneObject(obj.name, mask, parts))
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * _PIXEL_NOISE_STD
    return Scene(np.clip(pixels, 0, 255).astype(np.uint8), scene_objects)


def _background(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
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
            pts = _ellipse(cx, cy, r, r * rng.uniform(0.4, 1.5), rng.uniform(0, math.pi))
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
        pts = _poly((x, -1), (x + w, -1), (x + w, size + 1), (x, size + 1))
    else:
        r = size * rng.uniform(0.08, 0.18)
        pts = _ellipse(rng.uniform(0, size), size - r * rng.uniform(0.2, 1.0), r * 1.4, r)
    xy = [tuple(p) for p in pts.tolist()]
    draw.polygon(xy, fill=colour)
    id_draw.polygon(xy, fill=0)


def _apply_texture(
    rng: np.random.Generator, pixels: np.ndarray, mask: np.ndarray, obj: _Object
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
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    num_val = min(num_images - 1, max(1, round(num_images * val_fraction)))
    num_train = num_images - num_val
    novel = tuple(o for o in WORLD_PARTS if o in set(novel_objects))
    base = tuple(o for o in WORLD_PARTS if o not in novel)

    part_vocab, object_vocab = load_builtin("pascal_part"), load_builtin("voc")
    part_ids = {
        f"{o}:{p}": part_vocab[part_vocab.index(f"{o}:{p}")].id
        for o, parts in WORLD_PARTS.items()
        for p in parts
    }
    object_ids = {o: object_vocab[object_vocab.index(o)].id for o in WORLD_PARTS}

    def split_of(obj: str) -> str:
        return "novel" if obj in novel else "base"

    def part_categories(objects: Sequence[str]) -> list[dict]:
        cats = [
            Category(name=f"{o}:{p}", object=o, part=p, id=part_ids[f"{o}:{p}"], split=split_of(o))
            for o in objects
            for p in WORLD_PARTS[o]
        ]
        return category_records(Vocabulary(tuple(sorted(cats, key=lambda c: c.id))))

    object_categories = category_records(
        Vocabulary(
            tuple(
                sorted(
                    (
                        Category(name=o, object=o, id=object_ids[o], split=split_of(o))
                        for o in WORLD_PARTS
                    ),
                    key=lambda c: c.id,
                )
            )
        )
    )
    records = {split: {"images": [], "objects": [], "parts": []} for split in ("train", "val")}
    for i in tqdm(range(num_images), desc="synthetic world", disable=None):
        split = "train" if i < num_train else "val"
        scene = draw_scene(np.random.default_rng([seed, i]), image_size=image_size)
        image_id = i + 1
        file_name = f"images/{image_id:06d}.png"
        Image.fromarray(scene.image).save(out_dir / file_name, **_PNG_OPTIONS)
        rec = records[split]
        rec["images"].append(
            {"id": image_id, "file_name": file_name, "height": image_size, "width": image_size}
        )
        for obj in scene.objects:
            object_ann = mask_annotation(
                obj.mask,
                ann_id=len(rec["objects"]) + 1,
                image_id=image_id,
                category_id=object_ids[obj.name],
            )
            rec["objects"].append(object_ann)
            for part, part_mask in obj.parts:
                ann = mask_annotation(
                    part_mask,
                    ann_id=len(rec["parts"]) + 1,
                    image_id=image_id,
                    category_id=part_ids[f"{obj.name}:{part}"],
                )
                ann["object_id"] = object_ann["id"]
                rec["parts"].append(ann)

    train, val = records["train"], records["val"]
    base_part_ids = {part_ids[f"{o}:{p}"] for o in base for p in WORLD_PARTS[o]}
    label_ids: dict[int, set[int]] = {img["id"]: set() for img in train["images"]}
    for ann in train["objects"]:
        label_ids[ann["image_id"]].add(ann["category_id"])
    files = {
        "parts_base_train": {
            "images": train["images"],
            "annotations": [a for a in train["parts"] if a["category_id"] in base_part_ids],
            "categories": part_categories(base),
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
            "categories": part_categories(tuple(WORLD_PARTS)),
        },
        "objects_val": {
            "images": val["images"],
            "annotations": val["objects"],
            "categories": object_categories,
        },
    }
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
    num_objects = len(train["objects"]) + len(val["objects"])
    num_parts = len(train["parts"]) + len(val["parts"])
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
