"""Each stage in dvc.yaml lists exactly the lib modules its script imports."""
import ast
from pathlib import Path
from typing import Set

import pytest
import yaml

from tests.helpers import REPO_ROOT

STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def lib_imports(path: Path) -> Set[str]:
    """The ``lib/*.py`` files a module imports directly (``lib/__init__.py`` included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.split(".")[0] == "lib":
            found.add("lib/__init__.py")
            if node.module == "lib":
                found.update(f"lib/{alias.name}.py" for alias in node.names
                             if (REPO_ROOT / "lib" / f"{alias.name}.py").is_file())
            else:
                found.add(node.module.replace(".", "/") + ".py")
    return found


def import_closure(script: str) -> Set[str]:
    """Every lib file a script imports, directly or through other lib modules."""
    seen: Set[str] = set()
    todo = [script]
    while todo:
        for module in lib_imports(REPO_ROOT / todo.pop()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_script_and_imported_lib_modules(stage):
    deps = set(STAGES[stage]["deps"])
    script = STAGES[stage]["cmd"].split()[1]
    assert script in deps
    assert {d for d in deps if d.startswith("lib/")} == import_closure(script)


# Stages that only check their params (they write nothing, so nothing depends on them).
CHECKS = {"weights"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_params_and_outputs(stage):
    spec = STAGES[stage]
    assert spec.get("params"), f"stage {stage} reads no params"
    has_outputs = bool(spec.get("outs") or spec.get("metrics"))
    assert has_outputs == (stage not in CHECKS), f"stage {stage}: outputs {has_outputs}"
