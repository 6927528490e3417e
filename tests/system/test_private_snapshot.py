"""What serving answers from is a private copy, fixed when it was verified.

Serving used to hard-link the verified files into its snapshot. With DVC's
``hardlink`` cache type a workspace artifact is the DVC cache object itself, so an
in-place write into it (a script opening it ``r+``, a memory map written back) changed
the bytes a running server answered from, and the DVC cache object, while the version
line still named the verified version. Each test reproduces one way it went wrong, on
the tiny real DVC project (:mod:`tests.support.tiny_project`: real ``dvc.lock``, real
DVC hashing, a real cache and remote).
"""
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lib.config import Config
from lib.errors import PinningError
from lib.pinning import copies
from lib.pinning.verify import pin, unverified, verify_workspace
from tests.support import tiny_project as tiny
from tests.support.helpers import flip_last_byte, run, tool_env

LOCK_PROBE = ("import sys\nfrom dvc.repo import Repo\nrepo = Repo('.')\n"
              "try:\n    repo.lock.lock()\nexcept Exception as err:\n"
              "    sys.exit(f'held: {err}')\nrepo.lock.unlock()\nprint('free')")


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory):
    """The tiny project, built once for this module."""
    return tiny.build(tmp_path_factory.mktemp("private"))


@pytest.fixture(name="project")
def project_fixture(template, tmp_path):
    """A private copy of it and of its remote."""
    return tiny.copy(template, tmp_path)


def config_of(project: Path) -> Config:
    """The configuration of the project's params.yaml."""
    return Config.from_dict(yaml.safe_load((project / "params.yaml").read_text("utf-8")))


def recorded(project: Path, path: str) -> str:
    """The md5 ``dvc.lock`` records for an output."""
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    return next(out["md5"] for stage in lock["stages"].values() for out in stage["outs"]
                if out["path"] == path)


def leftovers(project: Path) -> list:
    """Serving snapshots left in the project."""
    folder = project / ".dvc/tmp/serve-pins"
    return list(folder.iterdir()) if folder.is_dir() else []


def link_mode(project: Path) -> None:
    """Switches the project to DVC's hardlink cache type (as this repository's own
    ``.dvc/config`` does on a file system without reflinks) and relinks the outputs."""
    run(["dvc", "config", "cache.type", "hardlink"], project)
    run(["dvc", "checkout", "-q", "--relink"], project)
    cached = tiny.cache_object(project, recorded(project, "out/vectors.npy"))
    assert (project / "out/vectors.npy").samefile(cached)


def write_in_place(path: Path, value: float, keep_mtime: bool = False) -> None:
    """Writes into a file's own bytes (no new inode), as a memory map written back does."""
    info = path.stat()
    array = np.load(path, mmap_mode="r+")
    array[0, 0] = value
    array.flush()
    del array
    if keep_mtime:
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_the_snapshot_is_a_private_read_only_copy_that_in_place_writes_cannot_reach(project):
    link_mode(project)
    workspace = project / "out/vectors.npy"
    with pin(project, config_of(project)) as pinned:
        served = pinned.paths["vectors"]
        loaded = np.load(served, mmap_mode="r")             # as the engine maps it
        assert not served.samefile(workspace)
        assert served.stat().st_mode & 0o222 == 0            # read-only
        assert pinned.served_md5() == pinned.version.hashes
        write_in_place(workspace, 99.0)                     # the DVC cache object too
        assert np.load(workspace)[0, 0] == 99.0
        assert loaded[0, 0] == 15.0 and np.load(served)[0, 0] == 15.0
        assert pinned.recheck()[0] == 4                     # names, vectors, images, model
    del loaded
    assert not pinned.snapshot.exists()


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["mtime-changed", "mtime-kept"])
def test_an_in_place_write_in_link_mode_is_refused_naming_the_cache_object(project, keep_mtime):
    link_mode(project)
    md5 = recorded(project, "out/vectors.npy")
    cached = tiny.cache_object(project, md5)
    write_in_place(project / "out/vectors.npy", 99.0, keep_mtime)
    with pytest.raises(PinningError) as err:
        verify_workspace(project, config_of(project))
    message = str(err.value)
    assert "\n" not in message and str(cached) in message, message
    if not keep_mtime:          # DVC sees the change; the cache object changed with it
        assert "written in place through a link into DVC's cache" in message
        assert "modified" in run(["dvc", "status"], project).stdout
    else:                       # DVC's stat cache sees nothing; the copied bytes do
        assert "corrupted DVC cache object" in message
        assert "up to date" in run(["dvc", "status"], project).stdout
    assert not leftovers(project)
    # The repair the message names: delete the object and the file, then dvc pull.
    cached.unlink()
    (project / "out/vectors.npy").unlink()
    run(["dvc", "pull", "-q"], project)
    with pin(project, config_of(project)) as pinned:
        assert pinned.served_md5()["vectors"] == md5
        assert hashlib.md5(cached.read_bytes()).hexdigest() == md5


def test_dvc_s_lock_is_free_while_copying_and_a_checkout_meanwhile_is_caught(project,
                                                                            monkeypatch,
                                                                            caplog):
    (project / "data/master/d.jpg").write_text("d.jpg", encoding="utf-8")   # v2: 4 photos
    run(["dvc", "repro", "-q"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "v2"], project)
    run(["git", "checkout", "-q", "v1"], project)
    run(["dvc", "checkout", "-q"], project)
    copy_one = copies.private_copy
    seen = []

    def copy_then_checkout(source, target, stats=None):
        manifest = copy_one(source, target, stats)
        if not seen:              # after the first artifact of the first try only
            probe = subprocess.run([sys.executable, "-c", LOCK_PROBE], cwd=project,
                                   env=tool_env(), capture_output=True, text=True,
                                   timeout=120, check=False)
            seen.append(probe.stdout.strip() or probe.stderr.strip())
            # A checkout of v2 lands while the files are being copied.
            run(["git", "checkout", "-q", "main"], project)
            run(["dvc", "checkout", "-q"], project)
        return manifest

    monkeypatch.setattr("lib.pinning.snapshot.private_copy", copy_then_checkout)
    caplog.set_level(logging.INFO, logger="lib.pinning")
    pinned = verify_workspace(project, config_of(project))
    assert seen[0] == "free"              # the copy runs outside DVC's repository lock
    assert "changed while it was copied (a DVC command?): checking again" in caplog.text
    # Never a mix: the copies are one version, the one the version line names (v2).
    assert pinned.served_md5() == pinned.version.hashes
    assert pinned.version.hashes["names"] == recorded(project, "out/names.npy")
    assert np.load(pinned.paths["names"]).tolist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert np.load(pinned.paths["vectors"]).shape == (4, 4)
    pinned.release()
    assert not leftovers(project)             # the first try's copies are gone too


def test_recheck_finds_a_changed_or_missing_copy_in_one_line(project):
    pinned = pin(project, config_of(project))
    files, size = pinned.recheck()
    assert files == 4 and size == sum(manifest.size for manifest in pinned.manifests.values())
    served = pinned.paths["images"]
    flip_last_byte(served)                               # one bit of the copy flips
    with pytest.raises(PinningError) as err:
        pinned.recheck()
    assert "no longer holds the bytes verified when it was loaded" in str(err.value)
    assert "images" in str(err.value) and "\n" not in str(err.value)
    served.unlink()
    with pytest.raises(PinningError, match="cannot be read"):
        pinned.recheck()
    pinned.release()


def test_unverified_serving_copies_too_and_names_what_it_loaded(project):
    np.save(project / "out/vectors.npy", np.full((3, 4), 7, np.float32))
    with unverified(project, config_of(project)) as pinned:
        assert pinned.paths["vectors"].is_relative_to(pinned.snapshot)
        md5 = hashlib.md5((project / "out/vectors.npy").read_bytes()).hexdigest()
        assert pinned.version.vectors_md5 == md5 != recorded(project, "out/vectors.npy")
        assert pinned.version.source == "workspace, unverified"
        assert pinned.version.hashes == pinned.served_md5()
