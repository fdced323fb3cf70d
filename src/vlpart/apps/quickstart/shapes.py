"""Object templates of the synthetic parts world: each class as coloured primitives with parts.

A template (:class:`ObjectTemplate`) is drawn in a canonical frame (length 1, facing right, y
down); :mod:`vlpart.apps.quickstart.synth` places, poses and renders it. Every class keeps its
own part layout (a cat's pointed ears and long raised tail, a horse's neck and long legs, a
bus's row of windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Colour",
    "ObjectTemplate",
    "Shape",
    "build_object",
    "ellipse",
    "polygon",
]

Colour = tuple[int, int, int]


@dataclass
class Shape:
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
class ObjectTemplate:
    name: str
    shapes: list[Shape]
    texture: str
    textured_parts: tuple[str, ...] = ()
    texture_colour: Colour = (0, 0, 0)


# --- geometry -----------------------------------------------------------------------------------


def ellipse(
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


def polygon(*points: tuple[float, float]) -> np.ndarray:
    """The vertices ``points`` as np.ndarray[N, 2] float64 (x, y)."""
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


def _quadruped(name: str, rng: np.random.Generator) -> ObjectTemplate:
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
    shapes: list[Shape] = []

    def leg(x: float, far: bool) -> Shape:
        angle = rng.uniform(-0.35, 0.35)
        colour = _shade(leg_colour, 0.72 if far else 1.0)
        top = ry * 0.3
        return Shape(
            "leg", _limb(x, top, leg_len + ry * 0.7, angle, leg_w * 1.25, leg_w * 0.85), colour
        )

    stride = rng.uniform(0.02, 0.08)
    for x in (rx * 0.62 - stride, -rx * 0.62 + stride):  # far side, behind the torso
        shapes.append(leg(x, far=True))
    shapes.extend(_tail(spec.tail, rx, ry, _shade(body, 0.95), rng))
    shapes.append(Shape("torso", ellipse(0.0, 0.0, rx, ry, power=power), body))
    for x in (rx * 0.62, -rx * 0.62):
        shapes.append(leg(x, far=False))
    if spec.neck:
        shapes.append(
            Shape(
                "neck",
                polygon(
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
            shapes.append(Shape("horn", _rotate_about(horn, hx, hy, hangle), (225, 215, 180)))
    ear_shapes = _ears(spec.ears, hx, hy, hrx, hry, hangle, _shade(head_colour, 0.8))
    floppy = spec.ears == "floppy"
    if not floppy:
        shapes.extend(ear_shapes)
    shapes.append(Shape("head", ellipse(hx, hy, hrx, hry, hangle), head_colour))
    if spec.snout:
        snout = ellipse(hx + hrx * 0.95, hy + hry * 0.35, hrx * 0.65, hry * 0.5, hangle)
        shapes.append(
            Shape("head", _rotate_about(snout, hx, hy, hangle), head_colour, extends=True)
        )
    if floppy:
        shapes.extend(ear_shapes)
    eye = _rotate_about(polygon((hx + hrx * 0.35, hy - hry * 0.25)), hx, hy, hangle)[0]
    shapes.append(
        Shape("head", ellipse(eye[0], eye[1], 0.014, 0.014, num=8), (15, 15, 15), decor=True)
    )
    return ObjectTemplate(
        name,
        shapes,
        texture=str(rng.choice(spec.textures)),
        textured_parts=spec.textured_parts,
        texture_colour=spec.texture_colours[rng.integers(len(spec.texture_colours))],
    )


def _tail(kind: str, rx: float, ry: float, colour: Colour, rng: np.random.Generator) -> list[Shape]:
    bend = rng.uniform(-0.05, 0.05)
    x0 = -rx * 0.92
    if kind == "raised_long":
        pts, width = (
            polygon(
                (x0, -ry * 0.2),
                (x0 - 0.1, -ry - 0.02),
                (x0 - 0.12 + bend, -ry - 0.15),
                (x0 - 0.05 + bend, -ry - 0.24),
            ),
            0.035,
        )
    elif kind == "raised_short":
        pts, width = (
            polygon((x0, -ry * 0.4), (x0 - 0.08, -ry - 0.04), (x0 - 0.06 + bend, -ry - 0.13)),
            0.045,
        )
    elif kind == "hanging_thin":
        pts = polygon((x0 + 0.02, -ry * 0.6), (x0 - 0.03, -ry * 0.1), (x0 - 0.02 + bend, ry + 0.12))
        tuft = ellipse(pts[-1, 0], pts[-1, 1] + 0.02, 0.025, 0.04)
        return [
            Shape("tail", pts, colour, width=0.018),
            Shape("tail", tuft, _shade(colour, 0.6), extends=True),
        ]
    elif kind == "hanging_thick":
        pts, width = (
            polygon((x0 + 0.02, -ry * 0.6), (x0 - 0.08, -ry * 0.1), (x0 - 0.08 + bend, ry + 0.2)),
            0.07,
        )
        colour = _shade(colour, 0.6)
    else:  # stub
        pts, width = polygon((x0 + 0.02, -ry * 0.3), (x0 - 0.06, -ry * 0.1 + bend)), 0.06
    return [Shape("tail", pts, colour, width=width)]


def _ears(
    kind: str, hx: float, hy: float, hrx: float, hry: float, angle: float, colour: Colour
) -> list[Shape]:
    if kind == "pointed":
        ears = [
            polygon(
                (hx + dx - hrx * 0.3, hy - hry * 0.5),
                (hx + dx + hrx * 0.3, hy - hry * 0.6),
                (hx + dx, hy - hry * 1.55),
            )
            for dx in (-hrx * 0.5, hrx * 0.4)
        ]
    elif kind == "floppy":
        ears = [ellipse(hx - hrx * 0.45, hy + hry * 0.25, hrx * 0.3, hry * 0.75, 0.35)]
    elif kind == "sideways":
        ears = [ellipse(hx - hrx * 1.1, hy - hry * 0.55, hrx * 0.65, hry * 0.22, 0.3)]
    elif kind == "sideways_small":
        ears = [ellipse(hx - hrx * 0.95, hy - hry * 0.5, hrx * 0.55, hry * 0.22, 0.4)]
    else:  # small, upright (horse)
        ears = [
            polygon(
                (hx - hrx * 0.5, hy - hry * 0.85),
                (hx + hrx * 0.3, hy - hry * 0.9),
                (hx - hrx * 0.2, hy - hry * 1.35),
            )
        ]
    return [Shape("ear", _rotate_about(e, hx, hy, angle), colour) for e in ears]


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


def _bird(rng: np.random.Generator) -> ObjectTemplate:
    body = _jitter(rng, _BIRD_COLOURS[rng.integers(len(_BIRD_COLOURS))])
    leg_colour = (200, 150, 60)
    tilt = rng.uniform(-0.35, 0.05)
    shapes = [
        Shape("tail", polygon((-0.22, -0.02), (-0.5, -0.1), (-0.48, 0.06)), _shade(body, 0.8)),
        *[
            Shape("leg", polygon((x, 0.1), (x - 0.04, 0.34)), leg_colour, width=0.025)
            for x in (-0.02, 0.07)
        ],
        Shape("torso", ellipse(0.0, 0.0, 0.28, 0.16, tilt), body),
        Shape("wing", ellipse(-0.06, -0.02, 0.2, 0.085, tilt - 0.2), _shade(body, 0.7)),
        Shape("head", ellipse(0.28, -0.17, 0.11, 0.1), _shade(body, 1.1)),
        Shape("beak", polygon((0.36, -0.2), (0.37, -0.13), (0.5, -0.16)), (235, 170, 40)),
        Shape("head", ellipse(0.31, -0.2, 0.018, 0.018, num=8), (10, 10, 10), decor=True),
    ]
    return ObjectTemplate("bird", shapes, texture="plain")


def _aeroplane(rng: np.random.Generator) -> ObjectTemplate:
    body = _jitter(rng, _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))], 10)
    shapes = [
        Shape(
            "wing",
            polygon((0.0, -0.03), (0.08, -0.03), (-0.12, -0.14), (-0.17, -0.14)),
            _shade(body, 0.7),
        ),
        Shape("body", ellipse(0.0, 0.0, 0.5, 0.065, power=2.6), body),
        Shape(
            "tail",
            polygon((-0.47, -0.02), (-0.36, -0.03), (-0.45, -0.25), (-0.5, -0.25)),
            _shade(body, 0.9),
        ),
        Shape(
            "wing",
            polygon((-0.04, 0.01), (0.1, 0.01), (-0.1, 0.24), (-0.18, 0.24)),
            _shade(body, 0.85),
        ),
    ]
    for i in range(7):
        shapes.append(
            Shape(
                "body", ellipse(0.3 - 0.09 * i, -0.015, 0.015, 0.015, num=8), _GLASS[0], decor=True
            )
        )
    if rng.random() < 0.6:  # landing gear out
        for x in (-0.25, 0.3):
            shapes.append(Shape("wheel", ellipse(x, 0.11, 0.035, 0.035, num=12), _TYRE))
    return ObjectTemplate("aeroplane", shapes, texture="plain")


def _car(rng: np.random.Generator) -> ObjectTemplate:
    body = _jitter(rng, _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))], 10)
    glass = _GLASS[rng.integers(len(_GLASS))]
    shapes = [
        Shape(
            None,
            polygon(
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
        Shape(None, polygon((-0.33, -0.06), (-0.22, -0.25), (0.1, -0.25), (0.25, -0.07)), body),
        Shape(
            "window", polygon((-0.28, -0.08), (-0.19, -0.22), (-0.06, -0.22), (-0.06, -0.08)), glass
        ),
        Shape(
            "window", polygon((-0.02, -0.08), (-0.02, -0.22), (0.08, -0.22), (0.2, -0.08)), glass
        ),
        Shape(
            "door",
            polygon((-0.27, -0.05), (-0.04, -0.05), (-0.04, 0.1), (-0.27, 0.1)),
            _shade(body, 0.85),
        ),
        Shape(
            "door",
            polygon((-0.02, -0.05), (0.21, -0.05), (0.21, 0.1), (-0.02, 0.1)),
            _shade(body, 0.85),
        ),
        Shape("headlight", ellipse(0.465, 0.0, 0.035, 0.028), (250, 240, 170)),
    ]
    for x in (-0.3, 0.3):
        shapes.append(Shape("wheel", ellipse(x, 0.12, 0.1, 0.1), _TYRE))
        shapes.append(
            Shape("wheel", ellipse(x, 0.12, 0.045, 0.045, num=12), (170, 170, 175), decor=True)
        )
    return ObjectTemplate("car", shapes, texture="plain")


def _bus(rng: np.random.Generator) -> ObjectTemplate:
    body = _jitter(rng, _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))], 10)
    glass = _GLASS[rng.integers(len(_GLASS))]
    shapes = [
        Shape(
            None,
            polygon(
                (-0.5, -0.22),
                (-0.47, -0.25),
                (0.47, -0.25),
                (0.5, -0.22),
                (0.5, 0.15),
                (-0.5, 0.15),
            ),
            body,
        ),
        Shape(
            None,
            polygon((-0.5, 0.02), (0.5, 0.02), (0.5, 0.05), (-0.5, 0.05)),
            _shade(body, 0.6),
            decor=True,
        ),
    ]
    num_windows = int(rng.integers(3, 6))
    step = 0.72 / num_windows
    for i in range(num_windows):
        x0 = -0.45 + i * step
        shapes.append(
            Shape(
                "window",
                polygon(
                    (x0, -0.2), (x0 + step - 0.025, -0.2), (x0 + step - 0.025, -0.04), (x0, -0.04)
                ),
                glass,
            )
        )
    shapes.append(
        Shape(
            "door",
            polygon((0.31, -0.2), (0.43, -0.2), (0.43, 0.13), (0.31, 0.13)),
            _shade(glass, 0.8),
        )
    )
    shapes.append(Shape("headlight", ellipse(0.47, 0.09, 0.025, 0.025), (250, 240, 170)))
    for x in (-0.3, 0.22):
        shapes.append(Shape("wheel", ellipse(x, 0.15, 0.085, 0.085), _TYRE))
        shapes.append(
            Shape("wheel", ellipse(x, 0.15, 0.04, 0.04, num=12), (170, 170, 175), decor=True)
        )
    return ObjectTemplate("bus", shapes, texture="plain")


def build_object(name: str, rng: np.random.Generator) -> ObjectTemplate:
    if name in _QUADRUPEDS:
        return _quadruped(name, rng)
    return {"bird": _bird, "aeroplane": _aeroplane, "car": _car, "bus": _bus}[name](rng)
