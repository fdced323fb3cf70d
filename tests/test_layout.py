"""The package reads as its layers: every ``vlpart`` import (module-level or inside a function)
goes down the layer table below, and no two modules import each other, even lazily."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import vlpart

SRC = Path(vlpart.__file__).parent
# Layer -> the layers it may import. ``vlpart`` is the package's top level (the public names).
ALLOWED = {
    "core": set(),
    "text": {"core"},
    "model": {"core"},
    "data": {"core"},
    "export": {"core", "model"},
    "inference": {"core", "text", "model", "export"},
    "evaluation": {"core", "model", "inference"},
    "parsing": {"core", "model"},
    # Fine-tuning evaluates the start and the result and labels known categories with the
    # one inference path (training/finetune*.py).
    "training": {"core", "text", "model", "data", "inference", "evaluation"},
    "vlpart": {"core", "text", "model", "inference", "training"},
    "apps": {
        "vlpart",
        "core",
        "text",
        "model",
        "data",
        "export",
        "inference",
        "evaluation",
        "parsing",
        "training",
    },
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = ["vlpart", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the vlpart modules it imports anywhere in its body."""

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                target = owner(name) if name.startswith("vlpart") else None
                if target is not None and target != module:
                    edges[module].add(target)
    return edges


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vlpart"


def test_every_module_belongs_to_a_layer():
    assert {_layer(m) for m in _modules()} == set(ALLOWED)


def test_imports_go_down_the_layers():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _imports(_modules()).items()
        for target in targets
        if _layer(target) != _layer(module) and _layer(target) not in ALLOWED[_layer(module)]
    )
    assert not wrong


def test_no_import_cycles_lazy_ones_included():
    edges = _imports(_modules())
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(edges.get(module, ())):
            if seen.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in sorted(_modules()):
        if module not in seen:
            visit(module, [module])
    assert not cycles


def test_the_checker_sees_lazy_imports():
    # The tests above would be blind if function-level imports were skipped.
    lazy = _imports(_modules())["vlpart.apps.cli.predict"]  # its imports all sit inside run()
    assert "vlpart.inference.files" in lazy and "vlpart.inference.video" in lazy
