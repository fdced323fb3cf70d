"""Why do extra sources lower base and all-parts AP in the quickstart? A protocol study on the
*validation split of the training world* (never the held-out images).

    python benchmarks/quickstart_study.py [--base-iterations 150] [--finetune-iterations 150]
        [--out study/] [--variants scratch_old finetune_paper finetune_old]

Variants (rows A, B, C as in ``vlpart quickstart``; ``finetune_paper`` adds the control row A+,
row A trained on base parts alone for as many iterations as B):

* ``scratch_old``: the former protocol: every row from ImageNet, B and C as long as needed to
  hold A's base-part batches, ratios base parts : objects : image labels : parsed = 2 : 1 : .5 : .5;
* ``finetune_paper``: B and C fine-tuned from A (the paper's ablation recipe) with the paper's
  ratios 1 : 1 : 4 : 4;
* ``finetune_old``: fine-tuned from A with the former ratios (``configs/quickstart.yaml``: the
  quickstart's default, chosen by this study).

Prints JSON: per variant and row, the iterations, the starting point and mask AP / AP50 (all,
base, novel; percent) on the validation split, plus the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from vlpart.apps.quickstart.run import QuickstartSettings, run_quickstart

OLD_RATIOS = {"base_parts": 2.0, "objects": 1.0, "image_labels": 0.5, "parsed_parts": 0.5}
# The paper's Pascal Part ablation mix (base parts, VOC, IN-S20 labels, parsed IN-S20).
PAPER_RATIOS = {"base_parts": 1.0, "objects": 1.0, "image_labels": 4.0, "parsed_parts": 4.0}
VARIANTS = {
    "scratch_old": {"protocol": "scratch", "ratios": OLD_RATIOS},
    "finetune_paper": {
        "protocol": "finetune",
        "ratios": PAPER_RATIOS,
        "rows": ("A", "A+", "B", "C"),
    },
    "finetune_old": {"protocol": "finetune", "ratios": OLD_RATIOS},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-iterations", type=int, default=150)
    parser.add_argument("--finetune-iterations", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="study")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {}
    for name in args.variants:
        settings = QuickstartSettings(
            seed=args.seed,
            base_iterations=args.base_iterations,
            finetune_iterations=args.finetune_iterations,
            validation=True,
            **VARIANTS[name],
        )
        result = run_quickstart(Path(args.out) / name, settings)
        results[name] = {
            "rows": {
                r["row"]: {"iterations": r["iterations"], "init": r["init"], **r["mask"]}
                for r in result["rows"]
            },
            "parsed_parts": result["parsed"]["parts"],
            "minutes": round(result["timings_seconds"]["total"] / 60, 1),
        }
        print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps({"split": "validation (last fifth of the training images)", **results}))


if __name__ == "__main__":
    main()
