"""Options several commands share, and the one place a segmenter spec is read from them."""

from __future__ import annotations

import argparse

from vlpart.core.errors import InputError

__all__ = [
    "QUICKSTART_OUT",
    "add_refine_options",
    "add_text_options",
    "check_common_options",
    "refiner_spec",
    "segmenter_spec",
    "text_options",
]

# Where ``vlpart quickstart`` writes by default; ``vlpart demo`` loads its model from there.
QUICKSTART_OUT = "quickstart"


def add_text_options(parser: argparse.ArgumentParser) -> None:
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


def text_options(args: argparse.Namespace, *, vocabulary=None, config_text=None):
    """The :class:`vlpart.text.TextOptions` of the text flags (over an experiment's ``text:``
    section ``config_text`` when given); ``vocabulary`` is the one precomputed rows follow."""
    from vlpart.text import TextOptions

    given = {
        "encoder": args.encoder,
        "template": args.template,
        "embeddings": args.embeddings,
        "vocabulary": vocabulary,
        "clip_weights": args.clip_weights,
        "cache_dir": args.cache_dir,
    }
    if config_text is not None:
        return TextOptions.from_config(config_text, **given)
    return TextOptions(**{k: v for k, v in given.items() if v is not None})


def requested_vocabulary(args: argparse.Namespace):
    """The :class:`vlpart.core.vocab.Vocabulary` of ``--vocab``, else the one of the zoo model
    ``--model`` names, else None (``--weights``: the one the checkpoint records, see
    :meth:`vlpart.inference.segmenter.PartSegmenter.recorded_vocabulary`)."""
    from vlpart.core.vocab import parse_vocabulary

    spec = args.vocabulary
    if spec is None and args.model is not None:
        from vlpart.model.zoo import get_model

        spec = get_model(args.model).vocabulary
    return None if spec is None else parse_vocabulary(spec)


def segmenter_spec(args: argparse.Namespace, *, vocabulary=None, **fields):
    """The :class:`vlpart.inference.segmenter.SegmenterSpec` that ``--weights``/``--model``, the
    text flags and ``fields`` (``device``, ``precision``, ``refiner``, ``text``) describe."""
    from vlpart.inference.segmenter import SegmenterSpec

    fields.setdefault("text", text_options(args, vocabulary=vocabulary))
    return SegmenterSpec(args.weights or args.model, **fields)


def add_refine_options(p: argparse.ArgumentParser) -> None:
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


def refiner_spec(args: argparse.Namespace):
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
            raise InputError(f"{', '.join(used)} only work with --refine")
        return None
    from vlpart.inference.refine import MIN_REGION_AREA, RefinerSpec

    return RefinerSpec(
        args.refine,
        mask_prompt=args.mask_prompt,
        clip_to_parent=args.clip_to_parent,
        min_region_area=MIN_REGION_AREA if args.min_region_area is None else args.min_region_area,
    )


def check_common_options(args: argparse.Namespace) -> None:
    """Options several commands share, checked before any work starts."""
    template = getattr(args, "template", None)
    if template is not None:
        from vlpart.core.vocab import prompt_template

        try:
            prompt_template(template)
        except ValueError as err:
            raise InputError(f"--template: {err}") from None
    device = getattr(args, "device", None)
    if device is not None:
        from vlpart.core.distributed import parse_device

        try:
            parse_device(device)
        except InputError as err:
            raise InputError(f"--device: {err}") from None
