"""Write the quickstart's packaged band (``src/vlpart/_resources/quickstart_reference.json``)
from a multi-seed run.

::

    vlpart quickstart --seeds 5 --out runs/seeds   # or `--seed K --out runs/seeds/seed_K` each
    python tools/quickstart_reference.py runs/seeds --machine "2-core AMD EPYC (AVX-512)"

reads ``runs/seeds/seed_*/metrics.json`` (default schedule only), keeps each seed's mask AP
values per row and writes them with the machine and the date; ``report.md`` of every later run
shows its cells beside their mean ± std (:mod:`vlpart.apps.quickstart.spread`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from pathlib import Path

from vlpart.apps.quickstart.report import TABLE_KEYS
from vlpart.apps.quickstart.run import QuickstartSettings
from vlpart.apps.quickstart.spread import REFERENCE_RESOURCE, Band
from vlpart.core.fileio import write_text_atomic

TARGET = Path(__file__).resolve().parents[1] / "src" / "vlpart" / REFERENCE_RESOURCE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, help="folder of seed_<k>/metrics.json")
    p.add_argument("--machine", required=True, help="the CPU the runs ran on, in words")
    p.add_argument("--out", type=Path, default=TARGET)
    args = p.parse_args()
    runs = []
    for path in sorted(args.runs.glob("seed_*/metrics.json")):
        if not path.parent.name.removeprefix("seed_").isdigit():
            continue  # not a seed folder of the run (e.g. seed_0_avx2)
        result = json.loads(path.read_text())
        recorded = result["settings"]
        settings = QuickstartSettings(**{**recorded, "rows": tuple(recorded["rows"])})
        if dataclasses.replace(settings, seed=0) != QuickstartSettings():
            raise SystemExit(f"{path}: not the default schedule; the band describes that only")
        runs.append(result)
    if len(runs) < 2:
        raise SystemExit(f"{args.runs}: a band needs at least 2 seed_<k>/metrics.json")
    runs.sort(key=lambda r: r["settings"]["seed"])
    band = Band.from_runs(runs, [r["settings"]["seed"] for r in runs], TABLE_KEYS)
    band = dataclasses.replace(band, machine=args.machine, date=datetime.date.today().isoformat())
    write_text_atomic(args.out, json.dumps(band.to_dict(), indent=1) + "\n")
    print(f"wrote {args.out} from {len(runs)} seeds")


if __name__ == "__main__":
    main()
