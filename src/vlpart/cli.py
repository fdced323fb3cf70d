"""The ``vlpart`` command line. Each sub-command is a ``_add_<name>`` parser builder and a
``_run_<name>`` function; errors users can fix print one line and exit with status 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_USAGE = 2


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


def _build_parser() -> argparse.ArgumentParser:
    from vlpart import __version__

    parser = argparse.ArgumentParser(
        prog="vlpart", description="Open-vocabulary part segmentation (VLPart) on PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"vlpart {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_vocab(sub)
    return parser


_RUNNERS = {
    "vocab": _run_vocab,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="vlpart: %(levelname)s: %(message)s",
    )
    try:
        _RUNNERS[args.command](args)
    except (CliError, ValueError, FileNotFoundError, KeyError, ImportError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"vlpart: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vlpart: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
