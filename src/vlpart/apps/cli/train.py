"""``vlpart train``: joint training from an experiment YAML."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
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


def run(args: argparse.Namespace) -> None:
    import torch

    from vlpart.core.config import Config
    from vlpart.training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = train(
        Config.from_yaml(args.config), args.out, resume=args.resume, init_weights=args.init_weights
    )
    print(f"weights: {weights}")
