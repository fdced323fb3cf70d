"""Synthetic video clips of the parts world with ground-truth identities, for scoring trackers.

Each clip has a fixed background and a few objects of the world (:mod:`.synth`) that move
along smooth paths: they sweep across the frame so that they cross one another, and some leave
it and come back later. Every object and every part keeps one ground-truth id for the whole
clip (a part's id is ``object_id * PART_ID_BASE + its index among the object's part shapes``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from vlpart.apps.quickstart.shapes import build_object
from vlpart.apps.quickstart.synth import Placement, background, render_scene

__all__ = ["PART_ID_BASE", "ClipFrame", "ClipInstance", "synth_clip"]

PART_ID_BASE = 100
CLIP_CLASSES = ("dog", "cat", "horse", "cow", "sheep", "car", "bus")
# Frames per back-and-forth sweep (2.5 to 5 s at 30 frames/s).
PERIOD_FRAMES = (75.0, 150.0)


@dataclass
class ClipInstance:
    """One visible object or part on one frame.

    Attributes:
        gt_id: its ground-truth identity (objects from 1; parts see the module docstring).
        label: ``dog`` or ``dog:head``.
        mask (np.ndarray[H, W], bool): visible pixels.
        parent_id: the object's ``gt_id`` for a part, -1 for an object.
    """

    gt_id: int
    label: str
    mask: np.ndarray
    parent_id: int = -1


@dataclass
class ClipFrame:
    """``image`` np.ndarray[H, W, 3] uint8 RGB and its visible ``instances``."""

    image: np.ndarray
    instances: list[ClipInstance]


def synth_clip(
    seed: int,
    *,
    num_frames: int = 150,
    size: int = 192,
    num_objects: int = 3,
    classes: Sequence[str] = CLIP_CLASSES,
) -> Iterator[ClipFrame]:
    """Yield the frames of one clip (a function of the arguments only).

    Each object ``k`` moves as ``x = size/2 + A sin(2π t / P + φ)``, ``y`` a small bob around
    its row; amplitudes up to 0.85 × size take objects out of the frame and back, opposite
    phases make them cross. Nearer rows are drawn in front.
    """
    rng = np.random.default_rng(seed)
    image, ids = background(rng, size)
    movers = []
    for k in range(num_objects):
        name = str(rng.choice(list(classes)))
        length = size * rng.uniform(0.3, 0.45)
        row = size * (0.35 + 0.4 * k / max(num_objects - 1, 1)) + rng.uniform(-8, 8)
        movers.append(
            dict(
                gt_id=k + 1,
                obj=build_object(name, rng),
                length=length,
                row=row,
                amplitude=size * rng.uniform(0.3, 0.85),
                period=rng.uniform(*PERIOD_FRAMES),
                phase=rng.uniform(0, 2 * math.pi),
                flip=-1.0 if rng.random() < 0.5 else 1.0,
                bob=rng.uniform(2, 8),
            )
        )
    movers.sort(key=lambda m: m["row"])  # far (higher) first
    for t in range(num_frames):
        placements = []
        for m in movers:
            angle = 2 * math.pi * t / m["period"] + m["phase"]
            x = size / 2 + m["amplitude"] * math.sin(angle)
            y = m["row"] + m["bob"] * math.sin(3 * angle)
            facing = m["flip"] * (1.0 if math.cos(angle) >= 0 else -1.0)  # faces its way
            placements.append(Placement(m["obj"], (x, y), m["length"], 0.0, facing, 1.0))
        scene = render_scene(rng, image.copy(), ids.copy(), placements, occluder_probability=0.0)
        instances = []
        for obj in scene.objects:
            gt_id = movers[obj.placement]["gt_id"]
            instances.append(ClipInstance(gt_id, obj.name, obj.mask))
            for (part, mask), index in zip(obj.parts, obj.part_ids, strict=True):
                instances.append(
                    ClipInstance(gt_id * PART_ID_BASE + index, f"{obj.name}:{part}", mask, gt_id)
                )
        yield ClipFrame(scene.image, instances)
