"""The documentation site builds in strict mode (broken links, missing references, docstring
warnings fail), offline, into a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocstrings_handlers.python", reason="needs the docs extra")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("**/index.html")}
    assert {"index.html", "benchmarks/index.html", "api/index.html"} <= pages
    assert (tmp_path / "img" / "latency_by_stage.png").is_file()
