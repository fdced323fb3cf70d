"""Fenced code blocks of the README and the docs pages, with the markers written before them.

A marker is an HTML comment on the line(s) just before a fence (blank lines allowed between):

* ``<!-- skip: REASON -->`` — the block is not run; the reason is shown in the test report;
* ``<!-- slow -->`` — the block runs in the slow tier only;
* ``<!-- output -->`` before a ```` ```text ```` block — the text is what the code block before it
  prints (compared line by line after stripping trailing spaces; a line ``...`` stands for any
  number of lines, and ``...`` inside a line for any characters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

LANGUAGES = {
    "python": "python",
    "py": "python",
    "bash": "shell",
    "sh": "shell",
    "shell": "shell",
    "console": "shell",
    "yaml": "yaml",
    "yml": "yaml",
    "text": "text",
}
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"^\s*<!--\s*(?P<body>.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced block.

    Attributes:
        path: the Markdown file.
        line: 1-based line of the opening fence.
        language: ``python``, ``shell``, ``yaml``, ``text`` or the raw info string.
        code: the block's text, de-indented by the fence's indentation.
        markers: ``{"skip": reason, "slow": "", "output": ""}`` for the markers before it.
        expected_output: the ``<!-- output -->`` text block that follows it, if any.
    """

    path: Path
    line: int
    language: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)
    expected_output: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def parse_markers(comment: str) -> dict[str, str]:
    """The marker of one comment: ``"skip: needs internet"`` -> ``{"skip": "needs internet"}``,
    ``"slow"`` -> ``{"slow": ""}``."""
    key, _, value = comment.partition(":")
    return {key.strip().lower(): value.strip()}


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, in order, output blocks attached to the block before."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    markers: dict[str, str] = {}
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i])
        fence = _FENCE.match(lines[i])
        if marker:
            markers.update(parse_markers(marker.group("body")))
        elif fence:
            indent, ticks = len(fence.group("indent")), fence.group("fence")
            info = fence.group("info").lower()
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(ticks):
                body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
                i += 1
            block = Block(path, start, LANGUAGES.get(info, info), "\n".join(body) + "\n", markers)
            if "output" in markers and blocks:
                blocks[-1].expected_output = block.code
            else:
                blocks.append(block)
            markers = {}
        elif lines[i].strip():
            markers = {}
        i += 1
    return blocks


def output_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` matches ``expected`` (see the module docstring for ``...``)."""
    want = [line.rstrip() for line in expected.strip("\n").splitlines()]
    got = [line.rstrip() for line in actual.strip("\n").splitlines()]
    pattern = []
    for line in want:
        if line.strip() == "...":
            pattern.append(r"(?:.*\n)*?")
        else:
            pattern.append(".*".join(re.escape(part) for part in line.split("...")) + r"\n")
    return re.fullmatch("".join(pattern), "\n".join(got) + "\n") is not None
