"""Regenerate the built-in taxonomies in ``src/vlpart/_resources/taxonomies/``.

The category lists are facts about public datasets (names, ids, splits, image counts). This script
reads them from the extracted lists in ``../shared/data/taxonomies`` and writes them in vlpart's own
compact schema; COCO's 80 names are written out below. Run it from the repository root:

    python tools/make_taxonomies.py [--shared ../shared/data]

Schema of each output file::

    {"name": str, "kind": "parts" | "objects" | "mixed",
     "categories": [{"id": int, "name": str, "object": str, "part": str | null,
                     "split": "base" | "novel" | null, "image_count": int | null,
                     "mat_token": str | null}],
     "phrases": {raw name: text used in prompts}}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COCO_NAMES = (
    "person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic light, "
    "fire hydrant, stop sign, parking meter, bench, bird, cat, dog, horse, sheep, cow, elephant, "
    "bear, zebra, giraffe, backpack, umbrella, handbag, tie, suitcase, frisbee, skis, snowboard, "
    "sports ball, kite, baseball bat, baseball glove, skateboard, surfboard, tennis racket, "
    "bottle, wine glass, cup, fork, knife, spoon, bowl, banana, apple, sandwich, orange, "
    "broccoli, carrot, "
    "hot dog, pizza, donut, cake, chair, couch, potted plant, bed, dining table, toilet, tv, "
    "laptop, mouse, remote, keyboard, cell phone, microwave, oven, toaster, sink, refrigerator, "
    "book, clock, vase, scissors, teddy bear, hair drier, toothbrush"
).split(", ")
# COCO's category ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71, 83.
COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "vlpart" / "_resources" / "taxonomies"


def _cat(id, name, object, part=None, split=None, image_count=None, mat_token=None):
    return {
        "id": id,
        "name": name,
        "object": object,
        "part": part,
        "split": split,
        "image_count": image_count,
        "mat_token": mat_token,
    }


def build(shared: Path) -> dict[str, dict]:
    tax = shared / "taxonomies"
    pascal = json.loads((tax / "pascal_part.json").read_text())
    pim = json.loads((tax / "partimagenet.json").read_text())
    paco = json.loads((tax / "paco.json").read_text())
    voc_lvis = json.loads((tax / "voc_lvis.json").read_text())

    out = {}
    out["pascal_part"] = {
        "name": "pascal_part",
        "kind": "parts",
        "categories": [
            _cat(
                c["id"],
                c["name"],
                c["object"],
                c["part"],
                c["split"],
                mat_token=c.get("mat_match_token"),
            )
            for c in pascal["categories"]
        ],
        "phrases": {},
    }
    out["partimagenet"] = {
        "name": "partimagenet",
        "kind": "parts",
        "categories": [
            _cat(c["id"], c["name"], c["supercategory"], c["part"]) for c in pim["categories"]
        ],
        "phrases": {},
    }
    paco_cats = [
        _cat(c["id"], c["name"], c["name"], None, image_count=c["image_count"])
        for c in paco["objects"]
    ] + [
        _cat(c["id"], c["name"], c["object"], c["part"], image_count=c["image_count"])
        for c in paco["object_parts"]
    ]
    out["paco"] = {
        "name": "paco",
        "kind": "mixed",
        "categories": sorted(paco_cats, key=lambda c: c["id"]),
        "phrases": {},
    }
    out["voc"] = {
        "name": "voc",
        "kind": "objects",
        "categories": [_cat(c["id"], c["name"], c["name"]) for c in voc_lvis["voc"]],
        # The released VOC embeddings were computed from "potted plant".
        "phrases": {"pottedplant": "potted plant"},
    }
    out["coco"] = {
        "name": "coco",
        "kind": "objects",
        "categories": [_cat(i, n, n) for i, n in zip(COCO_IDS, COCO_NAMES, strict=True)],
        "phrases": {},
    }
    out["lvis"] = {
        "name": "lvis",
        "kind": "objects",
        "categories": [
            _cat(c["id"], c["name"], c["name"], image_count=c["image_count"])
            for c in voc_lvis["lvis_v1"]
        ],
        "phrases": {},
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, tax in build(args.shared).items():
        path = OUT_DIR / f"{name}.json"
        lines = ",\n".join("  " + json.dumps(c) for c in tax["categories"])
        head = {k: v for k, v in tax.items() if k != "categories"}
        text = json.dumps(head)[:-1] + ', "categories": [\n' + lines + "\n]}\n"
        json.loads(text)  # the hand-joined layout must stay valid JSON
        path.write_text(text)
        print(f"{path}: {len(tax['categories'])} categories")


if __name__ == "__main__":
    main()
