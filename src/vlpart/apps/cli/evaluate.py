"""``vlpart eval``: box and mask AP of a results file or of a model on a dataset; with
``--semantic``, the OV-PARTS semantic part segmentation numbers (mIoU, seen/unseen, h-IoU)."""

from __future__ import annotations

import argparse
import logging

from vlpart.apps.cli._options import add_text_options, segmenter_spec, text_options
from vlpart.core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="box and mask AP of detections or of a model on a dataset",
        description="COCO box and mask AP / AP50 / AP75 against COCO-format ground truth, with "
        "base/novel means, per-category AP and per-part AP of chosen objects; --lvis for PACO's "
        "federated (LVIS) protocol. Either evaluate a results file (--results) or run a model "
        "(--weights) over the ground truth's images with its categories as the vocabulary. "
        "--semantic: OV-PARTS semantic part segmentation (mIoU of seen and unseen classes, "
        "h-IoU) of label PNGs (--pred) or of a model (--weights, --image-root) against label "
        "PNGs (--gt), with --vocab naming the classes (pascal_part_116, ade20k_part_234).",
    )
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", help="COCO results JSON (list of detections)")
    source.add_argument("--weights", help="model checkpoint to run over the --gt images")
    source.add_argument(
        "--pred", help="with --semantic: folder of predicted label PNGs (<stem>.png, 255 = ignore)"
    )
    ev.add_argument(
        "--gt",
        required=True,
        help="COCO-format ground-truth JSON; with --semantic a folder of label PNGs "
        "(class index per pixel, 255 = ignore), e.g. annotations_detectron2_part/val",
    )
    ev.add_argument(
        "--semantic",
        action="store_true",
        help="OV-PARTS semantic part segmentation metrics instead of AP",
    )
    ev.add_argument(
        "--vocab", help="with --semantic: the classes, label i = row i (e.g. pascal_part_116)"
    )
    ev.add_argument(
        "--oracle-objects",
        metavar="OBJ_DIR",
        help="with --semantic: Oracle-Obj setting; folder of object label PNGs "
        "(annotations_detectron2_obj/val): predictions outside the objects are ignored",
    )
    ev.add_argument(
        "--score-thresh",
        type=float,
        help="with --semantic --weights: keep detections scoring at least this (default 0.3)",
    )
    ev.add_argument(
        "--image-root",
        help="folder the --gt file_name entries are relative to "
        "(with --weights; default: the --gt file's folder)",
    )
    ev.add_argument(
        "--config",
        help="experiment YAML whose text settings encode the "
        "categories (with --weights; default: the checkpoint's)",
    )
    ev.add_argument("--device", default="cpu", help="with --weights: cpu, cuda, ...")
    ev.add_argument(
        "--split",
        help="base/novel split: JSON file {'base': [names], 'novel': [names]} or a built-in "
        "taxonomy name (default: the built-in taxonomy whose names match the ground truth)",
    )
    ev.add_argument(
        "--lvis",
        dest="lvis_style",
        action="store_true",
        help="LVIS-style evaluation (neg_category_ids, not_exhaustive_category_ids, "
        "300 detections per image)",
    )
    ev.add_argument("--objects", help="comma-separated objects to detail per part, e.g. dog,cat")
    ev.add_argument(
        "--proposals",
        action="store_true",
        help="with --weights: class-agnostic proposal recall AR@30/100/300/1000 (IoU 0.5) of the "
        "model's RPN instead of AP (the paper's Table 2); --out gets proposal_recall.json",
    )
    ev.add_argument(
        "--out",
        help="directory for metrics.json and metrics.md (and, with --weights, results.json)",
    )
    add_text_options(ev)


def _model_results(args: argparse.Namespace) -> list[dict]:
    """Run --weights over the --gt images; the gt's categories are the vocabulary."""
    from pathlib import Path

    from vlpart.core.config import Config
    from vlpart.evaluation.model_eval import dataset_vocabulary, predict_dataset

    config_text = Config.from_yaml(args.config).text if args.config else None
    text = text_options(args, vocabulary=dataset_vocabulary(args.gt), config_text=config_text)
    segmenter = segmenter_spec(args, text=text, device=args.device).build()
    return predict_dataset(segmenter, args.gt, args.image_root or Path(args.gt).parent)


def run(args: argparse.Namespace) -> None:
    from vlpart.evaluation.coco_eval import evaluate_results

    if args.semantic or args.pred:
        _semantic(args)
        return
    semantic_only = {"--vocab": args.vocab, "--oracle-objects": args.oracle_objects}
    semantic_only["--score-thresh"] = args.score_thresh
    for flag in (f for f, v in semantic_only.items() if v is not None):
        raise InputError(f"{flag} goes with --semantic")
    if args.proposals:
        _proposal_recall(args)
        return
    objects = [o.strip() for o in (args.objects or "").split(",") if o.strip()]
    results = args.results or _model_results(args)
    report = evaluate_results(
        args.gt, results, split=args.split, objects=objects, lvis_style=args.lvis_style
    )
    if args.out and args.weights:
        from pathlib import Path

        from vlpart.core.fileio import write_json_atomic

        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(results, Path(args.out) / "results.json")
    if args.out:
        try:
            json_path, md_path = report.save(args.out)
        except OSError as err:
            raise InputError(f"{args.out}: cannot write the metrics ({err.strerror})") from None
        logging.getLogger(__name__).info("wrote %s and %s", json_path, md_path)
    print(report.to_markdown(), end="")


def _semantic(args: argparse.Namespace) -> None:
    from pathlib import Path

    from vlpart.core.vocab import parse_vocabulary
    from vlpart.evaluation.semantic import evaluate_label_maps

    if not args.semantic:
        raise InputError("--pred holds label maps: add --semantic")
    if args.results:
        raise InputError("--semantic scores label maps: give --pred PRED_DIR or --weights")
    if not args.vocab:
        raise InputError("--semantic needs --vocab, e.g. --vocab pascal_part_116")
    vocab = parse_vocabulary(args.vocab)
    if args.pred:
        scores = evaluate_label_maps(args.gt, args.pred, vocab, object_dir=args.oracle_objects)
    else:
        from vlpart.core.config import Config
        from vlpart.evaluation.model_eval import evaluate_semantic_model
        from vlpart.inference.segmenter import SCORE_THRESH

        if not args.image_root:
            raise InputError("--semantic --weights needs --image-root (the images of --gt)")
        names = None
        if args.oracle_objects:
            from vlpart.data.ov_parts import read_object_names

            names = read_object_names(args.oracle_objects, vocab)
            if names is None:
                logging.getLogger(__name__).warning(
                    "%s has no names.json: the model is not told the objects, so its "
                    "Oracle-Obj numbers equal the whole-image ones",
                    args.oracle_objects,
                )
        config_text = Config.from_yaml(args.config).text if args.config else None
        text = text_options(args, vocabulary=vocab, config_text=config_text)
        segmenter = segmenter_spec(args, text=text, device=args.device).build()
        scores = evaluate_semantic_model(
            segmenter,
            args.gt,
            args.image_root,
            vocab,
            object_dir=args.oracle_objects,
            object_names=names,
            score_thresh=SCORE_THRESH if args.score_thresh is None else args.score_thresh,
            pred_dir=Path(args.out) / "pred" if args.out else None,
        )
    if args.out:
        scores.save(args.out)
    print(scores.to_markdown(), end="")


def _proposal_recall(args: argparse.Namespace) -> None:
    from pathlib import Path

    from vlpart.core.fileio import write_json_atomic
    from vlpart.evaluation.model_eval import dataset_proposal_recall
    from vlpart.model import load_checkpoint

    if not args.weights:
        raise InputError("--proposals needs --weights (the model whose proposals to evaluate)")
    gt = Path(args.gt)
    model = load_checkpoint(args.weights)[0].to(args.device)
    image_root = Path(args.image_root) if args.image_root else gt.parent
    recall = dataset_proposal_recall(model, gt, image_root)
    print("| proposals | " + " | ".join(f"AR@{k}" for k in recall) + " |")
    print("|---|" + "---:|" * len(recall))
    print("| all | " + " | ".join(f"{100 * v:.1f}" for v in recall.values()) + " |")
    if args.out:
        write_json_atomic(
            {f"AR@{k}": v for k, v in recall.items()}, Path(args.out) / "proposal_recall.json"
        )
