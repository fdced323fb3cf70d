"""A failed run never destroys earlier results: output sets are committed as a unit, a full disk
is one line naming the path, temporary files of killed runs are cleaned up, modes follow the
umask."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from robust_helpers import cli_error, snapshot

from vlpart.apps.cli import main
from vlpart.core.fileio import OutputSet, temp_name, write_json_atomic

SRC = Path(__file__).parents[2] / "src"


def _images(folder: Path, count: int = 2, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", (size, size), (40 * i, 90, 160)).save(path)
        paths.append(path)
    return paths


def _predict(images, weights, out) -> list[str]:
    return ["predict", *map(str, images), "--weights", str(weights), "--vocab", "dog"] + [
        "--out",
        str(out),
        "--score-thresh",
        "0",
    ]


@pytest.fixture
def earlier(tiny_checkpoint, tmp_path) -> Path:
    """An output folder holding a complete earlier ``vlpart predict`` run."""
    out = tmp_path / "out"
    assert main(_predict(_images(tmp_path / "first"), tiny_checkpoint, out)) == 0
    return out


def test_predict_writes_a_consistent_set(earlier):
    dataset = json.loads((earlier / "dataset.json").read_text())
    results = json.loads((earlier / "results.json").read_text())
    assert [im["id"] for im in dataset["images"]] == [1, 2]
    assert {r["image_id"] for r in results} <= {1, 2}
    assert sorted(p.name for p in (earlier / "overlays").iterdir()) == ["img0.png", "img1.png"]
    assert sorted(p.name for p in earlier.iterdir()) == ["dataset.json", "overlays", "results.json"]


def test_a_run_that_processed_nothing_leaves_the_folder_as_it_was(
    capsys, earlier, tiny_checkpoint, tmp_path
):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    (bad / "b.jpg").write_bytes(b"")
    before = snapshot(earlier)
    line = cli_error(capsys, _predict([bad / "a.png", bad / "b.jpg"], tiny_checkpoint, earlier))
    assert "none of the 2 images could be read" in line
    assert snapshot(earlier) == before
    assert not [p for p in earlier.rglob(".*")]  # no temporary file left


def test_a_new_run_replaces_the_whole_set(earlier, tiny_checkpoint, tmp_path):
    """Overlays of the earlier run that the new one did not make are gone with it."""
    image = _images(tmp_path / "second", count=1)
    renamed = image[0].with_name("other.png")
    image[0].rename(renamed)
    assert main(_predict([renamed], tiny_checkpoint, earlier)) == 0
    assert [p.name for p in (earlier / "overlays").iterdir()] == ["other.png"]
    assert [
        im["file_name"] for im in json.loads((earlier / "dataset.json").read_text())["images"]
    ] == [str(renamed)]


def _inject_enospc(monkeypatch, under: Path, *, skip: int = 0, containing: str = "") -> None:
    """``os.write`` to a file under ``under`` (whose path contains ``containing``) fails with
    ENOSPC after ``skip`` such calls."""
    real = os.write
    calls = [0]

    def write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith(str(under)) and containing in target:
            calls[0] += 1
            if calls[0] > skip:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("skip", [0, 1], ids=["dataset.json", "results.json"])
def test_disk_full_during_predict_keeps_the_earlier_set(
    skip, capsys, monkeypatch, earlier, tiny_checkpoint, tmp_path
):
    before = snapshot(earlier)
    _inject_enospc(monkeypatch, earlier, skip=skip)
    images = _images(tmp_path / "second", count=3)
    line = cli_error(capsys, _predict(images, tiny_checkpoint, earlier))
    name = ["dataset.json", "results.json"][skip]
    assert line == f"vlpart: error: {earlier / name}: no space left on device"
    assert snapshot(earlier) == before
    assert not [p for p in earlier.rglob(".*")]


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(
    capsys, monkeypatch, fast_train_yaml, tmp_path
):
    run = tmp_path / "run"
    # The save at iteration 4 hits a full disk; the one at iteration 2 is complete.
    _inject_enospc(monkeypatch, run, containing=".ckpt-000004.")
    line = cli_error(capsys, ["train", str(fast_train_yaml), "--out", str(run)])
    target = run / "ckpt-000004" / "model.safetensors"
    assert line == f"vlpart: error: {target}: no space left on device"
    assert sorted(p.name for p in run.iterdir()) == [
        "ckpt-000002",
        "latest",
        "metrics.jsonl",
        "model.json",
        "model.safetensors",
    ]
    assert (run / "latest").read_text().strip() == "ckpt-000002"
    monkeypatch.undo()
    assert main(["train", str(fast_train_yaml), "--out", str(run), "--resume"]) == 0
    assert (run / "latest").read_text().strip() == "ckpt-000004"
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-000004"]


def test_output_set_commits_folders_then_files_and_discards_on_error(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "old.txt").write_text("old")
    (tmp_path / "a.json").write_text("old a")
    with pytest.raises(RuntimeError), OutputSet() as out:
        out.folder(tmp_path / "keep")
        out.write(tmp_path / "keep" / "new.txt", lambda p: p.write_text("new"))
        out.write_json(tmp_path / "a.json", {"new": 1})
        raise RuntimeError("stop before commit")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "keep", "old.txt"]
    assert (tmp_path / "a.json").read_text() == "old a"
    with OutputSet() as out:
        out.folder(tmp_path / "keep")
        out.write(tmp_path / "keep" / "sub" / "new.txt", lambda p: p.write_text("new"))
        out.write_json(tmp_path / "a.json", {"new": 1})
        out.commit()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "a.json",
        "keep",
        "keep/sub",
        "keep/sub/new.txt",
    ]
    assert json.loads((tmp_path / "a.json").read_text()) == {"new": 1}


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        write_json_atomic({"a": 1}, tmp_path / "x.json")
        with OutputSet() as out:
            out.folder(tmp_path / "dir")
            out.write(tmp_path / "dir" / "y.png", lambda p: Image.new("L", (2, 2)).save(p, "PNG"))
            out.write_json(tmp_path / "z.json", [])
            out.commit()
    finally:
        os.umask(old)
    for name in ("x.json", "z.json", "dir/y.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (tmp_path / "dir").stat().st_mode & 0o777 == 0o777 & ~umask


def test_orphaned_temporary_files_are_removed_by_the_next_run(earlier, tiny_checkpoint, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = Path(
        str(temp_name(earlier / "results.json")).replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    )
    orphan.write_text("half a file")
    orphan_dir = Path(
        str(temp_name(earlier / "overlays")).replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    )
    orphan_dir.mkdir()
    live = temp_name(earlier / "dataset.json")  # ours: a live writer's file is kept
    live.write_text("in progress")
    assert main(_predict(_images(tmp_path / "second", 1), tiny_checkpoint, earlier)) == 0
    assert not orphan.exists() and not orphan_dir.exists()
    assert live.exists()


# ------------------------------------------------------------ a real full disk (tmpfs)


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


TMPFS_SCRIPT = textwrap.dedent(
    """
    import contextlib, hashlib, io, json, os, shutil, sys
    from pathlib import Path
    from vlpart.apps.cli import main

    mount, weights, images, config = Path(sys.argv[1]), sys.argv[2], sys.argv[3:5], sys.argv[5]

    def snap(folder):
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    def run(args):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(args)
        lines = err.getvalue().splitlines()
        errors = [line[line.index("vlpart: error"):] for line in lines if "vlpart: error" in line]
        return code, errors, lines[-3:]

    report = {}
    out = mount / "out"
    report["first"] = run(["predict", images[0], "--weights", weights, "--vocab", "dog",
                           "--out", str(out), "--score-thresh", "0"])
    before = snap(out)
    free = shutil.disk_usage(mount).free
    (mount / "filler").write_bytes(b"x" * (free - 16384))
    report["full"] = run(["predict", *images, "--weights", weights, "--vocab", "dog",
                          "--out", str(out), "--score-thresh", "0"])
    report["kept"] = snap(out) == before
    report["leftovers"] = [p.name for p in out.rglob(".*")]
    (mount / "filler").unlink()
    run_dir = mount / "run"
    report["train"] = run(["train", config, "--out", str(run_dir)])
    report["ckpts"] = sorted(p.name for p in run_dir.glob("ckpt-*"))
    latest = run_dir / "latest"
    report["latest"] = latest.read_text().strip() if latest.exists() else None
    report["train_leftovers"] = [p.name for p in run_dir.rglob(".*")]
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_a_real_full_disk(fast_train_yaml, tiny_checkpoint, tmp_path):
    """vlpart predict and vlpart train on a small tmpfs (mounted in a private mount namespace)."""
    if not _can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs here (needs unshare -m with mount rights)")
    images = _images(tmp_path / "img", count=2, size=256)
    mount = tmp_path / "mnt"
    mount.mkdir()
    # One checkpoint (weights + state) fits in 150 MB, two do not.
    script = tmp_path / "tmpfs_run.py"
    script.write_text(TMPFS_SCRIPT)
    command = (
        f"mount -t tmpfs -o size=150m tmpfs {mount} && "
        f"{sys.executable} {script} {mount} {tiny_checkpoint} {images[0]} {images[1]} "
        f"{fast_train_yaml}"
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["first"][:2] == [0, []], report
    code, lines, _ = report["full"]
    assert code == 2 and len(lines) == 1, report
    assert lines[0].startswith(f"vlpart: error: {mount / 'out'}/"), lines
    assert lines[0].endswith(": no space left on device"), lines
    assert report["kept"] and report["leftovers"] == []
    code, lines, _ = report["train"]
    assert code == 2 and len(lines) == 1 and lines[0].endswith("no space left on device"), report
    assert "ckpt-000004" in lines[0]
    assert report["ckpts"] == ["ckpt-000002"] and report["latest"] == "ckpt-000002"
    assert report["train_leftovers"] == []
