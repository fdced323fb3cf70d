"""``vlpart data convert-pascal-part | synth``: datasets and the synthetic parts world."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="convert datasets and draw the synthetic parts world")
    dsub = data.add_subparsers(dest="data_command", required=True)
    conv = dsub.add_parser(
        "convert-pascal-part",
        help="Pascal-Part .mat annotations -> COCO JSON (parts + objects)",
        description="Write OUT.json (part annotations, the 93 pascal_part categories, each part "
        "with the object_id of its object) and OUT_objects.json (object annotations, the 20 VOC "
        "categories). Raw part labels matching no category are dropped and reported.",
    )
    conv.add_argument("anno_dir", help="folder of Pascal-Part .mat files (Annotations_Part)")
    conv.add_argument("image_dir", help="folder of the VOC2010 .jpg images (JPEGImages)")
    conv.add_argument("out", help="part annotation file to write (.json)")
    conv.add_argument("--objects-out", help="object annotation file (default: OUT_objects.json)")
    conv.add_argument(
        "--split",
        help="text file of image names to convert, one per line (a VOC ImageSets file); "
        "default: every .mat file",
    )
    synth = dsub.add_parser(
        "synth",
        help="draw the synthetic parts world (images + COCO JSON)",
        description="Render images of animals, birds and vehicles built from annotated parts "
        "and write parts_base_train.json, objects_train.json, image_labels_train.json, "
        "parts_val.json, objects_val.json and world.json under --out.",
    )
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--images", type=int, default=500, help="number of images, train + val (default 500)"
    )
    synth.add_argument(
        "--image-size", type=int, default=256, help="image side in pixels (default 256)"
    )


def run(args: argparse.Namespace) -> None:
    if args.data_command == "convert-pascal-part":
        from vlpart.data.pascal_part import convert_pascal_part, read_split_file

        names = read_split_file(args.split) if args.split else None
        summary = convert_pascal_part(
            args.anno_dir,
            args.image_dir,
            args.out,
            objects_json=args.objects_out,
            image_names=names,
        )
        print(
            f"{summary.num_parts} parts on {summary.num_part_images} images -> {summary.parts_json}"
        )
        print(
            f"{summary.num_objects} objects on {summary.num_images} images -> "
            f"{summary.objects_json}"
        )
        if summary.dropped:
            dropped = ", ".join(f"{k} ({n})" for k, n in summary.dropped.items())
            print(f"dropped raw labels: {dropped}")
        return
    from vlpart.apps.quickstart.synth import synthesize_world

    summary = synthesize_world(
        args.out, seed=args.seed, num_images=args.images, image_size=args.image_size
    )
    print(
        f"{summary.num_train} train + {summary.num_val} val images, {summary.num_objects} "
        f"objects, {summary.num_parts} parts -> {summary.out_dir}"
    )
