"""``vlpart finetune``: fine-tune a model on a COCO file in one command (no YAML)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on your own COCO file of objects and parts",
        description="Fine-tune MODEL on the categories of TRAIN.json (object:part names, "
        "PartImageNet-style 'Quadruped Head' names or plain objects). Prints the plan chosen "
        "for the data, trains with a progress bar, then writes OUT/model.safetensors (with its "
        "vocabulary), OUT/report.md and OUT/metrics.json (start -> fine-tuned on the validation "
        "images). Ctrl-C or a kill loses at most one checkpoint period; --resume continues.",
    )
    p.add_argument("train_file", metavar="TRAIN.json", help="COCO file with boxes and masks")
    p.add_argument("image_root", metavar="IMAGES", help="folder its file_name entries are in")
    p.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="MODEL",
        help="starting model: a zoo name (vlpart models), a .safetensors checkpoint or an "
        "official VLPart .pth",
    )
    p.add_argument("--out", required=True, help="run folder (new or empty, unless --resume)")
    p.add_argument(
        "--val", dest="val_file", help="COCO file of validation images (default: hold out 10 %%)"
    )
    p.add_argument("--iterations", type=int, help="schedule length (default: from the data)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--no-keep-known",
        dest="keep_known",
        action="store_false",
        help="do not add the starting model's detections of the categories it knew to the "
        "training images (faster; it then forgets more)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def run(args: argparse.Namespace) -> None:
    import torch

    from vlpart.training.finetune import finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    result = finetune(
        args.train_file,
        args.image_root,
        start=args.start,
        out=args.out,
        val_file=args.val_file,
        iterations=args.iterations,
        resume=args.resume,
        keep_known=args.keep_known,
    )
    print(f"weights: {result['weights']}\nreport: {args.out}/report.md")
