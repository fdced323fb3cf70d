"""Wall time of ``vlpart <command> --help`` (interpreter start included), median of N runs.

    python benchmarks/cli_startup.py [--runs 7]

Prints JSON: seconds per command, and ``import torch, torchvision`` for scale. The vlpart that
runs is the one on ``PYTHONPATH`` / installed (point ``PYTHONPATH`` at another checkout's
``src`` to compare two versions in one sitting).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "predict --help": ["-m", "vlpart.apps.cli", "predict", "--help"],
    "quickstart --help": ["-m", "vlpart.apps.cli", "quickstart", "--help"],
    "--help": ["-m", "vlpart.apps.cli", "--help"],
    "import torch, torchvision": ["-c", "import torch, torchvision"],
}


def _median_seconds(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    result = {name: _median_seconds(cmd, args.runs) for name, cmd in COMMANDS.items()}
    print(json.dumps({"runs": args.runs, "median_seconds": result}, indent=2))


if __name__ == "__main__":
    main()
