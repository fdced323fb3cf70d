"""The weight resolver and downloader, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os

import pytest

from vlpart.core import weights
from vlpart.core.weights import DownloadError, WeightSource, cache_dir, fetch, resolve

DATA = bytes(range(256)) * 4096  # 1 MiB, every byte value, position-dependent
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def online(monkeypatch):
    """Origin downloads allowed (the suite is offline by default through HF_HUB_OFFLINE)."""
    monkeypatch.setenv("VLPART_OFFLINE", "0")
    monkeypatch.delenv("VLPART_MIRROR", raising=False)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VLPART_CACHE", str(tmp_path / "c"))
    assert cache_dir("checkpoints") == tmp_path / "c" / "checkpoints"
    monkeypatch.delenv("VLPART_CACHE")
    assert str(cache_dir("clip")) == os.path.expanduser("~/.cache/vlpart/clip")


def test_download_is_verified_cached_and_not_repeated(file_server, online, cache_dir):
    file_server.files["/w/a.bin"] = DATA
    path = fetch(f"{file_server.url}/w/a.bin", subdir="sub", sha256=SHA, progress=False)
    assert path == cache_dir / "sub" / "a.bin" and path.read_bytes() == DATA
    assert not path.with_name("a.bin.part").exists()
    file_server.files.clear()  # a second call must not touch the server
    assert fetch(f"{file_server.url}/w/a.bin", subdir="sub", progress=False) == path
    assert len(file_server.requests) == 1


def test_interrupted_download_resumes_with_a_range_request(file_server, online, cache_dir):
    file_server.files["/a.bin"] = DATA
    file_server.cuts["/a.bin"] = [300_000]  # the first connection drops after 300 kB
    path = fetch(f"{file_server.url}/a.bin", subdir="s", sha256=SHA, progress=False)
    assert path.read_bytes() == DATA
    assert file_server.requests == [("/a.bin", None), ("/a.bin", "bytes=300000-")]


def test_partial_file_of_an_earlier_run_is_resumed(file_server, online, cache_dir):
    file_server.files["/a.bin"] = DATA
    part = cache_dir / "s" / "a.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:123_456])
    path = fetch(f"{file_server.url}/a.bin", subdir="s", sha256=SHA, progress=False)
    assert path.read_bytes() == DATA and not part.exists()
    assert file_server.requests == [("/a.bin", "bytes=123456-")]


def test_complete_part_file_is_finished_without_new_bytes(file_server, online, cache_dir):
    file_server.files["/a.bin"] = DATA
    part = cache_dir / "s" / "a.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA)  # killed between the last byte and the rename
    assert fetch(f"{file_server.url}/a.bin", subdir="s", progress=False).read_bytes() == DATA
    assert file_server.requests == [("/a.bin", f"bytes={len(DATA)}-")]


def test_truncated_download_is_rejected_and_not_cached(file_server, online, cache_dir):
    url = f"{file_server.url}/a.bin"
    file_server.files["/a.bin"] = DATA
    file_server.ignore_range.add("/a.bin")  # no resuming possible: always the same half
    file_server.cuts["/a.bin"] = [len(DATA) // 2] * 5
    with pytest.raises(DownloadError, match=r"a\.bin.*kept.*resumes"):
        fetch(url, subdir="s", progress=False)
    target = cache_dir / "s" / "a.bin"
    assert not target.exists()  # never mistaken for a complete file
    assert (cache_dir / "s" / "a.bin.part").stat().st_size == len(DATA) // 2
    file_server.ignore_range.clear()
    file_server.cuts.clear()
    assert fetch(url, subdir="s", sha256=SHA, progress=False).read_bytes() == DATA
    assert file_server.requests[-1] == ("/a.bin", f"bytes={len(DATA) // 2}-")


def test_corrupt_download_is_discarded(file_server, online, cache_dir):
    file_server.files["/a.bin"] = DATA[:-1] + b"\x00"
    with pytest.raises(DownloadError, match="SHA-256 .* does not match"):
        fetch(f"{file_server.url}/a.bin", subdir="s", sha256=SHA, progress=False)
    assert list((cache_dir / "s").glob("a.bin*")) == []


def test_not_found_names_the_url_and_the_place(file_server, online, cache_dir):
    url = f"{file_server.url}/missing.pth"
    with pytest.raises(FileNotFoundError) as info:
        fetch(url, subdir="s", progress=False)
    message = str(info.value)
    assert url in message and "HTTP 404" in message and str(cache_dir / "s" / "missing.pth")
    assert "\n" not in message
    assert not (cache_dir / "s" / "missing.pth").exists()


def test_hanging_server_times_out_with_a_clear_error(file_server, online, cache_dir):
    file_server.files["/slow.bin"] = DATA
    file_server.hanging.add("/slow.bin")
    with pytest.raises(DownloadError, match=r"no answer within 0\.3 s"):
        fetch(f"{file_server.url}/slow.bin", subdir="s", progress=False, timeout=0.3)
    assert len(file_server.requests) == 1  # no retries after receiving nothing
    assert not (cache_dir / "s" / "slow.bin").exists()


@pytest.mark.parametrize("variable", ["VLPART_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_failure_is_one_line_with_url_and_path(monkeypatch, cache_dir, variable):
    monkeypatch.delenv("VLPART_OFFLINE", raising=False)
    monkeypatch.delenv("VLPART_MIRROR", raising=False)
    monkeypatch.setenv(variable, "1")
    url = "https://example.invalid/files/model.pth"
    with pytest.raises(FileNotFoundError) as info:
        fetch(url, subdir="checkpoints", progress=False)
    message = str(info.value)
    assert "\n" not in message and "offline" in message
    assert f"download {url} and put it at {cache_dir / 'checkpoints' / 'model.pth'}" in message


def test_mirror_folder_is_copied_into_the_cache_even_offline(monkeypatch, tmp_path, cache_dir):
    mirror = tmp_path / "mirror"
    (mirror / "checkpoints").mkdir(parents=True)
    (mirror / "checkpoints" / "m.pth").write_bytes(DATA)
    monkeypatch.setenv("VLPART_MIRROR", str(mirror))
    monkeypatch.setenv("VLPART_OFFLINE", "1")
    source = WeightSource("test weights", "checkpoints", url="https://example.invalid/m.pth")
    resolved = resolve(source, progress=False)
    assert resolved.source == "mirror" and resolved.path == cache_dir / "checkpoints" / "m.pth"
    assert resolved.path.read_bytes() == DATA
    assert resolve(source).source == "cache"
    with pytest.raises(FileNotFoundError, match=r"other\.pth: not in the mirror"):
        fetch("https://example.invalid/other.pth", subdir="checkpoints", progress=False)
    (mirror / "x").mkdir()
    (mirror / "x" / "m.pth").write_bytes(DATA[:1000])  # a bad copy in the mirror
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch("https://example.invalid/m.pth", subdir="x", sha256=SHA, progress=False)
    assert not (cache_dir / "x" / "m.pth").exists()


def test_mirror_url_replaces_the_origin(file_server, monkeypatch, cache_dir):
    file_server.files["/vlpart/checkpoints/m.pth"] = DATA
    monkeypatch.setenv("VLPART_MIRROR", file_server.url + "/vlpart/")
    monkeypatch.setenv("VLPART_OFFLINE", "1")  # a mirror is what an air-gapped machine uses
    path = fetch("https://example.invalid/m.pth", subdir="checkpoints", sha256=SHA)
    assert path.read_bytes() == DATA
    assert file_server.requests == [("/vlpart/checkpoints/m.pth", None)]
    with pytest.raises(FileNotFoundError, match="HTTP 404"):
        fetch("https://example.invalid/gone.pth", subdir="checkpoints", progress=False)


def test_resolve_order_explicit_cache_package(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("VLPART_OFFLINE", "1")
    packaged = tmp_path / "pkg.bin"
    packaged.write_bytes(b"p")
    other = tmp_path / "hub.bin"
    source = WeightSource(
        "demo weights",
        "demo",
        url="https://example.invalid/demo.bin",
        other_caches=(lambda: other,),
        package=lambda: packaged,
        hint="or pass weights=None",
    )
    assert resolve(source) == weights.ResolvedWeights(packaged, "package")
    other.write_bytes(b"o")
    assert resolve(source) == weights.ResolvedWeights(other, "cache")
    ours = cache_dir / "demo" / "demo.bin"
    ours.parent.mkdir(parents=True)
    ours.write_bytes(b"c")
    assert resolve(source) == weights.ResolvedWeights(ours, "cache")
    assert resolve(source, packaged).source == "file"
    with pytest.raises(FileNotFoundError, match=r"nope\.bin: demo weights file not found; or pass"):
        resolve(source, tmp_path / "nope.bin")


def test_missing_package_and_no_url_is_a_clear_error():
    def missing():
        raise ImportError("No module named 'weights_pkg'")

    with pytest.raises(FileNotFoundError, match="package that is not installed.*weights_pkg"):
        resolve(WeightSource("pkg weights", "p", package=missing))
