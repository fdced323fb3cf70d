"""Downloads that go wrong, through a mirror on a local HTTP server (127.0.0.1): each ends in
one line (a :class:`~vlpart.core.errors.VlpartError` in the API, ``vlpart: error:`` on the
command line) and leaves nothing in the cache but a resumable ``.part`` file and lock files."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from robust_helpers import cli_error

from vlpart import PartSegmenter
from vlpart.core.download import DOWNLOAD_DEADLINE_ENV, download_deadline
from vlpart.core.errors import InputError, VlpartError
from vlpart.core.weights import DownloadError, fetch
from vlpart.inference.refine.sam import load_sam

DATA = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(DATA).hexdigest()
MODEL = "r50_pascalpart"  # a zoo name; the mirror serves <mirror>/checkpoints/<name>.pth


@pytest.fixture
def mirror(file_server, cache_dir, monkeypatch):
    """The file server as ``$VLPART_MIRROR`` (files under ``/m/``), the cache private."""
    monkeypatch.setenv("VLPART_MIRROR", f"{file_server.url}/m/")
    return file_server


def _leftovers(cache: Path) -> set[str]:
    """Cache files other than lock files and resumable ``.part`` files."""
    if not cache.exists():
        return set()
    return {
        str(p.relative_to(cache))
        for p in cache.rglob("*")
        if p.is_file() and not p.name.endswith((".lock", ".part"))
    }


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert isinstance(err, VlpartError) and "\n" not in text and "Traceback" not in text, text
    return text


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# A server failure: how it is set up on a path, and what the one line says.
SERVER_FAILURES = {
    "truncated body": (
        lambda s, p: (s.ignore_range.add(p), s.cuts.__setitem__(p, [len(DATA) // 2] * 5)),
        "the connection closed at 8192 of 16384 bytes",
    ),
    "announced longer": (
        lambda s, p: s.announce.__setitem__(p, len(DATA) + 1000),
        f"the connection closed at {len(DATA)} of {len(DATA) + 1000} bytes",
    ),
    "announced shorter": (
        lambda s, p: s.announce.__setitem__(p, len(DATA) - 1000),
        "does not match the expected",
    ),
    "corrupt content": (
        lambda s, p: s.files.__setitem__(p, DATA[:-1] + b"\x00"),
        "the file is corrupt and was discarded",
    ),
    "server stops mid-body": (
        lambda s, p: s.stop_after.__setitem__(p, 5000),
        "cannot connect",
    ),
    "not found": (lambda s, p: s.files.pop(p), "not found (HTTP 404)"),
    "slow trickle": (lambda s, p: s.trickle.__setitem__(p, 0.02), "deadline of 0.3 s"),
}


@pytest.mark.parametrize("case", list(SERVER_FAILURES))
def test_server_failure_is_one_line_and_caches_nothing(case, mirror, cache_dir):
    setup, problem = SERVER_FAILURES[case]
    path = "/m/files/a.bin"
    mirror.files[path] = DATA
    setup(mirror, path)
    with pytest.raises(VlpartError) as info:
        fetch("https://example.invalid/a.bin", subdir="files", sha256=SHA, deadline=0.3)
    line = _one_line(info.value)
    assert problem in line, line
    assert _leftovers(cache_dir) == set()


def test_deadline_comes_from_the_environment(mirror, cache_dir, monkeypatch):
    mirror.files["/m/files/a.bin"] = DATA
    mirror.trickle["/m/files/a.bin"] = 0.02
    monkeypatch.setenv(DOWNLOAD_DEADLINE_ENV, "0.2")
    with pytest.raises(DownloadError, match=r"deadline of 0\.2 s .*VLPART_DOWNLOAD_DEADLINE"):
        fetch("https://example.invalid/a.bin", subdir="files", progress=False)
    part = cache_dir / "files" / "a.bin.part"
    kept = part.stat().st_size
    assert 0 < kept < len(DATA)  # kept: the next call resumes it
    mirror.trickle.clear()
    monkeypatch.setenv(DOWNLOAD_DEADLINE_ENV, "0")  # no deadline
    path = fetch("https://example.invalid/a.bin", subdir="files", sha256=SHA, progress=False)
    assert path.read_bytes() == DATA and not part.exists()
    assert mirror.requests[-1] == ("/m/files/a.bin", f"bytes={kept}-")


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_deadline_setting_is_one_line(value, monkeypatch):
    monkeypatch.setenv(DOWNLOAD_DEADLINE_ENV, value)
    with pytest.raises(InputError) as info:
        download_deadline()
    assert "deadline" in _one_line(info.value)


def test_progress_bar_shows_the_deadline(mirror, cache_dir, capsys):
    mirror.files["/m/files/a.bin"] = DATA
    mirror.trickle["/m/files/a.bin"] = 0.003  # ~0.8 s in all: a few bar refreshes
    fetch("https://example.invalid/a.bin", subdir="files", sha256=SHA, deadline=60)
    assert "deadline in " in capsys.readouterr().err


# ------------------------------------------------------------------ zoo models and SAM weights
def _pth_cases() -> dict[str, tuple]:
    checkpoint = _torch_bytes({"model": {"backbone.conv.weight": torch.zeros(2, 2)}})
    return {
        "truncated (announced shorter)": (checkpoint, len(checkpoint) // 2, "truncated or corrupt"),
        "not a checkpoint": (b"<html>mirror error page</html>" * 10, None, "not a PyTorch"),
        "foreign checkpoint": (checkpoint, None, "removed the download"),
    }


@pytest.mark.parametrize("case", list(_pth_cases()))
def test_from_pretrained_on_a_bad_download_is_one_line(case, mirror, cache_dir):
    body, announce, problem = _pth_cases()[case]
    path = f"/m/checkpoints/{MODEL}.pth"
    mirror.files[path] = body
    if announce is not None:
        mirror.announce[path] = announce
    with pytest.raises(InputError) as info:
        PartSegmenter.from_pretrained(MODEL, text_encoder="minilm")
    line = _one_line(info.value)
    assert problem in line and "removed the download, run again" in line, line
    assert _leftovers(cache_dir) == set()


def test_truncated_zoo_download_in_the_cli(mirror, cache_dir, capsys, tmp_path):
    mirror.files[f"/m/checkpoints/{MODEL}.pth"] = DATA
    mirror.announce[f"/m/checkpoints/{MODEL}.pth"] = len(DATA) + 10
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    line = cli_error(
        capsys, ["predict", image, "--model", MODEL, "--vocab", "dog", "--out", tmp_path / "o"]
    )
    assert f"{MODEL}.pth: the connection closed at {len(DATA)} of {len(DATA) + 10} bytes" in line
    assert _leftovers(cache_dir) == set() and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "body",
    [DATA, _torch_bytes({"image_encoder.other": torch.zeros(1)}), b""],
    ids=["garbage", "foreign", "empty"],
)
def test_corrupt_sam_download_is_one_line_and_removed(body, mirror, cache_dir):
    mirror.files["/m/sam/sam_vit_b_01ec64.pth"] = body
    with pytest.raises(InputError) as info:
        load_sam("vit_b")
    line = _one_line(info.value)
    assert "sam_vit_b_01ec64.pth" in line and "removed the download" in line, line
    assert _leftovers(cache_dir) == set()
