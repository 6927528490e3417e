"""The code a stage runs: its script and every ``lib`` module it imports.

One resolver serves two uses: the incremental stages hash these files into their
fingerprint (:func:`lib.incremental.rows.recipe`), and ``dvc.yaml`` declares them as
each stage's deps (a test holds the two equal). Importing ``lib.a.b`` runs
``lib/__init__.py``, ``lib/a/__init__.py`` and ``lib/a/b.py``; a package's face
imports its modules, so a stage that imports a face runs the whole package, which
``dvc.yaml`` names as one folder dep (:func:`declared_deps`).
"""
import ast
from pathlib import Path
from typing import Iterator, List, Set

from lib.errors import PathLike

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib"


def _module_file(name: str) -> Path:
    """The file of a ``lib`` module or package, by dotted name."""
    base = ROOT.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _with_parents(name: str) -> Iterator[Path]:
    """The files importing module ``name`` runs: its parents' faces, then itself."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        module = _module_file(".".join(parts[:end]))
        if module.is_file():
            yield module


def imported_files(path: PathLike) -> Set[Path]:
    """The ``lib`` files one source file imports directly (parents' faces included)."""
    found: Set[Path] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from lib.a import b``: b is a module of lib.a, or a name defined there.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                     if _module_file(f"{node.module}.{alias.name}").is_file()]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "lib":
                found.update(_with_parents(name))
    return found


def code_files(script: PathLike) -> List[Path]:
    """A script and every ``lib`` file it imports, directly or not, sorted (absolute)."""
    seen = {Path(script).resolve()}
    todo = list(seen)
    while todo:
        for module in imported_files(todo.pop()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return sorted(seen)


def declared_deps(script: PathLike) -> List[str]:
    """The ``lib`` code of a script as ``dvc.yaml`` declares it, relative to the root.

    Modules of ``lib/`` itself are listed one by one; a package is named by its
    folder when the script runs every module in it, else by its files.
    """
    files = {path for path in code_files(script) if LIB in path.parents}
    deps = set()
    for path in files:
        package = path.parent
        if package != LIB and set(package.glob("*.py")) <= files:
            deps.add(package.relative_to(ROOT).as_posix())
        else:
            deps.add(path.relative_to(ROOT).as_posix())
    return sorted(deps)
