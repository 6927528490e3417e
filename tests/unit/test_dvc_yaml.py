"""Each stage in dvc.yaml lists exactly the lib code its script imports."""
import pytest
import yaml

from lib.incremental.code import declared_deps
from tests.support.helpers import REPO_ROOT

STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_script_and_imported_lib_code(stage):
    deps = set(STAGES[stage]["deps"])
    script = STAGES[stage]["cmd"].split()[1]
    assert script in deps
    assert {d for d in deps if d.startswith("lib/")} == set(declared_deps(REPO_ROOT / script))


def test_a_package_is_declared_by_its_folder_when_every_module_runs():
    # stages/etl.py imports the photos face, which imports every photos module.
    deps = declared_deps(REPO_ROOT / "stages/etl.py")
    assert "lib/photos" in deps and not any(d.startswith("lib/photos/") for d in deps)
    # Modules of lib/ itself are named one by one.
    assert {"lib/__init__.py", "lib/config.py", "lib/errors.py"} <= set(deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_params_and_outputs(stage):
    spec = STAGES[stage]
    assert spec.get("params"), f"stage {stage} reads no params"
    # Every stage writes something: a stage without outputs would be skipped on a
    # fresh clone (nothing of it is missing), the weights check among them.
    assert spec.get("outs") or spec.get("metrics"), f"stage {stage} writes nothing"
