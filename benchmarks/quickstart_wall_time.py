"""Wall time of ``vlpart quickstart`` against its budget (moved here from the test suite: speed is
measured in benchmarks, never asserted in tests).

    python benchmarks/quickstart_wall_time.py [--out runs/quickstart_bench] [--target-minutes 10]

Runs the full, fixed quickstart schedule once and prints one JSON object: the target, the total
and per-stage seconds the quickstart itself recorded, each row's iterations, the seconds per
training step of row A's first steps, and whether the total stayed within the target.
"""

from __future__ import annotations

import argparse
import json

from vlpart.apps.quickstart.run import QuickstartSettings, run_quickstart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quickstart_bench")
    parser.add_argument("--target-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run_quickstart(args.out, QuickstartSettings(seed=args.seed))
    timings = result["timings_seconds"]
    report = {
        "target_s": args.target_minutes * 60,
        "total_s": timings["total"],
        "within_target": timings["total"] <= args.target_minutes * 60,
        "stages_s": {k: v for k, v in timings.items() if k != "total"},
        "iterations": {r["row"]: r["iterations"] for r in result["rows"]},
        "seconds_per_step": result["seconds_per_step"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
