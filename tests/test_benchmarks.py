"""Every benchmark script imports (its imports name this tree's API) and describes itself."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 10


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports(path, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    monkeypatch.syspath_prepend(str(path.parent))  # as `python benchmarks/x.py` runs it
    spec.loader.exec_module(module)  # module level: imports and definitions only
    assert callable(module.main)
    assert module.__doc__ and "python benchmarks/" in module.__doc__
