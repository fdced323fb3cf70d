"""Wall time of ``vlpart quickstart`` against its budget (moved here from the test suite: speed is
measured in benchmarks, never asserted in tests).

    python benchmarks/quickstart_wall_time.py [--out runs/quickstart_bench] [--budget-minutes 15]

Runs the full quickstart once and prints one JSON object: the budget, the total and per-stage
seconds the quickstart itself recorded, the part-batch schedule it chose, and whether the total
stayed within the budget.
"""

from __future__ import annotations

import argparse
import json

from vlpart.engine.quickstart import QuickstartSettings, run_quickstart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quickstart_bench")
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = QuickstartSettings(seed=args.seed, budget_minutes=args.budget_minutes)
    result = run_quickstart(args.out, settings)
    timings = result["timings_seconds"]
    report = {
        "budget_s": args.budget_minutes * 60,
        "total_s": timings["total"],
        "within_budget": timings["total"] <= args.budget_minutes * 60,
        "stages_s": {k: v for k, v in timings.items() if k != "total"},
        "part_iterations": result["part_iterations"],
        "seconds_per_step": result["seconds_per_step"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
