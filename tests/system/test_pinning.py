"""``lib.pinning.verify`` on a tiny real DVC + git pipeline (no TensorFlow, a second per repro).

The stage writes the four served artifacts (names, vectors, a model folder, landing
images) from ``source.txt`` and a ``etl`` param, so every check runs against real
``dvc.lock`` files, real DVC hashing and a real local remote.
"""
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from lib.config import Config
from lib.errors import PinningError
from lib.pinning.verify import pin_revision, unverified, verify_workspace
from tests.support.helpers import flip_last_byte, run, set_params
from tests.support.tiny_project import publish_v1

BUILD = '''
import sys
from pathlib import Path
import numpy as np
text = Path("source.txt").read_text()
scale = float(sys.argv[1])
Path("out/model").mkdir(parents=True, exist_ok=True)
np.save("out/names.npy", np.array(text.split()))
np.save("out/vectors.npy", np.full((len(text.split()), 4), scale, dtype=np.float32))
np.save("out/images.npy", np.zeros((len(text.split()), 2, 2, 3), dtype=np.uint8))
Path("out/model/model.keras").write_text(text * 3)
'''
PARAMS = {
    "paths": {"master": "source.txt", "images": "out/images.npy", "names": "out/names.npy",
              "etl_report": "out/report.json", "features": "out/images.npy",
              "vectors": "out/vectors.npy", "model": "out/model"},
    "etl": {"image_size": 15},
}
DVC_YAML = {"stages": {"build": {
    "cmd": "python build.py ${etl.image_size}",
    "deps": ["source.txt", "build.py"],
    "params": ["etl"],
    "outs": ["out/names.npy", "out/vectors.npy", "out/images.npy", "out/model"],
}}}


def config_of(params: dict) -> Config:
    """The configuration of a params mapping (the tiny project has only two sections)."""
    return Config.from_dict(params, missing_sections=True)


def params_of(project: Path) -> Config:
    """The configuration of the project's params.yaml."""
    return config_of(yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8")))


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory):
    """A built, committed tiny project beside the local remote it has pushed to."""
    root = tmp_path_factory.mktemp("pinning")
    project = root / "project"
    project.mkdir()
    (project / "build.py").write_text(BUILD, encoding="utf-8")
    (project / "source.txt").write_text("a.jpg b.jpg c.jpg", encoding="utf-8")
    (project / "params.yaml").write_text(yaml.safe_dump(PARAMS), encoding="utf-8")
    (project / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML), encoding="utf-8")
    publish_v1(project)
    return root


@pytest.fixture(name="project")
def project_fixture(template, tmp_path):
    """A private copy of the template project and its remote."""
    shutil.copytree(template / "remote", tmp_path / "remote")
    return Path(shutil.copytree(template / "project", tmp_path / "project", symlinks=True))


def recorded_md5(project: Path, path: str) -> str:
    """The md5 ``dvc.lock`` records for an output."""
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    return next(out["md5"] for stage in lock["stages"].values() for out in stage["outs"]
                if out["path"] == path)


def test_a_clean_workspace_verifies_and_names_its_version(project):
    pinned = verify_workspace(project, params_of(project))
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    md5 = recorded_md5(project, "out/vectors.npy")
    assert pinned.version.describe() == f"version: git {head[:12]} (workspace), vectors md5 {md5}"
    # The paths are a private snapshot of the very bytes checked: copies, never links.
    workspace = {"names": "out/names.npy", "vectors": "out/vectors.npy",
                 "model": "out/model/model.keras", "images": "out/images.npy"}
    assert set(pinned.paths) == set(workspace)
    for key, path in workspace.items():
        loaded = pinned.paths[key] / "model.keras" if key == "model" else pinned.paths[key]
        assert loaded.is_relative_to(pinned.snapshot)
        assert not loaded.samefile(project / path)
        assert loaded.read_bytes() == (project / path).read_bytes()
    # Their md5s, taken as they were copied, are DVC's (a folder's .dir hash too).
    assert pinned.served_md5() == pinned.version.hashes
    pinned.release()
    assert not pinned.snapshot.exists() and (project / "out/vectors.npy").is_file()
    assert pinned.version.hashes["model"] == recorded_md5(project, "out/model")
    assert pinned.version.hashes["model"].endswith(".dir")


@pytest.mark.parametrize("tamper, message", [
    (lambda p: np.save(p / "out/vectors.npy", np.zeros((3, 4), np.float32)),
     "out/vectors.npy (vectors) is not the version recorded in dvc.lock"),
    (lambda p: (p / "out/model/model.keras").write_text("edited"),
     "out/model (model) is not the version recorded in dvc.lock"),
    (lambda p: (p / "out/model/extra.bin").write_text("x"),
     "out/model (model) is not the version recorded in dvc.lock"),
    (lambda p: (p / "out/images.npy").unlink(),
     "out/images.npy (images) is missing from the workspace: run `dvc pull` to fetch the "
     "version recorded in dvc.lock (the DVC remote 'local' has it)"),
    (lambda p: set_params(p, {"etl.image_size": 20}),
     "the artifacts are stale: params.yaml etl modified since stage 'build' ran: run "
     "`dvc repro`"),
    (lambda p: (p / "source.txt").write_text("a.jpg"),
     "the artifacts are stale: source.txt modified since stage 'build' ran"),
    (lambda p: (p / "dvc.lock").unlink(),
     "out/names.npy is not recorded in dvc.lock: run `dvc repro`"),
])
def test_a_mismatch_is_refused_naming_the_artifact_and_the_fix(project, tamper, message):
    tamper(project)
    with pytest.raises(PinningError) as err:
        verify_workspace(project, params_of(project))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_fix_the_message_names_works(project):
    shutil.rmtree(project / "out/model")
    with pytest.raises(PinningError, match="dvc pull"):
        verify_workspace(project, params_of(project))
    run(["dvc", "pull", "-q"], project)
    verify_workspace(project, params_of(project))


def test_a_missing_artifact_the_remote_lacks_points_to_repro_not_pull(project, tmp_path):
    shutil.rmtree(project / "out/model")
    shutil.rmtree(tmp_path / "remote")              # the remote holds nothing (a fresh clone)
    with pytest.raises(PinningError) as err:
        verify_workspace(project, params_of(project))
    assert str(err.value) == ("out/model (model) is missing from the workspace and the DVC "
                              "remote 'local' does not have it: run `dvc repro` to build it")
    run(["dvc", "remote", "remove", "local"], project)
    with pytest.raises(PinningError, match="and no DVC remote is set: run `dvc repro`"):
        verify_workspace(project, params_of(project))
    run(["dvc", "repro", "-q"], project)            # the fix it names works
    verify_workspace(project, params_of(project))


def test_paths_outside_the_pipeline_cannot_be_pinned(project):
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["paths"]["vectors"] = "elsewhere/vectors.npy"
    with pytest.raises(PinningError, match="not an output of any stage"):
        verify_workspace(project, config_of(params))


def test_a_folder_that_is_no_dvc_repository_is_refused(tmp_path):
    with pytest.raises(PinningError, match="is not a DVC repository"):
        verify_workspace(tmp_path, config_of(PARAMS))


def test_unverified_names_the_md5_of_the_bytes_it_loads(project, caplog):
    assert unverified(project, params_of(project)).version.vectors_md5 == \
        recorded_md5(project, "out/vectors.npy")
    np.save(project / "out/vectors.npy", np.zeros((1, 4), np.float32))
    loaded = hashlib.md5((project / "out/vectors.npy").read_bytes()).hexdigest()
    pinned = unverified(project, params_of(project))
    assert pinned.version.describe() == ("version: git none (workspace, unverified), vectors "
                                         f"md5 {loaded}")
    assert hashlib.md5(pinned.paths["vectors"].read_bytes()).hexdigest() == loaded
    assert f"(md5 {loaded}) are not the version dvc.lock records" in caplog.text
    pinned.release()


def test_a_revision_is_fetched_from_the_remote_and_reused(project, tmp_path):
    v1_vectors = np.load(project / "out/vectors.npy")
    v1_md5 = recorded_md5(project, "out/vectors.npy")
    (project / "source.txt").write_text("a.jpg b.jpg c.jpg d.jpg", encoding="utf-8")
    set_params(project, {"etl.image_size": 40})
    run(["dvc", "repro", "-q"], project)
    run(["git", "commit", "-q", "-am", "v2"], project)
    shutil.rmtree(project / ".dvc/cache")              # v1 exists only in the remote now

    cache = tmp_path / "revs"
    pinned = pin_revision(project, "v1", cache_dir=cache)
    np.testing.assert_array_equal(np.load(pinned.paths["vectors"]), v1_vectors)
    kept = cache / v1_md5 / "vectors.npy"                  # the fetched copy, kept
    assert kept.read_bytes() == pinned.paths["vectors"].read_bytes()
    assert pinned.paths["vectors"].is_relative_to(pinned.snapshot)   # served: a private copy
    assert pinned.served_md5() == pinned.version.hashes
    assert pinned.config.etl.image_size == 15          # the revision's params
    v1_commit = run(["git", "rev-parse", "v1"], project).stdout.strip()
    assert pinned.version.describe() == f"version: git {v1_commit[:12]} (v1), vectors md5 {v1_md5}"
    assert np.load(project / "out/vectors.npy")[0, 0] == 40.0  # workspace untouched

    # A second call reuses the fetched copy, and re-hashes it: a tampered copy is refused.
    again = pin_revision(project, "v1", cache_dir=cache)
    assert again.served_md5() == pinned.served_md5()
    pinned.release()
    again.release()
    np.save(kept, np.zeros((3, 4), np.float32))
    with pytest.raises(PinningError, match="delete it to fetch it again"):
        pin_revision(project, "v1", cache_dir=cache)
    # Unverified, it is served, under the md5 of the bytes loaded.
    tampered = pin_revision(project, "v1", cache_dir=cache, verify=False)
    assert tampered.version.vectors_md5 == hashlib.md5(kept.read_bytes()).hexdigest()
    assert tampered.version.source == "v1, unverified"
    tampered.release()


def test_unknown_revisions_and_missing_data_are_one_line_errors(project, tmp_path):
    with pytest.raises(PinningError, match="unknown Git revision 'v9'"):
        pin_revision(project, "v9", cache_dir=tmp_path / "revs")
    shutil.rmtree(project / ".dvc/cache")
    shutil.rmtree(tmp_path / "remote")
    with pytest.raises(PinningError, match="cannot fetch out/") as err:
        pin_revision(project, "v1", cache_dir=tmp_path / "revs")
    assert "\n" not in str(err.value)


def test_a_git_repository_without_commits_verifies_with_no_revision(project):
    shutil.rmtree(project / ".git")
    run(["git", "init", "-q"], project)
    assert verify_workspace(project, params_of(project)).version.git_rev is None


def test_a_folder_missing_from_cache_and_remote_is_a_one_line_error(project, tmp_path):
    model_md5 = recorded_md5(project, "out/model")
    for listing in (project / ".dvc/cache").rglob("*.dir"):
        if listing.parent.name + listing.name == model_md5:
            listing.unlink()
    shutil.rmtree(tmp_path / "remote")
    with pytest.raises(PinningError, match="cannot fetch out/model at revision 'v1'") as err:
        pin_revision(project, "v1", cache_dir=tmp_path / "revs")
    assert "\n" not in str(err.value)


def test_an_unchanged_workspace_skips_dvc_and_any_change_is_checked_again(project, caplog):
    config = params_of(project)
    first = verify_workspace(project, config)
    first.release()
    skipped = "DVC is not asked again"
    with caplog.at_level("DEBUG", logger="lib.pinning.stamp"):
        again = verify_workspace(project, config)
    again.release()
    assert skipped in caplog.text and again.version == first.version
    changes = [  # (change, what refuses it, undo): each is seen, DVC is asked
        (lambda: (project / "source.txt").write_text("a.jpg b.jpg", encoding="utf-8"),
         "source.txt modified", lambda: run(["git", "checkout", "source.txt"], project)),
        (lambda: (project / "build.py").write_text("# edited\n", encoding="utf-8"),
         "build.py modified", lambda: run(["git", "checkout", "build.py"], project))]
    for change, refusal, undo in changes:
        change()
        caplog.clear()
        with caplog.at_level("DEBUG", logger="lib.pinning.stamp"), \
                pytest.raises(PinningError, match=refusal):
            verify_workspace(project, config)
        assert skipped not in caplog.text
        undo()
    verify_workspace(project, config).release()
    (project / "note.txt").write_text("a commit", encoding="utf-8")
    run(["git", "add", "note.txt"], project)
    run(["git", "commit", "-q", "-m", "note"], project)   # a new HEAD names the version
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    pinned = verify_workspace(project, config)
    pinned.release()
    assert pinned.version.git_rev == head
    served = project / "out/vectors.npy"                  # edited in place, mtime kept
    info = served.stat()
    flip_last_byte(served)
    os.utime(served, ns=(info.st_atime_ns, info.st_mtime_ns))
    with pytest.raises(PinningError):
        verify_workspace(project, config)
