"""HTTP downloads for :mod:`vlpart.core.weights`: resumable, size- and checksum-checked.

A download goes to ``<target>.part`` (never mistaken for a complete file), shows a progress
bar, resumes with an HTTP ``Range`` request after an interruption, is checked against the
announced size and the SHA-256 when known, and is renamed onto the target only when complete.
Callers go through :func:`vlpart.core.weights.resolve` (or :func:`~vlpart.core.weights.fetch`);
this module holds only the transfer.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from vlpart.core.errors import MissingFileError, RunError

__all__ = ["DOWNLOAD_ATTEMPTS", "DOWNLOAD_TIMEOUT_S", "DownloadError", "download", "verify"]

logger = logging.getLogger(__name__)

# Seconds without a byte from the server (connect or read) before a download is abandoned.
DOWNLOAD_TIMEOUT_S = 60.0
# Attempts per download; a later attempt resumes where the previous one stopped, and is made
# only when the previous one received data (a server that never answers fails at once).
DOWNLOAD_ATTEMPTS = 3
_CHUNK = 1 << 20


class DownloadError(RunError):
    """A download failed (network error, timeout, size or checksum mismatch)."""


def download(
    url: str,
    target: Path,
    *,
    sha256: str | None,
    progress: bool,
    timeout: float | None,
    where: Path,
    mirror: bool = False,
) -> None:
    """Download ``url`` onto ``target`` through ``target.part``, resuming and verifying."""
    part = part_file(target)
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        before = part.stat().st_size if part.exists() else 0
        try:
            total = _download_once(
                url, part, progress=progress, timeout=timeout, where=where, mirror=mirror
            )
            break
        except _Interrupted as err:
            got = part.stat().st_size if part.exists() else 0
            if got <= before or attempt == DOWNLOAD_ATTEMPTS:
                raise DownloadError(
                    f"{url}: {err.reason} after {got} bytes; the partial file {part} is kept and "
                    "the next attempt resumes it"
                ) from None
            logger.warning("%s: %s; resuming at byte %d", url, err.reason, got)
    verify(part, expected_size=total, sha256=sha256, url=url)
    os.replace(part, target)


class _Interrupted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _download_once(
    url: str, part: Path, *, progress: bool, timeout: float, where: Path, mirror: bool
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
                url, part, progress=progress, timeout=timeout, where=where, mirror=mirror
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
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
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
