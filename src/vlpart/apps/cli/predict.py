"""``vlpart predict``: segment images, folders, videos and a camera."""

from __future__ import annotations

import argparse
import logging

from vlpart.apps.cli._options import (
    add_refine_options,
    add_text_options,
    refiner_spec,
    requested_vocabulary,
    segmenter_spec,
)
from vlpart.core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment objects and parts in images",
        description="Segment the objects and parts a vocabulary names. Writes OUT/results.json "
        "(COCO results, RLE masks), OUT/dataset.json (images and categories) and "
        "OUT/overlays/*.png. Unreadable images are reported and skipped; the exit "
        "status is non-zero only when no image could be processed. A video file CLIP.mp4 "
        "(.mov, .mkv, .avi, .webm, ...) gives OUT/CLIP.mp4 (annotated, same frame rate and "
        "size) and OUT/CLIP.json (per-frame COCO results); a truncated video keeps the frames "
        "decoded and exits non-zero.",
    )
    p.add_argument("inputs", nargs="*", help="image or video files, folders or glob patterns")
    p.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="also take the images in the folders' subfolders (and let ** in patterns match them)",
    )
    p.add_argument(
        "--every", type=int, default=1, metavar="N", help="videos: segment every N-th frame"
    )
    p.add_argument(
        "--webcam",
        nargs="?",
        const="default",
        metavar="DEVICE",
        help="segment a camera until Ctrl-C into OUT/webcam.mp4 and OUT/webcam.json "
        "(default device: /dev/video0 on Linux, 0 on macOS)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--weights",
        help="our .safetensors checkpoint, an official VLPart .pth or a 'vlpart export' .onnx",
    )
    which.add_argument(
        "--model",
        help="a released VLPart model by name (`vlpart models` lists them), downloaded and "
        "converted on first use",
    )
    p.add_argument(
        "--vocab",
        dest="vocabulary",
        help="vocabulary: 'dog:head,torso', 'dog; *:head', 'head', 'pascal_part', a .txt file, "
        "... (`vlpart vocab show SPEC` prints its categories and prompts; default: with "
        "--weights the vocabulary the checkpoint records, with --model the one it was "
        "evaluated on)",
    )
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    p.add_argument(
        "--score-thresh",
        dest="score_threshold",
        type=float,
        help="keep instances scoring at least this (default 0.3, SCORE_THRESH)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="fp32 (exact, default), bf16 (bfloat16 autocast: faster, slightly different) or "
        "int8 (CPU: onnxruntime static quantization, calibrated on --calibration; docs/int8.md)",
    )
    p.add_argument(
        "--calibration",
        nargs="+",
        metavar="IMAGES",
        help="int8: calibration image files, folders or patterns (default: the first 8 input "
        "images)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="image-decoding worker processes overlapping inference (default 1; 0 decodes "
        "in the main process)",
    )
    p.add_argument(
        "--writers",
        type=int,
        default=1,
        help="threads that encode the results and draw and write the overlays while the model "
        "runs (default 1; 0 does it in the main thread; the files are the same either way)",
    )
    p.add_argument(
        "--save-masks", action="store_true", help="also write one PNG per instance under OUT/masks/"
    )
    add_refine_options(p)
    add_text_options(p)


def run(args: argparse.Namespace) -> None:
    import torch

    from vlpart.inference.files import expand_inputs, predict_files
    from vlpart.inference.video import is_video

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise InputError(f"--workers must be at least 0, got {args.workers}")
    if args.writers < 0:
        raise InputError(f"--writers must be at least 0, got {args.writers}")
    if args.every < 1:
        raise InputError(f"--every must be at least 1, got {args.every}")
    paths, missing = expand_inputs(args.inputs, recursive=args.recursive)
    for item, reason in missing:
        logging.getLogger("vlpart").warning("%s: %s", item, reason)
    if not paths and not args.webcam:
        raise InputError("no input images found")
    vocabulary = requested_vocabulary(args)
    spec = segmenter_spec(
        args,
        vocabulary=vocabulary,
        device=args.device,
        precision=args.precision,
        calibration=_calibration(args, paths),
        refiner=refiner_spec(args),
    )
    segmenter = spec.build()
    if vocabulary is None:  # --weights without --vocab: the one the checkpoint records
        vocabulary = segmenter.recorded_vocabulary()
    video_errors = _videos(args, segmenter, vocabulary, [p for p in paths if is_video(p)])
    paths = [p for p in paths if not is_video(p)]
    if not paths:
        if video_errors:
            raise InputError(video_errors[0])
        return
    summary = predict_files(
        segmenter,
        paths,
        vocabulary=vocabulary,
        out_dir=args.out,
        score_threshold=args.score_threshold,
        batch_size=args.batch_size,
        save_masks=args.save_masks,
        num_workers=args.workers,
        writers=args.writers,
    )
    print(
        f"{len(summary.processed)} images, {summary.num_instances} instances -> {args.out}"
        + (f"; {len(summary.failed)} unreadable" if summary.failed else "")
    )
    if not summary.processed:
        raise InputError(f"none of the {len(paths)} images could be read")
    if video_errors:
        raise InputError(video_errors[0])


def _calibration(args: argparse.Namespace, paths: list) -> tuple[str, ...] | None:
    """The int8 calibration images: ``--calibration``'s, else the first input images."""
    from vlpart.inference.files import expand_inputs
    from vlpart.inference.int8_backend import DEFAULT_CALIBRATION_IMAGES
    from vlpart.inference.video import is_video

    if args.precision != "int8":
        if args.calibration:
            raise InputError("--calibration is for --precision int8")
        return None
    if args.calibration:
        images, _ = expand_inputs(args.calibration, recursive=args.recursive)
    else:
        images = [p for p in paths if not is_video(p)][:DEFAULT_CALIBRATION_IMAGES]
    images = [p for p in images if not is_video(p)]
    if not images:
        raise InputError("--precision int8 needs calibration images; give --calibration")
    return tuple(str(p) for p in images)


def _videos(args: argparse.Namespace, segmenter, vocabulary, videos: list) -> list[str]:
    """``vlpart predict`` on video files and the --webcam camera (vlpart.inference.video); returns
    the errors of videos that ended early (their outputs keep the frames decoded)."""
    from vlpart.inference.video import default_webcam, predict_video

    sources = [(str(v), None) for v in videos]
    if args.webcam:
        fmt, device = default_webcam()
        sources.append((device if args.webcam == "default" else args.webcam, fmt))
    errors = []
    for source, fmt in sources:
        summary = predict_video(
            segmenter,
            source,
            vocabulary=vocabulary,
            out_dir=args.out,
            score_threshold=args.score_threshold,
            every=args.every,
            input_format=fmt,
        )
        print(
            f"{source}: {summary.frames_processed} of {summary.frames_decoded} frames segmented, "
            f"{summary.num_instances} instances, {summary.frames_per_second:.2f} frames/s "
            f"-> {args.out}"
        )
        if summary.error:
            errors.append(f"{summary.error}; the outputs keep the frames decoded before it")
    return errors
