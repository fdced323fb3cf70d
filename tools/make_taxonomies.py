"""Regenerate the built-in taxonomies in ``src/vlpart/_resources/taxonomies/``.

The category lists are facts about public datasets (names, ids, splits, image counts). This script
reads them from the extracted lists in ``../shared/data/taxonomies`` and writes them in vlpart's own
compact schema; COCO's 80 names and the two OV-PARTS benchmarks (Pascal-Part-116 and
ADE20K-Part-234, as OpenRobotLab/OV_PARTS registers them in
``baselines/data/datasets/register_{pascal_part_116,ade_part_234}.py``) are written out below.
Run it from the repository root:

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

# OV-PARTS names a part "<object>'s <part>"; the list order is the label value in its PNGs.
PASCAL_PART_116_NAMES = (
    "aeroplane's body, aeroplane's stern, aeroplane's wing, aeroplane's tail, aeroplane's engine, "
    "aeroplane's wheel, bicycle's wheel, bicycle's saddle, bicycle's handlebar, "
    "bicycle's chainwheel, bicycle's headlight, bird's wing, bird's tail, bird's head, bird's eye, "
    "bird's beak, bird's torso, bird's neck, bird's leg, bird's foot, bottle's body, bottle's cap, "
    "bus's wheel, bus's headlight, bus's front, bus's side, bus's back, bus's roof, bus's mirror, "
    "bus's license plate, bus's door, bus's window, car's wheel, car's headlight, car's front, "
    "car's side, car's back, car's roof, car's mirror, car's license plate, car's door, "
    "car's window, cat's tail, cat's head, cat's eye, cat's torso, cat's neck, cat's leg, "
    "cat's nose, cat's paw, cat's ear, cow's tail, cow's head, cow's eye, cow's torso, cow's neck, "
    "cow's leg, cow's ear, cow's muzzle, cow's horn, dog's tail, dog's head, dog's eye, "
    "dog's torso, dog's neck, dog's leg, dog's nose, dog's paw, dog's ear, dog's muzzle, "
    "horse's tail, horse's head, horse's eye, horse's torso, horse's neck, horse's leg, "
    "horse's ear, horse's muzzle, horse's hoof, motorbike's wheel, motorbike's saddle, "
    "motorbike's handlebar, motorbike's headlight, person's head, person's eye, person's torso, "
    "person's neck, person's leg, person's foot, person's nose, person's ear, person's eyebrow, "
    "person's mouth, person's hair, person's lower arm, person's upper arm, person's hand, "
    "pottedplant's pot, pottedplant's plant, sheep's tail, sheep's head, sheep's eye, "
    "sheep's torso, sheep's neck, sheep's leg, sheep's ear, sheep's muzzle, sheep's horn, "
    "train's headlight, train's head, train's front, train's side, train's back, train's roof, "
    "train's coach, tvmonitor's screen"
).split(", ")
# Zero-shot split: every part of these objects is unseen in training.
PASCAL_PART_116_UNSEEN_OBJECTS = ("bird", "car", "dog", "sheep", "motorbike")

ADE20K_PART_234_NAMES = (
    "person's arm, person's back, person's foot, person's gaze, person's hand, person's head, "
    "person's leg, person's neck, person's torso, door's door frame, door's handle, door's knob, "
    "door's panel, clock's face, clock's frame, toilet's bowl, toilet's cistern, toilet's lid, "
    "cabinet's door, cabinet's drawer, cabinet's front, cabinet's shelf, cabinet's side, "
    "cabinet's skirt, cabinet's top, sink's bowl, sink's faucet, sink's pedestal, sink's tap, "
    "sink's top, lamp's arm, lamp's base, lamp's canopy, lamp's column, lamp's cord, "
    "lamp's highlight, lamp's light source, lamp's shade, lamp's tube, sconce's arm, "
    "sconce's backplate, sconce's highlight, sconce's light source, sconce's shade, "
    "chair's apron, chair's arm, chair's back, chair's base, chair's leg, chair's seat, "
    "chair's seat cushion, chair's skirt, chair's stretcher, chest of drawers's apron, "
    "chest of drawers's door, chest of drawers's drawer, chest of drawers's front, "
    "chest of drawers's leg, chandelier's arm, chandelier's bulb, chandelier's canopy, "
    "chandelier's chain, chandelier's cord, chandelier's highlight, chandelier's light source, "
    "chandelier's shade, bed's footboard, bed's headboard, bed's leg, bed's side rail, "
    "table's apron, table's drawer, table's leg, table's shelf, table's top, table's wheel, "
    "armchair's apron, armchair's arm, armchair's back, armchair's back pillow, armchair's leg, "
    "armchair's seat, armchair's seat base, armchair's seat cushion, ottoman's back, "
    "ottoman's leg, ottoman's seat, shelf's door, shelf's drawer, shelf's front, shelf's shelf, "
    "swivel chair's back, swivel chair's base, swivel chair's seat, swivel chair's wheel, "
    "fan's blade, fan's canopy, fan's tube, coffee table's leg, coffee table's top, stool's leg, "
    "stool's seat, sofa's arm, sofa's back, sofa's back pillow, sofa's leg, sofa's seat base, "
    "sofa's seat cushion, sofa's skirt, computer's computer case, computer's keyboard, "
    "computer's monitor, computer's mouse, desk's apron, desk's door, desk's drawer, desk's leg, "
    "desk's shelf, desk's top, wardrobe's door, wardrobe's drawer, wardrobe's front, "
    "wardrobe's leg, wardrobe's mirror, wardrobe's top, car's bumper, car's door, "
    "car's headlight, car's hood, car's license plate, car's logo, car's mirror, car's wheel, "
    "car's window, car's wiper, bus's bumper, bus's door, bus's headlight, bus's license plate, "
    "bus's logo, bus's mirror, bus's wheel, bus's window, bus's wiper, oven's button panel, "
    "oven's door, oven's drawer, oven's top, cooking stove's burner, "
    "cooking stove's button panel, cooking stove's door, cooking stove's drawer, "
    "cooking stove's oven, cooking stove's stove, microwave's button panel, microwave's door, "
    "microwave's front, microwave's side, microwave's top, microwave's window, "
    "refrigerator's button panel, refrigerator's door, refrigerator's drawer, "
    "refrigerator's side, kitchen island's door, kitchen island's drawer, "
    "kitchen island's front, kitchen island's side, kitchen island's top, "
    "dishwasher's button panel, dishwasher's handle, dishwasher's skirt, bookcase's door, "
    "bookcase's drawer, bookcase's front, bookcase's side, television receiver's base, "
    "television receiver's buttons, television receiver's frame, television receiver's keys, "
    "television receiver's screen, television receiver's speaker, glass's base, glass's bowl, "
    "glass's opening, glass's stem, pool table's bed, pool table's leg, pool table's pocket, "
    "van's bumper, van's door, van's headlight, van's license plate, van's logo, van's mirror, "
    "van's taillight, van's wheel, van's window, van's wiper, airplane's door, "
    "airplane's fuselage, airplane's landing gear, airplane's propeller, airplane's stabilizer, "
    "airplane's turbine engine, airplane's wing, truck's bumper, truck's door, "
    "truck's headlight, truck's license plate, truck's logo, truck's mirror, truck's wheel, "
    "truck's window, minibike's license plate, minibike's mirror, minibike's seat, "
    "minibike's wheel, washer's button panel, washer's door, washer's front, washer's side, "
    "bench's arm, bench's back, bench's leg, bench's seat, traffic light's housing, "
    "traffic light's pole, light's aperture, light's canopy, light's diffusor, light's highlight, "
    "light's light source, light's shade"
).split(", ")
ADE20K_PART_234_UNSEEN_OBJECTS = (
    "bench, bus, fan, desk, stool, truck, van, swivel chair, oven, ottoman, kitchen island"
).split(", ")

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


def _ov_parts(
    name: str, names: list[str], unseen: tuple[str, ...] | list[str], phrases: dict[str, str]
) -> dict:
    """An OV-PARTS benchmark: ``"dog's head"`` -> ``dog:head``; id = PNG label value + 1."""
    cats = []
    for i, ov_name in enumerate(names):
        obj, part = ov_name.split("'s ", 1)
        split = "novel" if obj in unseen else "base"
        cats.append(_cat(i + 1, f"{obj}:{part}", obj, part, split))
    return {"name": name, "kind": "parts", "categories": cats, "phrases": phrases}


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
    out["pascal_part_116"] = _ov_parts(
        "pascal_part_116",
        PASCAL_PART_116_NAMES,
        PASCAL_PART_116_UNSEEN_OBJECTS,
        # As the released pascal_part embeddings write it ("a potted plant pot"); the VOC
        # spelling "tvmonitor" is no word a text encoder knows.
        {"pottedplant": "potted plant", "tvmonitor": "tv monitor"},
    )
    out["ade20k_part_234"] = _ov_parts(
        "ade20k_part_234", ADE20K_PART_234_NAMES, ADE20K_PART_234_UNSEEN_OBJECTS, {}
    )
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
