"""The shards of a labelling run (:mod:`vlpart.inference.label`) on Ray Data.

``ray.data.from_items`` of the pending shards (each row: a shard index and its image paths)
feeds ``map_batches`` with an actor class that holds one :class:`PartSegmenter` and writes each
shard it is given with :func:`~vlpart.inference.label.label_shard`; the driver only streams the
actors' small receipts (shard index, seconds by stage) and, at the end, merges the shard files.
An actor that dies is restarted and its shard redone, once (``max_restarts=1``,
``max_task_retries=1``); a shard that fails again is left missing and the next run does it.

Every node must see the inputs and the output folder at the same paths (a shared file system).
``ray`` is imported only here (the ``label`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlpart.core.errors import MissingDependencyError, RunError
from vlpart.inference.label_shard import STAGES, LabelJob, label_shard, shard_paths

__all__ = ["ShardLabeler", "run_on_ray"]

# A dead actor is restarted, and the shard it held retried, this many times (Ray Data's default
# is forever, which loops on an input that kills its worker every time). Ray 2.60 takes these
# only as ``ray_remote_args`` (deprecated, removed in 2.64: the extra pins ray below it).
RAY_RETRIES = 1


class ShardLabeler:
    """A Ray Data actor: one segmenter, built once, labelling whole shards.

    Args:
        job: the run.
        threads: torch threads of this actor (its ``num_cpus``).
    """

    def __init__(self, job: LabelJob, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.job = job
        self.segmenter = job.spec.build()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Label the shards of ``batch`` (``shard``: indices, ``paths``: their inputs).

        Returns:
            ``shard`` and, per shard, its seconds in each of :data:`STAGES` (one column each).
        """
        receipts: dict[str, list] = {"shard": list(batch["shard"])}
        receipts.update({stage: [] for stage in STAGES})
        for index, paths in zip(batch["shard"], batch["paths"], strict=True):
            seconds = label_shard(self.segmenter, self.job, int(index), [str(p) for p in paths])
            for stage in STAGES:
                receipts[stage].append(seconds[stage])
        return receipts


def run_on_ray(
    job: LabelJob,
    paths: Sequence[Path],
    pending: Sequence[int],
    *,
    address: str,
    workers: int,
    threads: int | None,
) -> list[dict[str, float]]:
    """Do the ``pending`` shards on ``workers`` Ray actors.

    Args:
        job: the run.
        paths: every input of the run.
        pending: the shards to do.
        address: ``"local"`` (start Ray here, unless this process already joined a cluster)
            or a cluster address for ``ray.init``.
        workers: actors (each one segmenter; one GPU each when ``job.spec.device`` is CUDA).
        threads: CPUs (torch threads) per actor, default 1.

    Returns:
        Per shard done, its seconds in each of :data:`STAGES`.
    """
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs Ray: pip install 'vlpart[label]'") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False)
    cpus = threads or 1
    gpus = 1 if job.spec.device.startswith("cuda") else 0
    items = [{"shard": k, "paths": [str(p) for p in shard_paths(job, paths, k)]} for k in pending]
    receipts = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardLabeler,
        fn_constructor_kwargs={"job": job, "threads": cpus},
        batch_size=1,
        concurrency=workers,
        num_cpus=cpus,
        num_gpus=gpus,
        max_restarts=RAY_RETRIES,
        max_task_retries=RAY_RETRIES,
    )
    seconds = []
    with tqdm(total=len(items), desc="label (ray)", unit="shard", dynamic_ncols=True) as bar:
        try:
            for row in receipts.iter_rows():
                seconds.append({stage: float(row[stage]) for stage in STAGES})
                bar.update(1)
        except ray.exceptions.RayError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunError(
                f"{job.out}: the Ray job failed ({first}); the finished shards are kept, run "
                "again to do the rest"
            ) from err
    return seconds
