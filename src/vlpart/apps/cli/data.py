"""``vlpart data convert-pascal-part | convert-ov-parts | synth``: datasets and the synthetic
parts world."""

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
    ov = dsub.add_parser(
        "convert-ov-parts",
        help="OV-PARTS datasets (or raw Pascal-Part .mat) -> label PNGs for eval --semantic",
        description="Write OUT/gt/<stem>.png (part labels, 255 = ignore) and OUT/objects/"
        "<stem>.png (object labels, 255 = none; for --oracle-objects) from a released OV-PARTS "
        "archive (Pascal-Part-116: annotations_detectron2_part + _obj PNGs; ADE20K-Part-234: "
        "16-bit part PNGs + ade20k_instance_*.json objects) or, with --mat, from raw "
        "Pascal-Part .mat files (mapped onto the 116 classes).",
    )
    ov.add_argument(
        "source",
        help="the extracted archive (PascalPart116/, ADE20KPart234/) or, with --mat, "
        "the folder of .mat files",
    )
    ov.add_argument("out", help="output folder (gets gt/ and objects/)")
    ov.add_argument(
        "--dataset",
        choices=("pascal_part_116", "ade20k_part_234"),
        default="pascal_part_116",
        help="which benchmark (default pascal_part_116)",
    )
    ov.add_argument(
        "--split",
        help="archive split: val/train (Pascal), validation/training (ADE); "
        "default the evaluation split",
    )
    ov.add_argument(
        "--mat", action="store_true", help="SOURCE holds raw Pascal-Part .mat annotations"
    )
    ov.add_argument("--image-dir", help="with --mat: the photos, to check sizes against")
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
    if args.data_command == "convert-ov-parts":
        _convert_ov_parts(args)
        return
    from vlpart.apps.quickstart.synth import synthesize_world

    summary = synthesize_world(
        args.out, seed=args.seed, num_images=args.images, image_size=args.image_size
    )
    print(
        f"{summary.num_train} train + {summary.num_val} val images, {summary.num_objects} "
        f"objects, {summary.num_parts} parts -> {summary.out_dir}"
    )


def _convert_ov_parts(args: argparse.Namespace) -> None:
    from vlpart.core.errors import InputError
    from vlpart.data.ov_parts import convert_ov_parts, pascal_part_mat_to_116

    if args.mat:
        if args.dataset != "pascal_part_116" or args.split:
            raise InputError(
                "--mat converts Pascal-Part .mat files to pascal_part_116 (no --split)"
            )
        summary = pascal_part_mat_to_116(args.source, args.out, image_dir=args.image_dir)
    else:
        if args.image_dir:
            raise InputError("--image-dir goes with --mat")
        summary = convert_ov_parts(args.source, args.out, dataset=args.dataset, split=args.split)
    print(f"{summary.num_images} label maps -> {summary.gt_dir} and {summary.objects_dir}")
    if summary.dropped:
        print("dropped raw labels: " + ", ".join(f"{k} ({n})" for k, n in summary.dropped.items()))
