"""Helpers of the robustness suite: run the CLI and check its one error line, snapshot
folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vlpart.apps.cli import main


def cli_error(capsys, args: list[str]) -> str:
    """Run ``vlpart ARGS``; assert a non-zero exit with exactly one ``vlpart: error:`` line and
    no traceback; return that line."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vlpart: error:")]
    assert code != 0, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
