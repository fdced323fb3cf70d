"""Draw docs/granularity.png: one image segmented at the three granularities of a vocabulary.

The vocabulary alone sets the granularity; the model and the image stay the same:

* objects: ``horse; dog``;
* objects and parts: ``horse; dog; *:head,leg,tail`` (those parts of the listed objects);
* parts only: ``horse:head,leg,tail; dog:head,leg,tail``.

Usage (after ``vlpart quickstart``, whose model and synthetic world it reads by default)::

    python tools/granularity_figure.py [--weights quickstart/model.safetensors]
        [--image quickstart/world/images/000330.png] [--out docs/granularity.png]

The panels are drawn on a copy of the image enlarged ``--scale`` times (the quickstart's images
are 128 px) so that the tags stay legible; each panel is titled with its spec and the number of
categories it gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vlpart.core.fileio import atomic_write, read_image
from vlpart.core.vocab import parse_vocabulary
from vlpart.inference.segmenter import PartSegmenter

LEVELS = (
    ("objects", "horse; dog"),
    ("objects and parts", "horse; dog; *:head,leg,tail"),
    ("parts only", "horse:head,leg,tail; dog:head,leg,tail"),
)
TITLE_HEIGHT = 44
GAP = 8


def render_level(
    segmenter: PartSegmenter, image: np.ndarray, spec: str, *, scale: int, score_thresh: float
) -> Image.Image:
    """The prediction of ``spec`` on ``image`` (``np.ndarray[H, W, 3]`` uint8), drawn on the
    image enlarged ``scale`` times."""
    pred = segmenter.predict(image, vocabulary=spec, score_threshold=score_thresh)
    big = dataclasses.replace(
        pred,
        boxes=pred.boxes * scale,
        masks=pred.masks.repeat(scale, axis=1).repeat(scale, axis=2),
    )
    return big.render(image.repeat(scale, axis=0).repeat(scale, axis=1))


def compose(panels: list[Image.Image], titles: list[str]) -> Image.Image:
    """The panels side by side, each under its title (two lines)."""
    width, height = panels[0].size
    sheet = Image.new("RGB", (len(panels) * (width + GAP) - GAP, height + TITLE_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        x = i * (width + GAP)
        sheet.paste(panel, (x, TITLE_HEIGHT))
        draw.multiline_text((x + 4, 4), title, fill="black", font=font, spacing=4)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="quickstart/model.safetensors")
    parser.add_argument("--image", default="quickstart/world/images/000330.png")
    parser.add_argument("--out", default="docs/granularity.png")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--score-thresh", type=float, default=0.3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    torch.set_num_threads(1)
    segmenter = PartSegmenter.from_pretrained(args.weights)
    image = read_image(args.image)
    panels, titles = [], []
    for level, spec in LEVELS:
        panels.append(
            render_level(segmenter, image, spec, scale=args.scale, score_thresh=args.score_thresh)
        )
        titles.append(f"{level}: {len(parse_vocabulary(spec))} categories\n--vocab {spec!r}")
    sheet = compose(panels, titles)
    out = atomic_write(args.out, lambda tmp: sheet.save(tmp, format="PNG", optimize=True))
    logging.info("wrote %s (%dx%d)", out, *sheet.size)


if __name__ == "__main__":
    main()
