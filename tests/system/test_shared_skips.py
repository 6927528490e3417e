"""Without ``../shared`` the suite explains itself; in CI it may not skip at all."""
import shutil
import subprocess
import sys

from tests.support.helpers import REPO_ROOT, REQUIRE_SHARED_ENV, tool_env

# A module that needs photos at import, one that imports the query project (photos at
# import too), and tests that need the weights through a fixture or photos in their body.
SELECTION = ["tests/system/test_end_to_end.py", "tests/system/test_query_inputs.py",
             "tests/system/test_model.py", "-k", "resnet50_avg_pool or ranks_itself"]


def _pytest_without_shared(tmp_path, require: bool) -> subprocess.CompletedProcess:
    """Runs part of the suite in a copy of the repository that has no ../shared beside it."""
    repo = tmp_path / "repo"
    if not repo.exists():
        for name in ("lib", "stages", "tests", "data", "pytest.ini", "dvc.yaml", "params.yaml"):
            source = REPO_ROOT / name
            if source.is_dir():
                shutil.copytree(source, repo / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(source, repo / name)
    env = tool_env()
    env.pop(REQUIRE_SHARED_ENV, None)
    if require:
        env[REQUIRE_SHARED_ENV] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           *SELECTION], cwd=repo, env=env, capture_output=True, text=True,
                          check=False)


def test_without_shared_tests_skip_naming_what_is_missing_and_ci_fails(tmp_path):
    assert not (tmp_path / "shared").exists()
    proc = _pytest_without_shared(tmp_path, require=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    weights = tmp_path / "shared/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    photos = tmp_path / "shared/datasets/clothing-small"
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert any(f"needs the real photos ({photos}), not found" in line for line in skipped), out
    assert any(f"needs the real ResNet50 no-top weights ({weights})" in line
               for line in skipped), out
    summary = out.splitlines()[-1]
    assert "4 skipped" in summary and "error" not in summary and "failed" not in summary, out

    proc = _pytest_without_shared(tmp_path, require=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"{REQUIRE_SHARED_ENV} is set, so tests may not skip" in out
    assert "SKIPPED" not in out, out
