"""Kill the trainer with SIGKILL at every write boundary of its checkpoints, then resume.

Run as ``python train_fault_driver.py CONFIG.yaml WORKDIR``; prints one JSON object.

The driver imports torch once and forks one child per run (single-threaded torch, so forking
is safe). A counting run records every disk operation of the trainer (``os.replace``/``os.rename``,
``os.link``, ``os.mkdir``, ``shutil.rmtree``, and for every file written: before its first
``os.write`` and half-way through it) from the end of the first iteration on; then,
for each recorded point k, a child trains
with a hook that SIGKILLs itself at point k — no clean-up handler runs, as with ``kill -9`` — and
a second child resumes in the same folder. The parent finally compares every resumed folder
with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from safetensors.torch import load_file  # noqa: E402

from vlpart.core.config import Config  # noqa: E402
from vlpart.training.train import train  # noqa: E402

_real = {
    "write": os.write,
    "replace": os.replace,
    "rename": os.rename,
    "link": os.link,
    "mkdir": os.mkdir,
    "rmtree": shutil.rmtree,
}


def _install(on_event) -> None:
    """Route the trainer's disk operations through ``on_event(name, phase, fd, data)``: the
    moment before each operation, half-way through the first write of each file, and after
    the last one (the moment after an operation is the moment before the next)."""
    files_seen = set()

    def write(fd, data):
        opened = (fd, os.readlink(f"/proc/self/fd/{fd}"))
        if opened not in files_seen:
            files_seen.add(opened)
            on_event("write", "before", fd, data)
            on_event("write", "half", fd, data)
        return _real["write"](fd, data)

    def hooked(name):
        def call(*args, **kwargs):
            on_event(name, "before")
            return _real[name](*args, **kwargs)

        return call

    os.write = write
    for name in ("replace", "rename", "link", "mkdir"):
        setattr(os, name, hooked(name))
    shutil.rmtree = hooked("rmtree")


def _train_watched(cfg, out: Path, on_event) -> None:
    """Train with ``on_event`` hooked in from the end of iteration 1 on (so every point lies
    in a checkpoint save, after the run has left its first trace), and a last point after
    training returned."""

    def on_step(iteration, losses):
        if iteration == 1:
            _install(on_event)

    train(cfg, out, on_step=on_step)
    on_event("train", "after")


def _run_child(body) -> int:
    """Fork, run ``body()`` in the child, return the child's wait status."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        except BaseException as err:  # noqa: BLE001 - report anything
            print(f"child failed: {type(err).__name__}: {err}", file=sys.stderr)
            os._exit(3)
        os._exit(0)
    return os.waitpid(pid, 0)[1]


def main() -> None:
    cfg = Config.from_yaml(sys.argv[1])
    work = Path(sys.argv[2])
    events_file = work / "events.jsonl"

    def count():
        log = open(events_file, "w")  # noqa: SIM115

        def on_event(name, phase, fd=None, data=None):
            log.write(json.dumps([name, phase]) + "\n")
            log.flush()

        _train_watched(cfg, work / "reference", on_event)

    status = _run_child(count)
    assert status == 0, f"reference run failed ({status})"
    points = [json.loads(line) for line in events_file.read_text().splitlines()]

    report = {"points": len(points), "runs": []}
    for k in range(len(points)):
        out = work / f"kill{k:03d}"

        def killed(k=k, out=out):
            seen = [0]

            def on_event(name, phase, fd=None, data=None):
                index = seen[0]
                seen[0] += 1
                if index != k:
                    return
                if phase == "half":
                    _real["write"](fd, data[: max(1, len(data) // 2)])
                os.kill(os.getpid(), signal.SIGKILL)

            _train_watched(cfg, out, on_event)

        status = _run_child(killed)
        was_killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        resumed = _run_child(lambda out=out: train(cfg, out, resume=True))
        report["runs"].append(
            {"point": k, "at": points[k], "killed": was_killed, "resume_status": resumed}
        )

    reference = load_file(work / "reference" / "model.safetensors")
    for run in report["runs"]:
        out = work / f"kill{run['point']:03d}"
        if run["resume_status"] != 0:
            continue
        final = load_file(out / "model.safetensors")
        run["identical"] = final.keys() == reference.keys() and all(
            torch.equal(final[k], reference[k]) for k in reference
        )
        lines = (out / "metrics.jsonl").read_text().splitlines()
        run["metrics_iterations"] = [json.loads(line)["iteration"] for line in lines]
        run["entries"] = sorted(p.name for p in out.iterdir())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
