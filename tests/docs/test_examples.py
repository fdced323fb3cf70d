"""Every Python and shell block of README.md and docs/*.md runs, in the workspace of
``conftest.docs_workspace``; what a block prints is compared with the ``<!-- output -->`` block
after it. Markers (``<!-- skip: REASON -->``, ``<!-- slow -->``) are read by
``markdown_blocks.read_blocks``. New pages are picked up without changes here."""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import pytest
import yaml
from markdown_blocks import Block, output_matches, read_blocks

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
BLOCKS = [b for page in PAGES for b in read_blocks(page) if b.language in ("python", "shell")]
SHELL_TIMEOUT_S = 900


def _param(block: Block):
    marks = []
    if "skip" in block.markers:
        marks.append(pytest.mark.skip(reason=block.markers["skip"]))
    if "slow" in block.markers:
        marks.append(pytest.mark.slow)
    return pytest.param(block, id=block.name, marks=marks)


def _check_output(block: Block, printed: str) -> None:
    if block.expected_output is not None:
        assert output_matches(block.expected_output, printed), (
            f"{block.name} printed:\n{printed}\nthe docs show:\n{block.expected_output}"
        )


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_example(block: Block, docs_workspace, docs_env, monkeypatch):
    monkeypatch.chdir(docs_workspace)
    if block.language == "python":
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block.code, block.name, "exec"), {"__name__": "__docs_example__"})
        _check_output(block, printed.getvalue())
        return
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=docs_workspace,
        env=docs_env,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    _check_output(block, done.stdout)


def test_every_skip_says_why():
    for page in PAGES:
        for block in read_blocks(page):
            assert block.markers.get("skip", "x"), f"{block.name}: <!-- skip: --> needs a reason"


def test_the_docs_have_examples():
    # The collector would be blind if the fence parsing broke (README: 4 blocks, docs: 40+).
    assert sum(b.path.name == "README.md" for b in BLOCKS) >= 3
    assert len(BLOCKS) >= 40


@pytest.mark.parametrize(
    "block",
    [b for p in PAGES for b in read_blocks(p) if b.language == "yaml"],
    ids=lambda b: b.name,
)
def test_yaml_blocks_are_valid_configs(block: Block):
    """YAML blocks are vlpart configs (or parts of one): every key and type is checked."""
    from vlpart.core.config import config_from_dict

    config_from_dict(yaml.safe_load(block.code), source=block.name)


def test_relative_links_resolve():
    """Links from the README and the pages to files of this repository point at files."""
    import re

    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_markers_parse(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- skip: needs internet -->\n```bash\ncurl x\n```\n\n"
        "<!-- slow -->\n\n```python\nprint(1)\nprint(2)\nprint(3)\n```\n"
        "<!-- output -->\n```text\n1\n...\n3\n```\n"
        "text\n\n```python\nx = 1\n```\n",
        encoding="utf-8",
    )
    skip, slow, plain = read_blocks(page)
    assert (skip.markers, skip.language, skip.code) == (
        {"skip": "needs internet"},
        "shell",
        "curl x\n",
    )
    assert slow.markers == {"slow": ""} and slow.expected_output == "1\n...\n3\n"
    assert plain.markers == {} and plain.line == 21
    assert output_matches(slow.expected_output, "1\n2\n3\n")
    assert not output_matches(slow.expected_output, "1\n2\n4\n")
    assert output_matches("a ... c", "a b c") and not output_matches("a ... c", "a b d")
