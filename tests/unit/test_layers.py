"""The house's floors: lib's packages import only from lower floors, never in a circle.

Ground floor (the modules of ``lib/`` itself) < arrays < incremental < photos,
embedding < pinning, retrieval < evaluation < service < the stage scripts. Packages on one floor
do not import each other; across packages, code imports faces, never internals.
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

from tests.support.helpers import REPO_ROOT

FLOORS = {"ground": 0, "arrays": 1, "incremental": 2, "photos": 3, "embedding": 3,
          "pinning": 4, "retrieval": 4, "evaluation": 5, "service": 6, "stages": 7, "bench": 7}
# Library packages whose names other packages may import (their faces).
PACKAGES = {name for name in FLOORS if (REPO_ROOT / "lib" / name / "__init__.py").is_file()}
SOURCES = sorted([*(REPO_ROOT / "lib").rglob("*.py"), *(REPO_ROOT / "stages").glob("*.py")])


def room(path: Path) -> str:
    """The package (or ``ground``, ``stages``) a source file belongs to."""
    parts = path.relative_to(REPO_ROOT).parts
    if parts[0] != "lib":
        return parts[0]
    return parts[1] if len(parts) > 2 else "ground"


def lib_imports(path: Path) -> Iterator[Tuple[str, int]]:
    """Every ``lib`` module a file imports, with its line (top-level and lazy alike)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "lib":
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lib":
                    yield alias.name, node.lineno


def target(module: str) -> str:
    """The package (or ``ground``) a module name lives in."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "ground"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_imports_go_down_the_floors_and_through_faces(path):
    here = room(path)
    for module, line in lib_imports(path):
        there = target(module)
        where = f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
        if there == here:
            continue
        assert FLOORS[there] < FLOORS[here], f"{where}: {there} is not below {here}"
        if there != "ground":
            assert module == f"lib.{there}", f"{where}: import the face lib.{there}"


def test_no_import_cycles_between_modules():
    graph: Dict[str, Set[str]] = {}
    for path in (REPO_ROOT / "lib").rglob("*.py"):
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        graph[name] = {module for module, _ in lib_imports(path)}
    state: Dict[str, int] = {}

    def visit(node: str, trail: Tuple[str, ...]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, " -> ".join((*trail, node, nxt))
            if nxt not in state:
                visit(nxt, (*trail, node))
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, ())


def test_lib_has_at_most_six_top_modules_and_no_module_over_300_lines():
    assert len(list((REPO_ROOT / "lib").glob("*.py"))) <= 6
    for path in SOURCES:
        limit = 450 if path.name == "config.py" else 300
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= limit, f"{path.relative_to(REPO_ROOT)}: {lines} lines"
