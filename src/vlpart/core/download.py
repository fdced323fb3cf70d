"""HTTP downloads for :mod:`vlpart.core.weights`: resumable, size- and checksum-checked.

A download goes to ``<target>.part`` (never mistaken for a complete file), shows a progress
bar (with the time left before its deadline), resumes with an HTTP ``Range`` request after an
interruption, is checked against the announced size and the SHA-256 when known, and is renamed
onto the target only when complete. Two clocks bound it: :data:`DOWNLOAD_TIMEOUT_S` without a
byte, and a total deadline (:data:`DOWNLOAD_DEADLINE_S`, ``$VLPART_DOWNLOAD_DEADLINE``) that a
server trickling bytes cannot dodge. A ``.part`` file left by an interruption or a missed
deadline is kept, and the next download resumes it; one with wrong bytes is deleted.
Callers go through :func:`vlpart.core.weights.resolve` (or :func:`~vlpart.core.weights.fetch`);
this module holds only the transfer.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from vlpart.core.errors import InputError, MissingFileError, RunError

__all__ = [
    "DOWNLOAD_ATTEMPTS",
    "DOWNLOAD_DEADLINE_ENV",
    "DOWNLOAD_DEADLINE_S",
    "DOWNLOAD_TIMEOUT_S",
    "DownloadError",
    "download",
    "download_deadline",
    "verify",
]

logger = logging.getLogger(__name__)

# Seconds without a byte from the server (connect or read) before a download is abandoned.
DOWNLOAD_TIMEOUT_S = 60.0
# Seconds a whole download (all its attempts) may take: a server sending a byte now and then
# never trips the timeout above, but misses this. An hour fetches the largest zoo file (Swin-B,
# about 1.2 GB) at 350 kB/s; ``$VLPART_DOWNLOAD_DEADLINE`` (seconds, 0 = none) changes it.
DOWNLOAD_DEADLINE_S = 3600.0
DOWNLOAD_DEADLINE_ENV = "VLPART_DOWNLOAD_DEADLINE"
# Attempts per download; a later attempt resumes where the previous one stopped, and is made
# only when the previous one received data (a server that never answers fails at once).
DOWNLOAD_ATTEMPTS = 3
_CHUNK = 1 << 20


class DownloadError(RunError):
    """A download failed (network error, timeout, size or checksum mismatch)."""


def download_deadline(deadline: float | None = None) -> float | None:
    """Seconds a download may take: ``deadline``, else ``$VLPART_DOWNLOAD_DEADLINE``, else
    :data:`DOWNLOAD_DEADLINE_S`; None (no deadline) for 0.

    Raises:
        InputError: a negative or non-numeric value.
    """
    if deadline is None:
        env = os.environ.get(DOWNLOAD_DEADLINE_ENV, "").strip()
        try:
            deadline = float(env) if env else DOWNLOAD_DEADLINE_S
        except ValueError:
            raise InputError(
                f"${DOWNLOAD_DEADLINE_ENV}={env!r}: expected seconds (a number; 0 = no deadline)"
            ) from None
    if not deadline >= 0:  # also NaN
        raise InputError(f"download deadline must be >= 0 seconds, got {deadline!r}")
    return deadline or None


def download(
    url: str,
    target: Path,
    *,
    sha256: str | None,
    progress: bool,
    timeout: float | None,
    where: Path,
    mirror: bool = False,
    deadline: float | None = None,
) -> None:
    """Download ``url`` onto ``target`` through ``target.part``, resuming and verifying.

    Args:
        timeout: seconds without a byte (default :data:`DOWNLOAD_TIMEOUT_S`).
        deadline: seconds for the whole download (see :func:`download_deadline`).
    """
    part = part_file(target)
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    seconds = download_deadline(deadline)
    clock = _Clock(None if seconds is None else time.monotonic() + seconds, seconds)
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        before = part.stat().st_size if part.exists() else 0
        try:
            total = _download_once(
                url,
                part,
                progress=progress,
                timeout=timeout,
                where=where,
                mirror=mirror,
                clock=clock,
            )
            break
        except _Interrupted as err:
            got = part.stat().st_size if part.exists() else 0
            if err.final or got <= before or attempt == DOWNLOAD_ATTEMPTS:
                raise DownloadError(
                    f"{url}: {err.reason} after {got} bytes; the partial file {part} is kept and "
                    "the next attempt resumes it"
                ) from None
            logger.warning("%s: %s; resuming at byte %d", url, err.reason, got)
    verify(part, expected_size=total, sha256=sha256, url=url)
    os.replace(part, target)


class _Clock:
    """The deadline of one download: ``end`` on :func:`time.monotonic`, None for none."""

    def __init__(self, end: float | None, seconds: float | None) -> None:
        self.end, self.seconds = end, seconds

    def left(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()

    def check(self) -> None:
        left = self.left()
        if left is not None and left <= 0:
            raise _Interrupted(
                f"not complete within the deadline of {self.seconds:g} s (set "
                f"${DOWNLOAD_DEADLINE_ENV} to allow more)",
                final=True,
            )


class _Interrupted(Exception):
    """A transfer that stopped; ``final``: not worth another attempt now (the deadline)."""

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.final = reason, final


def _download_once(
    url: str,
    part: Path,
    *,
    progress: bool,
    timeout: float,
    where: Path,
    mirror: bool,
    clock: _Clock,
) -> int | None:
    """One HTTP request appending to ``part``; returns the full size if the server said it."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "vlpart", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left after the partial file, or it is stale
            match = re.match(r"bytes \*/(\d+)", err.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return offset  # complete already (interrupted before the rename)
            part.unlink()
            return _download_once(
                url,
                part,
                progress=progress,
                timeout=timeout,
                where=where,
                mirror=mirror,
                clock=clock,
            )
        if err.code in (404, 410):
            put = f"; put the file at {where}" + ("" if mirror else " by other means")
            raise MissingFileError(f"{url}: not found (HTTP {err.code}){put}") from None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except TimeoutError:
        raise DownloadError(
            f"{url}: no answer within {timeout:g} s; check the network (or download it and put "
            f"it at {where})"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError):
            raise DownloadError(
                f"{url}: no answer within {timeout:g} s; check the network (or download it and "
                f"put it at {where})"
            ) from None
        raise DownloadError(
            f"{url}: cannot connect ({reason}); download it and put it at {where}"
        ) from None
    with response:
        total = _total_size(response, offset)
        if offset and response.status != 206:  # the server ignored the Range header
            offset = 0
        mode = "ab" if offset else "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=where.name,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            try:
                # read1: what has arrived (up to _CHUNK), so the deadline is checked as bytes
                # trickle in; read() would wait for a full chunk.
                while chunk := response.read1(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
                    left = clock.left()
                    if left is not None:
                        bar.set_postfix_str(f"deadline in {max(left, 0):.0f} s", refresh=False)
                    clock.check()
            except TimeoutError:
                raise _Interrupted(f"no data for {timeout:g} s") from None
            except (http.client.IncompleteRead, ConnectionError) as err:
                out.write(getattr(err, "partial", b"") or b"")
                raise _Interrupted("the connection closed early") from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"the connection closed at {size} of {total} bytes")
    return total


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    if response.status == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == offset:
            return int(match.group(2))
        return None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def verify(part: Path, *, expected_size: int | None, sha256: str | None, url: str) -> None:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(
            f"{url}: got {size} bytes but the server announced {expected_size}; discarded"
        )
    if sha256:
        digest = _sha256(part)
        if not digest.startswith(sha256.lower()):
            part.unlink()
            raise DownloadError(
                f"{url}: SHA-256 {digest[:16]}... does not match the expected {sha256[:16]}...; "
                "the file is corrupt and was discarded"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def part_file(target: Path) -> Path:
    return target.with_name(target.name + ".part")
