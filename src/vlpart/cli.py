"""The ``vlpart`` command line. Each sub-command is a ``_add_<name>`` parser builder and a
``_run_<name>`` function; errors users can fix print one line and exit with status 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_USAGE = 2
# Where ``vlpart quickstart`` writes by default; ``vlpart demo`` loads its model from there.
QUICKSTART_OUT = "quickstart"


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


def _add_text_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder", choices=("clip", "minilm", "precomputed"), help="text encoder for the prompts"
    )
    parser.add_argument(
        "--template",
        default="a_object_part",
        help="part prompt template: a_object_part ('a dog head', default), "
        "part_of_object ('head of a dog') or a string with {object} {part}",
    )
    parser.add_argument(
        "--embeddings",
        help="[C, D] .npy file for --encoder precomputed, rows in the vocabulary's order",
    )
    parser.add_argument(
        "--clip-weights",
        help="local CLIP weights file (default: $VLPART_CLIP_WEIGHTS, else download 'openai')",
    )
    parser.add_argument(
        "--cache-dir", help="embedding cache (default: $VLPART_CACHE/text or ~/.cache/vlpart/text)"
    )


def _add_vocab(sub: argparse._SubParsersAction) -> None:
    vocab = sub.add_parser("vocab", help="list and inspect vocabularies")
    vsub = vocab.add_subparsers(dest="vocab_command", required=True)
    vsub.add_parser("list", help="list the built-in vocabularies")
    show = vsub.add_parser(
        "show",
        help="print a vocabulary's categories and prompts",
        description="Print the categories of a built-in vocabulary or a spec such as "
        "'dog; cat:head,ear' or 'dog:*', with prompts, base/novel flags and, given "
        "--encoder, each category's nearest neighbours in text-embedding space.",
    )
    show.add_argument("spec", help="built-in name, spec string or vocabulary .txt file")
    show.add_argument(
        "--neighbours",
        type=int,
        default=3,
        metavar="K",
        help="nearest neighbours per category with --encoder (default 3)",
    )
    _add_text_options(show)


def _run_vocab(args: argparse.Namespace) -> None:
    from vlpart.vocab import BUILTIN_VOCABULARIES, load_builtin, parse_vocabulary

    if args.vocab_command == "list":
        print(f"{'name':<14}{'categories':>11}{'objects':>9}{'parts':>7}{'base':>6}{'novel':>7}")
        for name in BUILTIN_VOCABULARIES:
            v = load_builtin(name)
            parts = sum(c.is_part for c in v)
            base, novel = sum(v.split_mask("base")), sum(v.split_mask("novel"))
            print(f"{name:<14}{len(v):>11}{len(v.objects):>9}{parts:>7}{base:>6}{novel:>7}")
        return
    vocab = parse_vocabulary(args.spec)
    prompts = vocab.prompts(args.template)
    neighbours: list[str] = [""] * len(vocab)
    if args.encoder:
        from vlpart.text import build_text_encoder

        encoder = build_text_encoder(
            args.encoder,
            vocabulary=vocab,
            template=args.template,
            embeddings=args.embeddings,
            clip_weights=args.clip_weights,
            cache_dir=args.cache_dir,
        )
        emb = encoder.encode(prompts)
        sim = emb @ emb.T
        sim.fill_diagonal_(float("-inf"))
        k = min(args.neighbours, len(vocab) - 1)
        if k > 0:
            scores, idx = sim.topk(k, dim=1)
            neighbours = [
                ", ".join(
                    f"{vocab[int(j)].name} ({s:.2f})" for s, j in zip(srow, irow, strict=True)
                )
                for srow, irow in zip(scores.tolist(), idx.tolist(), strict=True)
            ]
    width = max(len(n) for n in vocab.names) + 2
    pwidth = max(len(p) for p in prompts) + 2
    print(
        f"# {vocab.name}: {len(vocab)} categories"
        + (f", nearest neighbours by {encoder.identity}" if args.encoder else "")
    )
    for i, (cat, prompt) in enumerate(zip(vocab, prompts, strict=True)):
        split = cat.split or "-"
        print(
            f"{i:>4} {cat.id:>5} {cat.name:<{width}}{prompt!r:<{pwidth + 2}}{split:<6}"
            f"{neighbours[i]}".rstrip()
        )


def _add_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="box and mask AP of detections or of a model on a dataset",
        description="COCO box and mask AP / AP50 / AP75 against COCO-format ground truth, with "
        "base/novel means, per-category AP and per-part AP of chosen objects; --lvis for PACO's "
        "federated (LVIS) protocol. Either evaluate a results file (--results) or run a model "
        "(--weights) over the ground truth's images with its categories as the vocabulary.",
    )
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", help="COCO results JSON (list of detections)")
    source.add_argument("--weights", help="model checkpoint to run over the --gt images")
    ev.add_argument("--gt", required=True, help="COCO-format ground-truth JSON")
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
    _add_text_options(ev)


def _model_results(args: argparse.Namespace) -> list[dict]:
    """Run --weights over the --gt images; the gt's categories are the vocabulary."""
    from pathlib import Path

    from vlpart.coco import category_vocabulary, load_coco
    from vlpart.config import Config
    from vlpart.engine.inference import predict_dataset
    from vlpart.predictor import PartSegmenter

    gt = Path(args.gt)
    vocab = category_vocabulary(load_coco(gt)["categories"], name=gt.stem)
    text = Config.from_yaml(args.config).text if args.config else None
    segmenter = PartSegmenter.from_pretrained(
        args.weights,
        text_encoder=args.encoder or (text.encoder if text else None),
        embeddings=args.embeddings,
        vocabulary=vocab,
        clip_weights=args.clip_weights or (text.clip_weights if text else None),
        cache_dir=args.cache_dir or (text.cache_dir if text else None),
        template=args.template,
        device=args.device,
    )
    image_root = Path(args.image_root) if args.image_root else gt.parent
    return predict_dataset(segmenter, gt, image_root)


def _run_eval(args: argparse.Namespace) -> None:
    from vlpart.engine.evaluate import evaluate_results

    if args.proposals:
        _run_proposal_recall(args)
        return
    objects = [o.strip() for o in (args.objects or "").split(",") if o.strip()]
    results = args.results or _model_results(args)
    report = evaluate_results(
        args.gt, results, split=args.split, objects=objects, lvis_style=args.lvis_style
    )
    if args.out and args.weights:
        from pathlib import Path

        from vlpart._io import write_json_atomic

        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(results, Path(args.out) / "results.json")
    if args.out:
        try:
            json_path, md_path = report.save(args.out)
        except OSError as err:
            raise CliError(f"{args.out}: cannot write the metrics ({err.strerror})") from None
        logging.getLogger(__name__).info("wrote %s and %s", json_path, md_path)
    print(report.to_markdown(), end="")


def _run_proposal_recall(args: argparse.Namespace) -> None:
    from pathlib import Path

    from vlpart._io import write_json_atomic
    from vlpart.engine.inference import dataset_proposal_recall
    from vlpart.model import load_checkpoint

    if not args.weights:
        raise CliError("--proposals needs --weights (the model whose proposals to evaluate)")
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


def _add_convert(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser(
        "convert",
        help="convert an official VLPart checkpoint to safetensors",
        description="Convert a released VLPart detectron2 checkpoint (R50 Mask R-CNN or Swin-B "
        "Cascade, .pth) into OUT.safetensors plus its OUT.json sidecar.",
    )
    convert.add_argument("input", help="official checkpoint (.pth)")
    convert.add_argument("output", help="target .safetensors file")


def _run_convert(args: argparse.Namespace) -> None:
    from vlpart.model.checkpoint import sidecar_path
    from vlpart.model.convert import convert_official_checkpoint

    if not args.output.endswith(".safetensors"):
        raise CliError(f"{args.output}: the output must be a .safetensors file")
    out = convert_official_checkpoint(args.input, args.output)
    print(f"wrote {out} and {sidecar_path(out)}")


def _add_models(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "models",
        help="list the released VLPart models",
        description="The released VLPart checkpoints that `predict --model NAME` and "
        "PartSegmenter.from_pretrained(NAME) load, with the AP their authors report on the "
        "vocabulary they were evaluated on, and whether they are in $VLPART_CACHE.",
    )


def _run_models(args: argparse.Namespace) -> None:
    from vlpart.model.zoo import BENCHMARK_NAMES, MODELS, is_cached

    rows = [("name", "backbone", "training data", "reported AP", "cached")]
    for spec in MODELS.values():
        ap = spec.reported_ap
        rows.append(
            (
                spec.name,
                "Swin-B cascade" if spec.cascade else "R50",
                " + ".join(spec.training_data),
                f"{ap:.1f} {BENCHMARK_NAMES[spec.vocabulary]}" if ap is not None else "-",
                "yes" if is_cached(spec.name) else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _add_export(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="export a model to ONNX",
        description="Export the detector to an ONNX file that onnxruntime runs "
        "(PartSegmenter.from_onnx, or 'vlpart predict --weights OUT.onnx'). The graph takes "
        "one resized, normalised image of any size and returns boxes, scores, labels and "
        "28x28 mask probabilities; the vocabulary's text embeddings are baked in, or with "
        "--dynamic-vocab a second input.",
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="our .safetensors checkpoint or an official .pth")
    source.add_argument("--model", help="a model name from the model zoo")
    export.add_argument(
        "--vocab",
        dest="vocabulary",
        required=True,
        help="vocabulary baked into the graph (with --dynamic-vocab: the capture example)",
    )
    export.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx")
    export.add_argument(
        "--dynamic-vocab",
        action="store_true",
        help="take the text embeddings [C, D] as a graph input instead of baking them in",
    )
    export.add_argument("output", help="the .onnx file to write")
    _add_text_options(export)


def _segmenter_from_args(args: argparse.Namespace, vocabulary, **options):
    """The segmenter ``--weights``/``--model`` and the text options of ``args`` describe."""
    from vlpart.predictor import PartSegmenter

    return PartSegmenter.from_pretrained(
        args.weights or args.model,
        text_encoder=args.encoder,
        embeddings=args.embeddings,
        vocabulary=vocabulary,
        clip_weights=args.clip_weights,
        cache_dir=args.cache_dir,
        template=args.template,
        **options,
    )


def _run_export(args: argparse.Namespace) -> None:
    from vlpart.export import export_onnx
    from vlpart.vocab import parse_vocabulary

    if not args.output.endswith(".onnx"):
        raise CliError(f"{args.output}: the output must be a .onnx file")
    vocabulary = parse_vocabulary(args.vocabulary)
    segmenter = _segmenter_from_args(args, vocabulary)
    out = export_onnx(segmenter, vocabulary, args.output, dynamic_vocab=args.dynamic_vocab)
    kind = "dynamic vocabulary" if args.dynamic_vocab else f"{len(vocabulary)} categories"
    print(f"wrote {out} ({kind})")


def _add_data(sub: argparse._SubParsersAction) -> None:
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


def _run_data(args: argparse.Namespace) -> None:
    if args.data_command == "convert-pascal-part":
        from vlpart.data.pascal_part import convert_pascal_part

        names = None
        if args.split:
            try:
                with open(args.split) as f:
                    names = [line.split()[0] for line in f if line.strip()]
            except OSError as err:
                message = f"{args.split}: cannot read the split file ({err.strerror})"
                raise CliError(message) from None
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
    from vlpart.data.synth import synthesize_world

    summary = synthesize_world(
        args.out, seed=args.seed, num_images=args.images, image_size=args.image_size
    )
    print(
        f"{summary.num_train} train + {summary.num_val} val images, {summary.num_objects} "
        f"objects, {summary.num_parts} parts -> {summary.out_dir}"
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a detector on the data sources of a config",
        description="Joint training on part, object, image-level and parsed-part data. Under "
        "'torchrun --nproc-per-node N' it runs DistributedDataParallel. Ctrl-C saves "
        "a checkpoint; --resume continues exactly where it stopped.",
    )
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument(
        "--init-weights", help="start from these weights (.safetensors), e.g. to fine-tune"
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def _run_train(args: argparse.Namespace) -> None:
    import torch

    from vlpart.config import Config
    from vlpart.engine.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = train(
        Config.from_yaml(args.config), args.out, resume=args.resume, init_weights=args.init_weights
    )
    print(f"weights: {weights}")


def _add_predict(sub: argparse._SubParsersAction) -> None:
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
        help="vocabulary: 'dog:head,torso', 'pascal_part', a .txt file, ... (required with "
        "--weights; with --model default: the vocabulary the model was evaluated on)",
    )
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    p.add_argument(
        "--score-thresh",
        dest="score_threshold",
        type=float,
        help="keep instances scoring at least this (default: vlpart.predictor.SCORE_THRESH, 0.3)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="fp32 (exact, default) or bf16 (bfloat16 autocast: faster, slightly different)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="image-decoding worker processes overlapping inference (default 1; 0 decodes "
        "in the main process)",
    )
    p.add_argument(
        "--save-masks", action="store_true", help="also write one PNG per instance under OUT/masks/"
    )
    _add_refine_options(p)
    _add_text_options(p)


def _add_refine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SAM refinement (needs the 'sam' extra)")
    g.add_argument(
        "--refine",
        metavar="SPEC",
        help="re-segment every detection with Segment Anything from its box: sam (= sam:vit_b), "
        "sam:vit_l, sam:vit_h, sam2 (SAM 2.1, = sam2:tiny), sam2:small|base_plus|large "
        "(weights fetched into $VLPART_CACHE/sam), or sam:FILE.pth / sam2:FILE.pt",
    )
    g.add_argument(
        "--mask-prompt",
        action="store_true",
        help="with --refine: also prompt SAM with the detector's mask",
    )
    g.add_argument(
        "--no-clip-to-parent",
        dest="clip_to_parent",
        action="store_false",
        help="with --refine: let part masks extend outside their object's mask",
    )
    g.add_argument(
        "--min-region-area",
        type=int,
        metavar="PX",
        help="with --refine: fill holes and drop specks under PX pixels (default 100; 0: off)",
    )


def _refiner_from_args(args: argparse.Namespace):
    """The refiner ``--refine`` asks for, or None; refinement options without it are errors."""
    if args.refine is None:
        used = [
            flag
            for flag, value in (
                ("--mask-prompt", args.mask_prompt),
                ("--no-clip-to-parent", not args.clip_to_parent),
                ("--min-region-area", args.min_region_area is not None),
            )
            if value
        ]
        if used:
            raise CliError(f"{', '.join(used)} only work with --refine")
        return None
    from vlpart.refine import MIN_REGION_AREA, build_refiner

    return build_refiner(
        args.refine,
        device=args.device,
        mask_prompt=args.mask_prompt,
        clip_to_parent=args.clip_to_parent,
        min_region_area=MIN_REGION_AREA if args.min_region_area is None else args.min_region_area,
    )


def _run_predict(args: argparse.Namespace) -> None:
    import torch

    from vlpart.engine.predict import expand_inputs, predict_files
    from vlpart.engine.video import is_video
    from vlpart.vocab import parse_vocabulary

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise CliError(f"--workers must be at least 0, got {args.workers}")
    if args.every < 1:
        raise CliError(f"--every must be at least 1, got {args.every}")
    paths, missing = expand_inputs(args.inputs, recursive=args.recursive)
    for item, reason in missing:
        logging.getLogger("vlpart").warning("%s: %s", item, reason)
    if not paths and not args.webcam:
        raise CliError("no input images found")
    if args.vocabulary is None:
        if args.model is None:
            raise CliError("--vocab is required with --weights")
        from vlpart.model.zoo import get_model

        args.vocabulary = get_model(args.model).vocabulary
    vocabulary = parse_vocabulary(args.vocabulary)
    refiner = _refiner_from_args(args)
    segmenter = _segmenter_from_args(
        args, vocabulary, device=args.device, precision=args.precision, refiner=refiner
    )
    video_errors = _run_videos(args, segmenter, vocabulary, [p for p in paths if is_video(p)])
    paths = [p for p in paths if not is_video(p)]
    if not paths:
        if video_errors:
            raise CliError(video_errors[0])
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
    )
    print(
        f"{len(summary.processed)} images, {summary.num_instances} instances -> {args.out}"
        + (f"; {len(summary.failed)} unreadable" if summary.failed else "")
    )
    if not summary.processed:
        raise CliError(f"none of the {len(paths)} images could be read")
    if video_errors:
        raise CliError(video_errors[0])


def _run_videos(args: argparse.Namespace, segmenter, vocabulary, videos: list) -> list[str]:
    """``vlpart predict`` on video files and the --webcam camera (engine/video.py); returns
    the errors of videos that ended early (their outputs keep the frames decoded)."""
    from vlpart.engine.video import default_webcam, predict_video

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


def _add_parse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parse",
        help="parse novel objects into parts by dense correspondence",
        description="Build a bank of annotated base objects, match every novel-object instance "
        "to its nearest base object with self-supervised features, carry the base "
        "part masks over, snap the boxes to the detector's proposals and write "
        "OUT/parsed_parts.json (train on it with kind: parsed). Under 'torchrun' "
        "every rank parses a shard and rank 0 merges them. Re-running resumes.",
    )
    p.add_argument("config", help="YAML with a 'parse:' section")
    p.add_argument("--out", default="runs/parsed", help="output folder (default runs/parsed)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")


def _run_parse(args: argparse.Namespace) -> None:
    from vlpart.config import Config
    from vlpart.engine.parse import run_parse

    config = Config.from_yaml(args.config).parse
    try:
        out = run_parse(config, args.out, device=args.device)
    except ValueError as err:
        if str(err).startswith("parse."):  # a setting missing from the config file
            raise CliError(f"{args.config}: {err}") from None
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"parsed parts: {out}")


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="the paper's experiment in miniature, offline (~10 min on 2 cores)",
        description="Draw a synthetic parts world, train three detectors (base parts; + object "
        "data; + parts parsed from the novel objects; the last two fine-tuned from the first), "
        "evaluate all/base/novel part AP, and write OUT/report.md, OUT/metrics.json and "
        "OUT/model.safetensors. The schedule is fixed: the table depends on the seed only.",
    )
    p.add_argument(
        "--out", default=QUICKSTART_OUT, help=f"output folder (default ./{QUICKSTART_OUT})"
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        help="cut the schedule to fit this many minutes on this machine: a cut-down run whose "
        "numbers differ from the README's (default: the full, fixed schedule)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the world and the training")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="the longer run: seeds SEED..SEED+N-1, mean ± std per row (N ≥ 2; N times as long)",
    )


def _run_quickstart(args: argparse.Namespace) -> None:
    from pathlib import Path

    from vlpart.engine.quickstart import QuickstartSettings, run_quickstart, run_quickstart_seeds

    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise CliError(f"--budget-minutes must be positive, got {args.budget_minutes}")
    if args.seeds < 1:
        raise CliError(f"--seeds must be at least 1, got {args.seeds}")
    settings = QuickstartSettings(seed=args.seed, budget_minutes=args.budget_minutes)
    if args.seeds > 1:
        run_quickstart_seeds(args.out, settings, num_seeds=args.seeds)
        print((Path(args.out) / "report.md").read_text().rstrip())
        print(f"\nreport: {Path(args.out) / 'report.md'}")
        return
    result = run_quickstart(args.out, settings)
    report = (Path(args.out) / "report.md").read_text()
    print(report.split("## ")[0].rstrip())
    print(f"\nreport: {Path(args.out) / 'report.md'}; model: {result['model']}")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="a local web page to segment objects and parts",
        description="Serve a web page (Gradio) where you upload or paste an image, type a "
        "vocabulary and see the objects and parts found: an overlay, a table of instances and "
        "downloads of the COCO results and the overlay. It binds 127.0.0.1 (this machine "
        "only) unless --host says otherwise, limits upload size and image pixels, runs one "
        "request at a time and sends nothing anywhere.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--weights",
        help="our .safetensors checkpoint or an official VLPart .pth "
        f"(default: ./{QUICKSTART_OUT}/model.safetensors, written by 'vlpart quickstart')",
    )
    source.add_argument("--model", help="a model name, loaded with PartSegmenter.from_pretrained")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--examples",
        default="../shared/data/pascal_part_examples",
        help="folder whose first images are offered as examples, when it exists "
        "(default ../shared/data/pascal_part_examples)",
    )
    # Defaults of the three limits: vlpart.app.DemoLimits (the help texts name them).
    p.add_argument("--max-upload-mb", type=float, help="largest upload in MB (default 25)")
    p.add_argument(
        "--max-pixels",
        type=int,
        help="largest image (width x height), refused from its header (default 24000000)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        help="model runs at a time; further requests wait in a queue (default 1)",
    )


def _run_demo(args: argparse.Namespace) -> None:
    from pathlib import Path

    from vlpart.app import DemoHandler, DemoLimits, find_examples, serve
    from vlpart.predictor import PartSegmenter

    given = {
        "max_upload_mb": args.max_upload_mb,
        "max_pixels": args.max_pixels,
        "concurrency": args.concurrency,
    }
    limits = DemoLimits(**{k: v for k, v in given.items() if v is not None})
    weights = args.model or args.weights
    if weights is None:
        default = Path(QUICKSTART_OUT) / "model.safetensors"
        if not default.is_file():
            raise CliError(
                f"no model: pass --weights FILE or --model NAME, or run 'vlpart quickstart' "
                f"(it writes {default})"
            )
        weights = str(default)
    segmenter = PartSegmenter.from_pretrained(weights)
    try:
        serve(
            DemoHandler(segmenter, limits=limits),
            host=args.host,
            port=args.port,
            examples=find_examples(args.examples),
        )
    except OSError as err:
        raise CliError(f"cannot serve on {args.host}:{args.port} ({err})") from None


def _build_parser() -> argparse.ArgumentParser:
    from vlpart import __version__

    parser = argparse.ArgumentParser(
        prog="vlpart", description="Open-vocabulary part segmentation (VLPart) on PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"vlpart {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_vocab(sub)
    _add_eval(sub)
    _add_convert(sub)
    _add_models(sub)
    _add_export(sub)
    _add_data(sub)
    _add_train(sub)
    _add_predict(sub)
    _add_parse(sub)
    _add_quickstart(sub)
    _add_demo(sub)
    return parser


_RUNNERS = {
    "data": _run_data,
    "vocab": _run_vocab,
    "eval": _run_eval,
    "convert": _run_convert,
    "models": _run_models,
    "export": _run_export,
    "train": _run_train,
    "predict": _run_predict,
    "parse": _run_parse,
    "quickstart": _run_quickstart,
    "demo": _run_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="vlpart: %(levelname)s: %(message)s",
    )
    try:
        _check_common_options(args)
        _RUNNERS[args.command](args)
    except KeyboardInterrupt:
        print("vlpart: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = _user_message(err)
        if message is None:
            raise  # a bug: keep its traceback
        print(f"vlpart: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _check_common_options(args: argparse.Namespace) -> None:
    """Options several commands share, checked before any work starts."""
    template = getattr(args, "template", None)
    if template is not None:
        from vlpart.vocab import prompt_template

        try:
            prompt_template(template)
        except ValueError as err:
            raise CliError(f"--template: {err}") from None
    device = getattr(args, "device", None)
    if device is not None and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: CUDA is not available on this machine")


# Errors that user input, files or the machine cause. ValueError & co. count only when vlpart
# raised them itself (after checking an input); raised deep inside a library they are bugs.
_ENVIRONMENT_ERRORS = (CliError, OSError, ImportError)
_CHECKED_ERRORS = (ValueError, KeyError, RuntimeError, TypeError, ArithmeticError)


def _user_message(err: Exception) -> str | None:
    """The one-line message of a user-caused error, or None for an internal bug."""
    if isinstance(err, OSError) and err.errno is not None and err.filename is not None:
        reason = (err.strerror or "").rstrip(".") or type(err).__name__
        reason = reason[:1].lower() + reason[1:]
        message = f"{err.filename}: {reason}"
    elif isinstance(err, _ENVIRONMENT_ERRORS):
        message = str(err)
    elif isinstance(err, _CHECKED_ERRORS) and _raised_by_vlpart(err):
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    else:
        return None
    return " ".join(str(message).split()) or type(err).__name__


def _raised_by_vlpart(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is vlpart's own code."""
    from pathlib import Path

    import vlpart

    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).is_relative_to(Path(vlpart.__file__).parent)


if __name__ == "__main__":
    sys.exit(main())
