"""``vlpart models``: the released VLPart models."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "models",
        help="list the released VLPart models",
        description="The released VLPart checkpoints that `predict --model NAME` and "
        "PartSegmenter.from_pretrained(NAME) load, with the AP their authors report on the "
        "vocabulary they were evaluated on, and whether they are in $VLPART_CACHE.",
    )


def run(args: argparse.Namespace) -> None:
    from vlpart.model.zoo import model_table

    rows = model_table()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
