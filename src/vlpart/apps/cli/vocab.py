"""``vlpart vocab list | show``: the built-in vocabularies and what a spec expands to."""

from __future__ import annotations

import argparse

from vlpart.apps.cli._options import add_text_options, text_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    vocab = sub.add_parser("vocab", help="list and inspect vocabularies")
    vsub = vocab.add_subparsers(dest="vocab_command", required=True)
    vsub.add_parser("list", help="list the built-in vocabularies")
    show = vsub.add_parser(
        "show",
        help="print a vocabulary's categories and prompts",
        description="Print the categories of a built-in vocabulary or a spec such as "
        "'dog; cat:head,ear', 'dog:*', 'dog; cat; *:head' or 'legs', with the exact prompts "
        "sent to the text encoder, base/novel flags, the entry each category was rewritten or "
        "expanded from ('<- *:head') and, given --encoder, each category's nearest "
        "neighbours in text-embedding space.",
    )
    show.add_argument("spec", help="built-in name, spec string or vocabulary .txt file")
    show.add_argument(
        "--neighbours",
        type=int,
        default=3,
        metavar="K",
        help="nearest neighbours per category with --encoder (default 3)",
    )
    add_text_options(show)


def run(args: argparse.Namespace) -> None:
    from vlpart.core.vocab import BUILTIN_VOCABULARIES, load_builtin, parse_vocabulary

    if args.vocab_command == "list":
        print(f"{'name':<14}{'categories':>11}{'objects':>9}{'parts':>7}{'base':>6}{'novel':>7}")
        for name in BUILTIN_VOCABULARIES:
            n = load_builtin(name).counts()
            print(
                f"{name:<14}{n['categories']:>11}{n['objects']:>9}{n['parts']:>7}"
                f"{n['base']:>6}{n['novel']:>7}"
            )
        return
    vocab = parse_vocabulary(args.spec)
    prompts = vocab.prompts(args.template)
    neighbours: list[str] = [""] * len(vocab)
    if args.encoder:
        from vlpart.text import nearest_neighbours

        encoder = text_options(args, vocabulary=vocab).build()
        scores, idx = nearest_neighbours(encoder.encode(prompts), args.neighbours)
        neighbours = [
            ", ".join(f"{vocab[int(j)].name} ({s:.2f})" for s, j in zip(srow, irow, strict=True))
            for srow, irow in zip(scores.tolist(), idx.tolist(), strict=True)
        ]
    width = max(len(n) for n in vocab.names) + 2
    pwidth = max(len(p) for p in prompts) + 2
    entries = [f"<- {c.entry}" if c.entry else "" for c in vocab]
    ewidth = max(len(e) for e in entries) + 2 if any(entries) else 0
    print(
        f"# {vocab.name}: {len(vocab)} categories"
        + (f", nearest neighbours by {encoder.identity}" if args.encoder else "")
    )
    for i, (cat, prompt) in enumerate(zip(vocab, prompts, strict=True)):
        split = cat.split or "-"
        print(
            f"{i:>4} {cat.id:>5} {cat.name:<{width}}{prompt!r:<{pwidth + 2}}{split:<6}"
            f"{entries[i]:<{ewidth}}{neighbours[i]}".rstrip()
        )
