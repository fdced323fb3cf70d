"""``vlpart parse``: parse novel objects into parts."""

from __future__ import annotations

import argparse
import os


def add_parser(sub: argparse._SubParsersAction) -> None:
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


def run(args: argparse.Namespace) -> None:
    from vlpart.core.config import Config, ConfigError
    from vlpart.parsing.run import run_parse

    config = Config.from_yaml(args.config).parse
    try:
        out = run_parse(config, args.out, device=args.device)
    except ConfigError as err:  # a setting missing from the config file
        raise ConfigError(f"{args.config}: {err}") from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"parsed parts: {out}")
