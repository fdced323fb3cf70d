"""``vlpart track``: persistent track ids for objects and their parts in videos."""

from __future__ import annotations

import argparse

from vlpart.apps.cli._options import add_text_options, requested_vocabulary, segmenter_spec
from vlpart.core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track",
        help="track objects and their parts through videos",
        description="Segment the objects and parts a vocabulary names in video files and give "
        "each instance a track id that persists across frames; parts are tracked within their "
        "parent object's track. Writes OUT/CLIP.mp4 (coloured by track), OUT/CLIP.json "
        "(per-frame COCO results with track_id and parent_track_id) and OUT/CLIP_mot/ (one "
        "MOTChallenge file per category). A truncated video keeps the frames decoded and "
        "exits non-zero.",
    )
    p.add_argument("inputs", nargs="+", help="video files")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--weights", help="our .safetensors checkpoint or an official VLPart .pth")
    which.add_argument("--model", help="a released VLPart model by name (`vlpart models`)")
    p.add_argument(
        "--vocab",
        dest="vocabulary",
        help="vocabulary: 'dog:head,torso', 'pascal_part', ... (default: with --weights the "
        "vocabulary the checkpoint records, with --model the model's own)",
    )
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    p.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="segment every N-th frame; the frames between get interpolated boxes and warped "
        "masks (bytetrack) or SAM 2's propagated masks (sam2)",
    )
    p.add_argument(
        "--tracker",
        choices=("bytetrack", "sam2"),
        default="bytetrack",
        help="bytetrack (default): ByteTrack association; sam2: the same association plus "
        "SAM 2 mask propagation to the frames between segmented ones (needs the 'sam' extra)",
    )
    p.add_argument(
        "--sam2-weights",
        default="tiny",
        metavar="NAME|FILE",
        help="with --tracker sam2: tiny (default), small, base_plus, large, or a local .pt",
    )
    p.add_argument(
        "--score-thresh",
        dest="score_threshold",
        type=float,
        help="keep detections scoring at least this (default 0.3)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="fp32 or bf16")
    add_text_options(p)


def run(args: argparse.Namespace) -> None:
    import torch

    from vlpart.inference.tracking.video import track_video

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.every < 1:
        raise InputError(f"--every must be at least 1, got {args.every}")
    vocabulary = requested_vocabulary(args)
    propagator = None
    if args.tracker == "sam2":
        from vlpart.inference.tracking.sam2 import Sam2Propagator

        propagator = Sam2Propagator.from_pretrained(args.sam2_weights, device=args.device)
    spec = segmenter_spec(args, vocabulary=vocabulary, device=args.device, precision=args.precision)
    segmenter = spec.build()
    if vocabulary is None:  # --weights without --vocab: the one the checkpoint records
        vocabulary = segmenter.recorded_vocabulary()
    errors = []
    for source in args.inputs:
        summary = track_video(
            segmenter,
            source,
            vocabulary=vocabulary,
            out_dir=args.out,
            score_threshold=args.score_threshold,
            every=args.every,
            propagator=propagator,
        )
        print(
            f"{source}: {summary.frames_processed} of {summary.frames_decoded} frames segmented, "
            f"{summary.num_instances} tracked instances, {summary.frames_per_second:.2f} "
            f"frames/s -> {args.out}"
        )
        if summary.error:
            errors.append(f"{summary.error}; the outputs keep the frames decoded before it")
    if errors:
        raise InputError(errors[0])
