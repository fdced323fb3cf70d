"""The ``vlpart`` command line: one module per command, each with ``add_parser(sub)`` and
``run(args)``; the library logic they call lives in the library. A
:class:`~vlpart.core.errors.VlpartError` or an ``OSError`` of the machine prints one line
(``vlpart: error: <file>: <problem>``) and exits with status 2; anything else is a bug and keeps
its traceback. Commands import torch only when they run, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from vlpart.apps.cli._options import check_common_options
from vlpart.core.errors import VlpartError

__all__ = ["main", "waits_passively"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# Command name -> its module under vlpart.apps.cli, in the order `vlpart --help` lists them.
COMMANDS = {
    "vocab": "vocab",
    "eval": "evaluate",
    "convert": "convert",
    "models": "models",
    "export": "export",
    "data": "data",
    "train": "train",
    "finetune": "finetune",
    "predict": "predict",
    "track": "track",
    "label": "label",
    "parse": "parse",
    "quickstart": "quickstart",
    "demo": "demo",
}


def _command(name: str):
    return importlib.import_module(f"vlpart.apps.cli.{COMMANDS[name]}")


def _build_parser() -> argparse.ArgumentParser:
    from vlpart import __version__

    parser = argparse.ArgumentParser(
        prog="vlpart", description="Open-vocabulary part segmentation (VLPart) on PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"vlpart {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        _command(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    writers, webcam = getattr(args, "writers", 0), getattr(args, "webcam", None)
    if waits_passively(args.command, writers, webcam):  # before torch loads; the user's value wins
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="vlpart: %(levelname)s: %(message)s",
    )
    try:
        check_common_options(args)
        _command(args.command).run(args)
    except KeyboardInterrupt:
        print("vlpart: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (VlpartError, OSError, ImportError) as err:
        print(f"vlpart: error: {user_message(err)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def waits_passively(command: str, writers: int = 1, webcam: int | None = None) -> bool:
    """Whether ``vlpart <command>`` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the environment
    sets it) before torch loads OpenMP: the commands that run the folder pipeline
    (:mod:`vlpart.inference.pipeline`) with writer threads beside the model's OpenMP threads,
    ``label`` and ``predict`` unless ``writers`` is 0 or it reads a ``webcam``. OpenMP threads
    that spin while they wait between the model's parallel regions take the cores those writers
    need; waiting passively, a writer thread gave 1.2x on the quickstart model on 2 cores,
    spinning nothing (docs/predict.md)."""
    if command == "label":
        return True
    return command == "predict" and writers > 0 and webcam is None


def user_message(err: VlpartError | OSError | ImportError) -> str:
    """The one-line message of a user-caused error: vlpart's own, or one of the machine (a
    file that cannot be written, a full disk, a missing optional package)."""
    if not isinstance(err, VlpartError) and isinstance(err, OSError):
        if err.errno is not None and err.filename is not None:
            reason = (err.strerror or "").rstrip(".") or type(err).__name__
            return f"{err.filename}: {reason[:1].lower() + reason[1:]}"
    return " ".join(str(err).split()) or type(err).__name__
