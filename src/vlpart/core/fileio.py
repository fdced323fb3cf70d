"""File primitives shared by every module: atomic writes, output sets committed as a unit,
text files, clean-up after killed runs, and the one image reader.

Every image vlpart reads (prediction, training, evaluation, parsing, conversion) goes through
:func:`read_image`, so EXIF orientation, the pixel limit, pixel-mode conversion and the error
texts are the same everywhere.
"""

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
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vlpart.core.errors import InputError, InputTypeError, MissingFileError

__all__ = [
    "DRAFT_MIN_PIXELS",
    "MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "OutputSet",
    "append_text",
    "atomic_write",
    "errors_name",
    "fsync_dir",
    "read_image",
    "read_image_size",
    "read_label_map",
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

# Largest image (width x height) read by default: above any camera photo, below the size whose
# decoded RGB (450 MB) and model input no longer fit a laptop. ``$VLPART_MAX_PIXELS`` or
# ``max_pixels=`` change it.
MAX_PIXELS = 150_000_000
MAX_PIXELS_ENV = "VLPART_MAX_PIXELS"
# With ``read_image(min_side=...)``, images of more pixels than this are decoded at a reduced
# scale where the format allows (JPEG's DCT scaling by 1/2, 1/4, 1/8 via ``Image.draft``);
# smaller ones are decoded exactly, so ordinary photos keep bit-exact preprocessing.
DRAFT_MIN_PIXELS = 6000 * 6000

# Pixel modes with an alpha channel: composited over white (what viewers show for a page).
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_BACKGROUND = (255, 255, 255)
# EXIF orientations 5-8 swap width and height.
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112

ImageSource = str | Path | Image.Image | np.ndarray


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


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` (UTF-8) to ``path`` (created if needed), for logs of JSON lines.

    Not atomic: a kill can leave a torn last line, which readers of such logs must skip.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        with errors_name(path):
            view = memoryview(text.encode("utf-8"))
            while view:
                view = view[os.write(fd, view[:_CHUNK]) :]
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
        raise MissingFileError(f"{path}: {what} file not found")
    if not path.is_file():
        raise InputError(f"{path}: expected a {what} file, found a folder")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path}: not a text file (byte {err.start} is not UTF-8); expected a {what} file"
        ) from None
    if "\x00" in text:  # valid UTF-8, but binary: no text file holds NUL bytes
        raise InputError(
            f"{path}: not a text file (byte {data.index(0)} is NUL); expected a {what} file"
        )
    return text


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


def read_image(
    image: ImageSource, *, max_pixels: int | None = None, min_side: int | None = None
) -> np.ndarray:
    """The one image reader: ``np.ndarray[H, W, 3]`` uint8 RGB (writable, C-contiguous).

    * EXIF orientation is applied (a portrait phone photo comes out upright, as viewers show it);
    * 16-bit and 32-bit integer (``I;16*``, ``I``) and float (``F``) images are scaled to 8 bit,
      not clipped: 16-bit values by 255/65535; ``I`` values within 0..65535 likewise, others
      min-max; ``F`` values within [0, 1] by 255, within [0, 255] as they are, others min-max;
    * alpha (``RGBA``, ``LA``, ``PA``, palette with transparency) is composited over white;
      ``CMYK``, ``YCbCr``, ``L``, ``1`` and palettes are converted to RGB.

    Args:
        image: a file path, a PIL image, or an ``np.ndarray[H, W, 3]`` uint8 RGB (validated and
            returned as it is).
        max_pixels: largest ``width * height`` accepted; ``None`` reads ``$VLPART_MAX_PIXELS``,
            else :data:`MAX_PIXELS`.
        min_side: for a JPEG file of more than :data:`DRAFT_MIN_PIXELS` pixels, decode at the
            smallest native reduction (1/2, 1/4, 1/8) whose short side is still at least this
            (the model's input size): memory and time follow the model input, not the photo.
            :func:`read_image_size` gives the full size.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image, an image above the pixel limit, an unsupported pixel
            mode, non-finite float pixels, or an array of the wrong shape or dtype; the message
            starts with the file name.
        TypeError: ``image`` is none of the accepted types.
    """
    if isinstance(image, np.ndarray):
        return _check_array(image)
    if isinstance(image, Image.Image):
        name = getattr(image, "filename", "") or "image"
        _check_pixels(image.size, name, max_pixels)
        return _to_rgb(ImageOps.exif_transpose(image), name)
    if not isinstance(image, str | Path):
        raise InputTypeError(
            f"unsupported image type {type(image).__name__}; give a path, a PIL image or an "
            "np.ndarray[H, W, 3] uint8"
        )
    path = Path(image)
    with _open(path, max_pixels) as opened:
        width, height = opened.size
        if min_side is not None and width * height > DRAFT_MIN_PIXELS and opened.format == "JPEG":
            scale = min_side / min(width, height)
            opened.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        try:
            return _to_rgb(ImageOps.exif_transpose(opened), str(path))
        except (OSError, SyntaxError) as err:  # truncated or corrupt pixel data
            raise InputError(f"{path}: not a readable image ({err})") from None


def read_image_size(path: str | Path, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(H, W)`` of an image file as :func:`read_image` returns it (EXIF orientation applied),
    from the header only. Raises as :func:`read_image` does."""
    path = Path(path)
    with _open(path, max_pixels) as opened:
        width, height = opened.size
        if opened.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
    return height, width


# Pixel modes that hold one class index per pixel (8-bit gray or palette, 16/32-bit integer).
_LABEL_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")


def read_label_map(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """A label map (semantic segmentation PNG: one class index per pixel), as stored:
    ``np.ndarray[H, W]`` uint8 (``L``, ``P``: the palette indices), uint16 (``I;16``) or int32
    (``I``). No EXIF orientation, no conversion: the values are the labels.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image, above the pixel limit, or not one channel of indices
            (an RGB rendering of the labels, say); the message starts with the file name.
    """
    path = Path(path)
    with _open(path, max_pixels) as opened:
        if opened.mode not in _LABEL_MODES:
            raise InputError(
                f"{path}: image of mode {opened.mode}, not a label map; save one channel of class "
                "indices (8-bit gray or palette PNG, or 16-bit gray), not colours"
            )
        try:
            values = np.array(opened)
        except (OSError, SyntaxError) as err:
            raise InputError(f"{path}: not a readable image ({err})") from None
    return values if values.dtype.kind == "u" else values.astype(np.int32)


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    """Open ``path`` lazily (header only) and check its pixel count."""
    if not path.is_file():
        raise MissingFileError(f"{path}: image not found")
    limit = _pixel_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            # We apply our own limit below; Pillow's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
    except Image.DecompressionBombError as err:
        # Pillow refuses before we see the size; its message carries the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too many pixels"
        raise InputError(
            f"{path}: image has {size}, above the limit of "
            f"{min(limit, 2 * Image.MAX_IMAGE_PIXELS) / 1e6:.1f} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise InputError(f"{path}: not a readable image ({err})") from None
    try:
        _check_pixels(opened.size, str(path), limit)
    except ValueError:
        opened.close()
        raise
    return opened


def _pixel_limit(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV)
    if env is None:
        return MAX_PIXELS
    try:
        value = int(env)
    except ValueError:
        raise InputError(
            f"${MAX_PIXELS_ENV}: expected a whole number of pixels, got {env!r}"
        ) from None
    if value < 1:
        raise InputError(f"${MAX_PIXELS_ENV}: must be positive, got {value}")
    return value


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    width, height = size
    limit = _pixel_limit(max_pixels)
    if width < 1 or height < 1:
        raise InputError(f"{name}: image is empty ({width}x{height})")
    if width * height > limit:
        raise InputError(
            f"{name}: image is {width}x{height} ({width * height / 1e6:.1f} megapixels), above "
            f"the limit of {limit / 1e6:.1f} megapixels; set ${MAX_PIXELS_ENV} to read it"
        )


def _check_array(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(
            f"image arrays must be [H, W, 3] uint8 RGB, got {list(image.shape)} {image.dtype}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image array is empty: {list(image.shape)}")
    return image


def _to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """Decode ``image`` and convert its pixel mode to 8-bit RGB (see :func:`read_image`)."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _scale_to_uint8(np.asarray(image), mode, name)
        return np.repeat(gray[:, :, None], 3, axis=2)
    try:
        return np.array(image.convert("RGB"))
    except ValueError as err:
        raise InputError(f"{name}: unsupported pixel mode {mode!r} ({err})") from None


def _scale_to_uint8(values: np.ndarray, mode: str, name: str) -> np.ndarray:
    """One-channel 16/32-bit integer or float pixels -> ``np.ndarray[H, W]`` uint8."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"{name}: float image with NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = values * (255.0 / 65535.0)
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif mode == "F" and low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    return np.rint(scaled).clip(0, 255).astype(np.uint8)
