"""``vlpart label``: turn an image collection into a training set, resumably, optionally on Ray."""

from __future__ import annotations

import argparse

from vlpart.apps.cli._options import add_text_options, segmenter_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label",
        help="auto-label images into a COCO (and YOLO) training set",
        description="Segment the objects and parts a vocabulary names in every image and write "
        "a training set: OUT/annotations.json (COCO instances, RLE masks, score and parent_id "
        "per annotation), with --format yolo also OUT/images, OUT/labels and OUT/data.yaml; "
        "unreadable images are listed in OUT/skipped.txt. Work is done in shards committed one "
        "by one: run the same command again after an interruption and it does only what is "
        "left. An OUT of another model, vocabulary or settings is refused.",
    )
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument(
        "-r", "--recursive", action="store_true", help="also take the folders' subfolders"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--weights", help="our .safetensors checkpoint or an official VLPart .pth")
    which.add_argument("--model", help="a released VLPart model by name (`vlpart models`)")
    p.add_argument(
        "--vocab",
        dest="vocabulary",
        required=True,
        help="what to label: 'dog;dog:head,torso', 'pascal_part', a .txt file, ...",
    )
    p.add_argument("--out", required=True, help="output folder (created; resumed when it exists)")
    p.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="keep instances scoring at least this (default 0.3, SCORE_THRESH)",
    )
    p.add_argument(
        "--format",
        default="coco",
        help="comma-separated layouts: coco (always written), yolo (default coco)",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="images per shard, the unit of resuming and of Ray tasks (default 64)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray Data: alone, a Ray started on this machine; with ADDRESS, a running "
        "cluster (needs the 'label' extra)",
    )
    p.add_argument(
        "--workers", type=int, help="with --ray: segmenter actors (default 2; one GPU each on CUDA)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--threads", type=int, help="torch threads per process or actor (Ray default 1)")
    add_text_options(p)


def run(args: argparse.Namespace) -> None:
    from vlpart.core.vocab import parse_vocabulary
    from vlpart.inference.label import SHARD_SIZE, label
    from vlpart.inference.segmenter import SCORE_THRESH

    vocabulary = parse_vocabulary(args.vocabulary)
    summary = label(
        args.inputs,
        args.out,
        weights=segmenter_spec(args, vocabulary=vocabulary, device=args.device),
        vocabulary=vocabulary,
        min_score=SCORE_THRESH if args.min_score is None else args.min_score,
        formats=[f.strip() for f in args.format.split(",") if f.strip()],
        shard_size=SHARD_SIZE if args.shard_size is None else args.shard_size,
        recursive=args.recursive,
        ray_address=args.ray,
        workers=args.workers,
        threads=args.threads,
    )
    print(
        f"{summary.num_images} images, {summary.num_annotations} annotations -> {args.out} "
        f"({summary.shards_done} of {summary.shards_total} shards done by this run"
        + (f"; {summary.num_skipped} unreadable, see skipped.txt)" if summary.num_skipped else ")")
    )
    seconds = ", ".join(f"{stage} {s:.1f}" for stage, s in summary.stage_seconds().items())
    print(f"seconds by stage (shards summed over workers): {seconds}")
