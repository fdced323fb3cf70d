"""Training checkpoints committed as one unit (weights, sidecar and training state, or nothing).

Layout of a training output folder::

    ckpt-000004/            one complete checkpoint per folder
        model.safetensors   the weights
        model.json          their sidecar (config, vocabulary, text encoder)
        train_state.pt      iteration, optimizer, scheduler and RNG state
        manifest.json       iteration, size and SHA-256 of the three files (written last)
    ckpt-000008/
    latest                  the name of the newest committed folder ("ckpt-000008")
    model.safetensors       the newest weights + sidecar, for ``vlpart predict``
    model.json
    metrics.jsonl

A checkpoint is written into a temporary folder, every file is flushed to disk, the folder is
renamed to ``ckpt-<iteration>`` and then the ``latest`` pointer is replaced atomically: that
replacement is the commit. A kill at any moment leaves the previous committed checkpoint
intact; :func:`find_checkpoint` reads only a complete, verified set and falls back to the
previous one (saying so) when the newest is damaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from vlpart.core.errors import InputError
from vlpart.core.fileio import (
    errors_name,
    fsync_dir,
    read_text_file,
    temp_name,
    write_bytes_durable,
    write_text_atomic,
)

__all__ = [
    "LATEST_FILE",
    "SavedCheckpoint",
    "commit_checkpoint",
    "export_weights",
    "find_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"
STATE_FILE = "train_state.pt"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "latest"
_FOLDER = re.compile(r"^ckpt-(\d+)$")


@dataclass(frozen=True)
class SavedCheckpoint:
    """A committed checkpoint folder.

    Attributes:
        path: the ``ckpt-<iteration>`` folder.
        iteration: iterations trained when it was saved.
    """

    path: Path
    iteration: int

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def state(self) -> Path:
        return self.path / STATE_FILE


def folder_name(iteration: int) -> str:
    return f"ckpt-{iteration:06d}"


def commit_checkpoint(
    out_dir: Path, iteration: int, *, weights: bytes, sidecar: str, state: bytes
) -> SavedCheckpoint:
    """Write one checkpoint folder and make it the ``latest`` (see the module docstring).

    A folder of the same iteration that is already there (an uncommitted leftover, or a run
    re-saving the iteration it resumed from) is replaced.
    """
    files = {WEIGHTS_FILE: weights, SIDECAR_FILE: sidecar.encode("utf-8"), STATE_FILE: state}
    target = out_dir / folder_name(iteration)
    tmp = temp_name(target)
    tmp.mkdir()
    try:
        for name, data in files.items():
            with errors_name(target / name):
                write_bytes_durable(tmp / name, data)
        manifest = {
            "iteration": iteration,
            "files": {
                name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in files.items()
            },
        }
        with errors_name(target / MANIFEST_FILE):
            write_bytes_durable(tmp / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
        fsync_dir(tmp)
        if target.exists():
            old = temp_name(target)
            os.replace(target, old)
            shutil.rmtree(old)
        os.replace(tmp, target)
        fsync_dir(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(out_dir / LATEST_FILE, target.name + "\n")
    return SavedCheckpoint(target, iteration)


def export_weights(checkpoint: SavedCheckpoint, out_dir: Path) -> Path:
    """Make ``out_dir/model.safetensors`` + ``model.json`` those of ``checkpoint`` (hard links
    where the filesystem allows, else copies; each switched atomically, sidecar first)."""
    for name in (SIDECAR_FILE, WEIGHTS_FILE):
        source, target = checkpoint.path / name, out_dir / name
        if target.exists() and os.path.samefile(source, target):
            continue  # (renaming a hard link onto itself would do nothing)
        tmp = temp_name(target)
        try:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_dir(out_dir)
    return out_dir / WEIGHTS_FILE


def list_checkpoints(out_dir: Path) -> list[SavedCheckpoint]:
    """The ``ckpt-<iteration>`` folders of ``out_dir``, newest first (not verified)."""
    found = []
    if out_dir.is_dir():
        for entry in out_dir.iterdir():
            match = _FOLDER.match(entry.name)
            if match and entry.is_dir():
                found.append(SavedCheckpoint(entry, int(match.group(1))))
    return sorted(found, key=lambda c: c.iteration, reverse=True)


def _latest(out_dir: Path) -> str | None:
    pointer = out_dir / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        return read_text_file(pointer, "checkpoint pointer").strip()
    except ValueError:
        return None


def verify_checkpoint(checkpoint: SavedCheckpoint) -> None:
    """Check that every file of the manifest is there with its size and SHA-256.

    Raises:
        ValueError: naming the first file that is missing, truncated or altered.
    """
    manifest_path = checkpoint.path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise InputError(f"{manifest_path}: missing (the checkpoint was not completed)")
    try:
        manifest = json.loads(read_text_file(manifest_path, "checkpoint manifest"))
        files = manifest["files"]
        iteration = int(manifest["iteration"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f"{manifest_path}: not a checkpoint manifest ({err})") from None
    if iteration != checkpoint.iteration:
        raise InputError(
            f"{manifest_path}: is for iteration {iteration}, not {checkpoint.iteration}"
        )
    for name in (WEIGHTS_FILE, SIDECAR_FILE, STATE_FILE):
        path = checkpoint.path / name
        expected = files.get(name) if isinstance(files, dict) else None
        if not isinstance(expected, dict) or not path.is_file():
            raise InputError(f"{path}: missing")
        size = path.stat().st_size
        if size != expected.get("size"):
            raise InputError(f"{path}: truncated ({size} bytes, expected {expected.get('size')})")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected.get("sha256"):
            raise InputError(f"{path}: content does not match its checksum (altered or corrupt)")


def find_checkpoint(out_dir: Path) -> SavedCheckpoint | None:
    """The checkpoint to resume from: the ``latest`` one if it verifies, else the newest
    older one that does (logged as one warning line); None if there is none."""
    checkpoints = list_checkpoints(out_dir)
    latest = _latest(out_dir)
    pointed = [c for c in checkpoints if c.path.name == latest]
    newest_committed = pointed[0].iteration if pointed else None
    # Folders newer than the pointer were never committed (killed before the switch).
    candidates = pointed + [
        c
        for c in checkpoints
        if c.path.name != latest and (newest_committed is None or c.iteration < newest_committed)
    ]
    problems = []
    for checkpoint in candidates:
        try:
            verify_checkpoint(checkpoint)
        except ValueError as err:
            problems.append(str(err))
            continue
        if problems:
            logger.warning(
                "%s; resuming from the previous complete checkpoint %s instead",
                problems[0],
                checkpoint.path,
            )
        return checkpoint
    if problems:
        raise InputError(f"{problems[0]}; no other complete checkpoint in {out_dir}")
    return None


def prune_checkpoints(out_dir: Path, current: SavedCheckpoint, *, keep: int) -> None:
    """Keep ``current`` and the ``keep - 1`` newest checkpoints before it; delete the rest
    (older ones, and uncommitted ones after it)."""
    older = [c for c in list_checkpoints(out_dir) if c.iteration < current.iteration]
    doomed = older[keep - 1 :] + [
        c for c in list_checkpoints(out_dir) if c.iteration > current.iteration
    ]
    for checkpoint in doomed:
        shutil.rmtree(checkpoint.path, ignore_errors=True)
