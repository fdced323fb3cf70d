"""The quickstart's spread over seeds: the README's reference band, whether one run lies inside
it, and which conclusions about the rows the spread supports.

A run is bit-identical on one machine for one seed, but float kernels differ between CPUs (and
between instruction sets of one CPU), and 300-iteration detectors amplify those differences. So
the README shows each cell as the mean ± sample std of :data:`REFERENCE_RESOURCE`'s seeds, and
a conclusion such as "parsed parts raise novel AP50" only where the per-seed differences between
two rows (paired: both rows of a seed share its world) keep one sign at 95 % confidence.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from importlib import resources

from scipy import stats

__all__ = [
    "CONFIDENCE",
    "REFERENCE_RESOURCE",
    "Band",
    "BandCell",
    "Change",
    "band_cells",
    "changes",
    "load_reference",
]

# The packaged per-seed table of the README (written by tools/quickstart_reference.py).
REFERENCE_RESOURCE = "_resources/quickstart_reference.json"
# Two-sided confidence of a stated direction.
CONFIDENCE = 0.95
# A run lies "inside the band" within this many sample standard deviations of the mean.
BAND_STDS = 2.0


@dataclass(frozen=True)
class Band:
    """Per row and metric (percent), the values of each seed of a multi-seed run."""

    seeds: tuple[int, ...]
    per_seed: dict[str, dict[str, list[float]]]  # row -> metric -> one value per seed
    machine: str = ""
    date: str = ""

    def mean_std(self, row: str, key: str) -> tuple[float, float]:
        values = self.per_seed[row][key]
        return statistics.mean(values), statistics.stdev(values)

    @classmethod
    def from_runs(cls, runs: list[dict], seeds: list[int], keys: tuple[str, ...]) -> Band:
        """From the ``metrics.json`` contents of one run per seed (rows in the same order);
        a metric that some run lacks (no novel parts in its world) is left out."""
        per_seed: dict[str, dict[str, list[float]]] = {}
        for i, row in enumerate(runs[0]["rows"]):
            values = {k: [r["rows"][i]["mask"][k] for r in runs] for k in keys}
            per_seed[row["row"]] = {k: v for k, v in values.items() if None not in v}
        return cls(tuple(seeds), per_seed)

    def to_dict(self) -> dict:
        return {
            "seeds": list(self.seeds),
            "machine": self.machine,
            "date": self.date,
            "per_seed": self.per_seed,
        }


def load_reference() -> Band:
    """The README's band, as packaged."""
    data = json.loads(resources.files("vlpart").joinpath(REFERENCE_RESOURCE).read_text())
    return Band(tuple(data["seeds"]), data["per_seed"], data["machine"], data["date"])


@dataclass(frozen=True)
class BandCell:
    """One cell of a run against the band."""

    row: str
    key: str
    value: float
    mean: float
    std: float

    @property
    def inside(self) -> bool:
        return abs(self.value - self.mean) <= BAND_STDS * self.std


def band_cells(rows: dict[str, dict[str, float | None]], band: Band) -> list[BandCell]:
    """``rows[row][metric]`` (one run's percent values) against ``band``, for every cell both
    have."""
    cells = []
    for row, metrics in rows.items():
        for key, value in metrics.items():
            if value is None or key not in band.per_seed.get(row, {}):
                continue
            mean, std = band.mean_std(row, key)
            cells.append(BandCell(row, key, value, mean, std))
    return cells


@dataclass(frozen=True)
class Change:
    """The paired per-seed difference ``after - before`` of one metric: its mean and the
    half-width of its ``CONFIDENCE`` interval (Student's t over the seeds)."""

    before: str
    after: str
    key: str
    mean: float
    half_width: float

    @property
    def verdict(self) -> str:
        """``"rises"`` or ``"falls"`` when the interval excludes zero, else ``"unresolved"``."""
        if self.mean - self.half_width > 0:
            return "rises"
        if self.mean + self.half_width < 0:
            return "falls"
        return "unresolved"


def changes(band: Band, pairs: list[tuple[str, str]], keys: tuple[str, ...]) -> list[Change]:
    """Per ``(before, after)`` row pair and metric, the paired change over the band's seeds."""
    n = len(band.seeds)
    t = stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1)
    out = []
    for before, after in pairs:
        for key in keys:
            if key not in band.per_seed[before] or key not in band.per_seed[after]:
                continue
            diffs = [
                b - a
                for a, b in zip(band.per_seed[before][key], band.per_seed[after][key], strict=True)
            ]
            half = t * statistics.stdev(diffs) / math.sqrt(n)
            out.append(Change(before, after, key, statistics.mean(diffs), half))
    return out
