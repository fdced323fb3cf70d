"""File primitives shared by every module: atomic writes, output sets committed as a unit,
text files, clean-up after killed runs, and RGB image reading."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "OutputSet",
    "atomic_write",
    "errors_name",
    "fsync_dir",
    "read_rgb",
    "read_text_file",
    "remove_orphans",
    "temp_name",
    "write_bytes_atomic",
    "write_bytes_durable",
    "write_json_atomic",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes per os.write call
# Temporary names carry this host's tag and the writer's pid, so that a later run can tell an
# orphan (its process is gone) from a file another live process is still writing.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, flush it to disk, rename it onto
    ``path``.

    A crash or an exception never leaves a half-written ``path``: the temporary file is removed
    (or, after ``kill -9``, removed by the next run's :func:`remove_orphans`), concurrent
    writers (DDP ranks) each rename a complete file, and the file gets the mode the user's
    umask gives a new file.

    Raises:
        OSError: with ``filename`` = ``path``; a full disk says "no space left on device".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path)
    try:
        with errors_name(path):
            write(tmp)
            _fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: write_bytes_durable(tmp, data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Write ``data`` as compact JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, separators=(",", ":")))


def write_bytes_durable(path: str | Path, data: bytes) -> None:
    """Write ``data`` into ``path`` (created if needed, truncated) and fsync it.

    The one place vlpart's own bytes reach the disk, chunk by chunk, so that a short write or
    a full disk surfaces as an ``OSError`` here.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view[:_CHUNK])
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path``, a ``what`` (``"config"``, ``"vocabulary"``, ...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, unreadable or not UTF-8 text (e.g. a binary file); the message
            starts with the path.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} file not found")
    if not path.is_file():
        raise ValueError(f"{path}: expected a {what} file, found a folder")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not a text file (byte {err.start} is not UTF-8); expected a {what} file"
        ) from None


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(path: str | Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<host>-<pid>-<random>.tmp``, which
    :func:`remove_orphans` recognises once its process is gone."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders (see :func:`temp_name`) that runs killed before
    they could clean up left in ``folder``; those of live processes are kept.

    Returns:
        What was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or match["host"] != _HOST or _pid_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        logger.info("%s: removed %d temporary files of interrupted runs", folder, len(removed))
    return removed


class OutputSet:
    """Files (and folders) a command writes that must appear together or not at all.

    Everything is first written under temporary names beside its target and flushed to disk;
    :meth:`commit` then renames the folders and then the files into place, in the order they
    were added. Until then (a full disk, an exception, ``kill -9``) the previous files stay as
    they were; uncommitted temporaries are removed by :meth:`discard` (the context manager
    calls it) or, after a kill, by the next run's :func:`remove_orphans`.

    Example::

        with OutputSet() as out:
            out.folder(root / "overlays")
            out.write(root / "overlays" / "a.png", image.save)
            out.write_json(root / "results.json", results)
            out.commit()
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []  # (temporary, target)
        self._folders: list[tuple[Path, Path]] = []
        self._committed = False

    def folder(self, target: str | Path) -> None:
        """Stage an empty folder that replaces ``target`` (and all it holds) on commit."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(target)
        with errors_name(target):
            tmp.mkdir()
        self._folders.append((tmp, target))

    def write(self, target: str | Path, write: Callable[[Path], None]) -> None:
        """Stage file ``target``: ``write`` fills the temporary path it is given."""
        target = Path(target)
        for tmp_dir, folder in self._folders:
            if target.is_relative_to(folder):
                staged = tmp_dir / target.relative_to(folder)
                with errors_name(target):
                    staged.parent.mkdir(parents=True, exist_ok=True)
                    write(staged)
                return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp_file(target)
        self._files.append((tmp, target))
        with errors_name(target):
            write(tmp)

    def write_json(self, target: str | Path, data: Any) -> None:
        """Stage ``data`` as compact JSON in ``target``."""
        text = json.dumps(data, separators=(",", ":"))
        self.write(target, lambda tmp: write_bytes_durable(tmp, text.encode("utf-8")))

    def commit(self) -> None:
        """Flush everything staged to disk, then move it into place."""
        for tmp, target in self._files:
            with errors_name(target):
                _fsync_file(tmp)
        for tmp_dir, target in self._folders:
            with errors_name(target):
                for folder, _, names in os.walk(tmp_dir):
                    for name in names:
                        _fsync_file(Path(folder, name))
                    fsync_dir(folder)
        for tmp_dir, target in self._folders:
            old = temp_name(target)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp_dir, target)
            shutil.rmtree(old, ignore_errors=True)
        for tmp, target in self._files:
            os.replace(tmp, target)
        for parent in {t.parent for _, t in self._files + self._folders}:
            fsync_dir(parent)
        self._committed = True

    def discard(self) -> None:
        """Remove whatever was staged and not committed."""
        if self._committed:
            return
        for tmp, _ in self._files:
            tmp.unlink(missing_ok=True)
        for tmp_dir, _ in self._folders:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _create_temp_file(path: Path) -> Path:
    """An empty new temporary file beside ``path``, mode ``0o666`` less the umask."""
    tmp = temp_name(path)
    with errors_name(path):
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def errors_name(target: str | Path) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file or a temporary one (a write to a temporary
    name, or a library that gives none) with ``filename`` = ``target``; a full disk reads "no
    space left on device". Errors that name another file are left as they are."""
    target = Path(target)
    try:
        yield
    except OSError as err:
        parts = Path(str(err.filename)).parts if err.filename is not None else ()
        named = bool(parts) and not any(_TEMP_NAME.match(part) for part in parts)
        if err.errno is None or named:
            raise
        reason = "no space left on device" if err.errno == errno.ENOSPC else err.strerror
        raise OSError(err.errno, reason, str(target)) from None
    except Exception as err:
        # Writers implemented outside Python (safetensors, Pillow's C encoders) report a full
        # disk in their own exception types.
        if "No space left" not in str(err) and "os error 28" not in str(err):
            raise
        raise OSError(errno.ENOSPC, "no space left on device", str(target)) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_rgb(path: str | Path) -> np.ndarray:
    """``np.ndarray[H, W, 3]`` uint8 RGB (writable) of an image file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
