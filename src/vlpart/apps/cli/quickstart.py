"""``vlpart quickstart``: the paper's experiment in miniature, offline."""

from __future__ import annotations

import argparse

from vlpart.apps.cli._options import QUICKSTART_OUT
from vlpart.core.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--amp",
        action="store_true",
        help="train with bfloat16 autocast: a faster step on CPUs with AVX-512 BF16, other "
        "numerics (AP within the seed spread, measured)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the world and the training")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="the longer run: seeds SEED..SEED+N-1, mean ± std per row (N ≥ 2; N times as long)",
    )


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from vlpart.apps.quickstart.run import QuickstartSettings, run_quickstart, run_quickstart_seeds

    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise InputError(f"--budget-minutes must be positive, got {args.budget_minutes}")
    if args.seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {args.seeds}")
    settings = QuickstartSettings(seed=args.seed, budget_minutes=args.budget_minutes, amp=args.amp)
    if args.seeds > 1:
        run_quickstart_seeds(args.out, settings, num_seeds=args.seeds)
        print((Path(args.out) / "report.md").read_text().rstrip())
        print(f"\nreport: {Path(args.out) / 'report.md'}")
        return
    result = run_quickstart(args.out, settings)
    report = (Path(args.out) / "report.md").read_text()
    print(report.split("## ")[0].rstrip())
    print(f"\nreport: {Path(args.out) / 'report.md'}; model: {result['model']}")
