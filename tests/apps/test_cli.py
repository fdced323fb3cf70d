import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlpart.apps.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_vocab_list(capsys):
    assert main(["vocab", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"pascal_part\s+93\s+14\s+93\s+77\s+16", out)
    assert re.search(r"lvis\s+1203", out)


def test_vocab_show_builtin(capsys):
    assert main(["vocab", "show", "pascal_part"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# pascal_part: 93 categories"
    assert len(lines) == 94
    assert re.search(r"dog:head\s+'a dog head'\s+novel", "\n".join(lines))
    assert re.search(r"cat:head\s+'a cat head'\s+base", "\n".join(lines))


def test_vocab_show_neighbours_with_precomputed(capsys, shared_data):
    npy = shared_data / "vlpart_metadata" / "pascal_part_clip_RN50_a+cname.npy"
    assert (
        main(
            [
                "vocab",
                "show",
                "pascal_part",
                "--encoder",
                "precomputed",
                "--embeddings",
                str(npy),
                "--neighbours",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"cat:head\s+'a cat head'\s+base\s+dog:head \(0\.\d\d\)", out)


def test_vocab_show_star_expansion_shows_the_split(capsys):
    assert main(["vocab", "show", "dog:*; cat:head; horse:leg,mane"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    rows = [re.fullmatch(r"\s*\d+\s+\d+ (\S+)\s+'[^']*'\s+(\S+)\s*(.*)", line) for line in lines]
    split = {m[1]: m[2] for m in rows}
    assert all(split[n] == "novel" for n in split if n.startswith("dog:"))
    assert split["cat:head"] == "-" and split["horse:leg"] == "-"
    # The entry each category was expanded from, and none for the ones typed as they are.
    entries = {m[1]: m[3] for m in rows}
    assert entries["dog:head"] == "<- dog:*" and entries["cat:head"] == ""


def test_vocab_show_rewritten_and_bare_part_entries(capsys, caplog):
    assert main(["vocab", "show", "dog; cat; legs; dog's head"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# dog; cat; legs; dog's head: 5 categories"
    assert [line.split()[2:] for line in lines[1:]] == [
        ["dog", "'a", "dog'", "-"],
        ["cat", "'a", "cat'", "-"],
        ["dog:leg", "'a", "dog", "leg'", "novel", "<-", "legs"],
        ["cat:leg", "'a", "cat", "leg'", "base", "<-", "legs"],
        ["dog:head", "'a", "dog", "head'", "-", "<-", "dog's", "head"],
    ]
    assert "read 'legs' as '*:leg', \"dog's head\" as 'dog:head'" in caplog.text
    assert main(["vocab", "show", "dog; *:wing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "know no 'wing' of dog" in err and "e.g. dog:wing" in err


def test_help_imports_no_heavy_module():
    """``--help`` answers without torch, numpy or PIL (they load inside the commands)."""
    code = (
        "import sys\n"
        "from vlpart.apps.cli import main\n"
        "for cmd in ([], ['predict'], ['train'], ['quickstart'], ['eval'], ['data', 'synth']):\n"
        "    try:\n"
        "        main([*cmd, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted({'torch', 'torchvision', 'numpy', 'PIL', 'yaml'} & set(sys.modules))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: vlpart predict" in out
    assert out.splitlines()[-1] == "HEAVY []"
    # The public names still resolve on first use.
    out = subprocess.run(
        [sys.executable, "-c", "import vlpart; print(vlpart.PartSegmenter.__name__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "PartSegmenter"


def test_default_output_folders_are_ignored_by_git(tmp_path):
    """Every ``--out`` default (the quickstart, predict, train, parse) lies in a folder that
    the repository's .gitignore ignores, so running a command from the root adds no files."""
    from vlpart.apps.cli import _build_parser

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    defaults = set()
    stack = [_build_parser()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            if "--out" in action.option_strings and action.default:
                defaults.add(action.default)
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    assert {"quickstart", "out", "runs/train", "runs/parsed"} <= defaults
    for folder in defaults:
        probe = f"{folder}/report.md"
        result = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT)
        assert result.returncode == 0, f"{probe} is not ignored by .gitignore"


def test_vocab_show_template(capsys):
    assert main(["vocab", "show", "dog:head,tail", "--template", "part_of_object"]) == 0
    assert "'head of a dog'" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_2(capsys):
    assert main(["vocab", "show", "pascal_prt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("vlpart: error: unknown vocabulary 'pascal_prt'; did you mean")
    assert main(["vocab", "show", "dog", "--encoder", "precomputed"]) == 2
    assert "needs an embeddings .npy file" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "vlpart.apps.cli", "vocab", "show", "dog:*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "# dog:*: 10 categories" in out


def test_readme_setup_commands_match_ci():
    """The README opens with two commands; .ci/run runs the second one verbatim."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    main_cmd, test_cmd = (line for line in blocks[0].splitlines() if line.strip())
    assert "vlpart " in main_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    ("argv", "preset", "expected"),
    [
        (["predict", "no_such_image.jpg", "--weights", "x.safetensors"], None, "PASSIVE"),
        (
            ["label", "no_such_dir", "--weights", "x.pth", "--vocab", "dog", "--out", "o"],
            None,
            "PASSIVE",
        ),
        (["predict", "no_such_image.jpg", "--weights", "x.safetensors"], "ACTIVE", "ACTIVE"),
        (["predict", "no_such_image.jpg", "--weights", "x.pth", "--writers", "0"], None, None),
        (["predict", "--webcam", "0", "--weights", "x.safetensors"], None, None),
        (["eval", "--pred", "no_such.json", "--gt", "no_such.json"], None, None),
    ],
)
def test_pipelined_commands_make_openmp_wait_passively(tmp_path, argv, preset, expected):
    """``predict`` (with writer threads) and ``label`` set ``OMP_WAIT_POLICY=PASSIVE`` (unless
    the user set it) before torch loads OpenMP, so that the model's idle OpenMP threads leave
    the cores to the writer threads; ``--writers 0``, ``--webcam`` and other commands leave it
    alone."""
    code = (
        "import importlib.abc, os, sys\n"
        "seen = []\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and not seen:\n"
        "            seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from vlpart.apps.cli import main\n"
        f"rc = main({argv!r})\n"
        "print('RC', rc, 'POLICY', seen)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    ).stdout.splitlines()[-1]
    # Each command fails on its missing input, after torch is loaded (the policy is read then).
    assert out == f"RC 2 POLICY [{expected!r}]"
