"""Pinning that holds under corruption, races and odd files (tiny real DVC project).

One test per way serving used to answer wrongly with exit 0, each reproducing it
with real DVC, a real DVC cache and a real remote (:mod:`tests.support.tiny_project`); the
cases that need the real model are in ``test_integrity_model.py``. Every test that
could hang runs under a timeout.
"""
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lib.config import Config
from lib.errors import PinningError
from lib.pinning.verify import pin, pin_revision, verify_workspace
from tests.support import tiny_project as tiny
from tests.support.helpers import tool_env, run

TIMEOUT_S = 120


@contextlib.contextmanager
def deadline(seconds: int = TIMEOUT_S):
    """Fails the test (instead of hanging) if the block runs longer than ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: it hangs")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory):
    """The tiny project, built once for this module."""
    return tiny.build(tmp_path_factory.mktemp("integrity"))


@pytest.fixture(name="project")
def project_fixture(template, tmp_path):
    """A private copy of it and of its remote."""
    return tiny.copy(template, tmp_path)


def config_of(project: Path, name: str = "params.yaml") -> Config:
    """The configuration of a params file of the project."""
    return Config.from_dict(yaml.safe_load((project / name).read_text(encoding="utf-8")))


def recorded(project: Path, path: str) -> str:
    """The md5 ``dvc.lock`` records for an output."""
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    return next(out["md5"] for stage in lock["stages"].values() for out in stage["outs"]
                if out["path"] == path)


def serve(project: Path, *args: str, timeout: int = TIMEOUT_S) -> subprocess.CompletedProcess:
    """``stages/serve.py`` run in the project, as a user runs it."""
    return subprocess.run([sys.executable, str(tiny.SERVE), *args], cwd=project,
                          env=tool_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``serve.py: error: ...`` line of a refused run."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("serve.py: error: "), proc.stderr
    return lines[0]


def test_1_a_corrupted_cache_object_dvc_trusts_is_refused(project):
    vectors_md5 = recorded(project, "out/vectors.npy")
    cached = tiny.cache_object(project, vectors_md5)
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0xFF                        # bit rot: one flipped byte, same mtime and mode
    info = cached.stat()
    os.chmod(cached, 0o644)
    cached.write_bytes(bytes(data))
    os.chmod(cached, info.st_mode)
    os.utime(cached, ns=(info.st_atime_ns, info.st_mtime_ns))
    (project / "out/vectors.npy").unlink()
    run(["dvc", "checkout", "-q"], project)           # restores the corrupted copy
    assert (project / "out/vectors.npy").read_bytes() == bytes(data)
    # DVC's stat cache now vouches for it: dvc status passes. Serving hashes every byte
    # it copies, so the default check refuses it and names the corrupted object.
    assert "up to date" in run(["dvc", "status"], project).stdout
    for full in (False, True):
        with pytest.raises(PinningError) as err:
            pin(project, config_of(project), full=full)
        message = str(err.value)
        assert f"corrupted DVC cache object, {cached}" in message and "\n" not in message
    for flags in ((), ("--verify-full",)):
        line = one_error_line(serve(project, "params.yaml", *flags))
        assert "out/vectors.npy (vectors) does not hold the content dvc.lock records" in line
    assert not list((project / ".dvc/tmp/serve-pins").iterdir())   # no copy left behind
    # The repair the message gives: delete both, dvc pull (the remote's copy is good).
    cached.unlink()
    (project / "out/vectors.npy").unlink()
    run(["dvc", "pull", "-q"], project)
    pinned = pin(project, config_of(project))
    assert hashlib.md5(pinned.paths["vectors"].read_bytes()).hexdigest() == vectors_md5
    pinned.release()


def v2(project: Path) -> None:
    """Commits a second version (another photo, another scale), tagged v2."""
    (project / "data/master/d.jpg").write_text("d.jpg", encoding="utf-8")
    tiny.write_params(project, tiny.params(image_size=40))
    run(["dvc", "repro", "-q"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "v2"], project)
    run(["git", "tag", "v2"], project)


def test_3_a_checkout_after_the_check_cannot_mix_versions(project):
    v2(project)
    run(["git", "checkout", "-q", "v1"], project)
    run(["dvc", "checkout", "-q"], project)
    pinned = verify_workspace(project, config_of(project))
    # A `dvc checkout` of v2 lands while the engine is still loading.
    run(["git", "checkout", "-q", "v2"], project)
    run(["dvc", "checkout", "-q"], project)
    assert np.load(project / "out/vectors.npy")[0, 0] == 40.0
    loaded = {key: pinned.paths[key] for key in ("names", "vectors", "images")}
    loaded["model"] = pinned.paths["model"] / "model.keras"
    # What loads is v1 throughout, as the version line says.
    assert np.load(loaded["vectors"]).shape == (3, 4) and np.load(loaded["vectors"])[0, 0] == 15
    assert np.load(loaded["names"]).tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert loaded["model"].read_text(encoding="utf-8") == "a.jpg b.jpg c.jpg15.0"
    for key in ("names", "vectors", "images"):
        assert hashlib.md5(loaded[key].read_bytes()).hexdigest() == pinned.version.hashes[key]
    pinned.release()
    assert not pinned.snapshot.exists()


def test_3_the_check_waits_for_dvc_s_repository_lock(project):
    holder = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", "import sys, time\nfrom dvc.repo import Repo\n"
         "repo = Repo('.')\nrepo.lock.lock()\nprint('locked', flush=True)\ntime.sleep(60)"],
        cwd=project, env=tool_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with deadline(), pytest.raises(PinningError, match="another DVC command"):
            verify_workspace(project, config_of(project), lock_wait_s=1)
    finally:
        holder.kill()
        holder.wait()
    verify_workspace(project, config_of(project)).release()


def test_4_params_other_than_those_built_with_are_refused(project):
    tiny.write_params(project, tiny.params(image_size=20), "other.yaml")
    with pytest.raises(PinningError, match=r"the serving params set etl.image_size to 20, "
                                           r"but the artifacts were built with 15"):
        verify_workspace(project, config_of(project, "other.yaml"))
    line = one_error_line(serve(project, "params.yaml", "--params", "other.yaml"))
    assert "etl.image_size" in line
    # The same settings in another file verify; serve-only settings may differ.
    same = tiny.params()
    same["serve"]["top_n"] = 9
    tiny.write_params(project, same, "same.yaml")
    verify_workspace(project, config_of(project, "same.yaml")).release()


def test_5_odd_files_in_master_are_refused_before_dvc_hangs_on_them(project):
    master = project / "data/master"
    os.mkfifo(master / "pipe.jpg")
    with deadline(), pytest.raises(PinningError, match="pipe.jpg: FIFO") as err:
        verify_workspace(project, config_of(project))
    assert "DVC would hang" in str(err.value)
    assert "FIFO" in one_error_line(serve(project, "params.yaml", timeout=60))
    (master / "pipe.jpg").unlink()
    (master / "loop").symlink_to("loop")
    with deadline(), pytest.raises(PinningError, match="symbolic link loop"):
        verify_workspace(project, config_of(project))
    (master / "loop").unlink()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(master / ".hidden.sock"))      # hidden, but DVC hashes it too
        with deadline(), pytest.raises(PinningError, match="hidden.sock: socket"):
            verify_workspace(project, config_of(project))


def test_8_revisions_that_name_no_commit_are_one_line_errors(project, tmp_path):
    for rev in ("HEAD:params.yaml", "HEAD^{tree}", "", "  "):
        with pytest.raises(PinningError) as err:
            pin_revision(project, rev, cache_dir=tmp_path / "revs")
        assert "\n" not in str(err.value) and len(str(err.value)) < 200
    assert "--rev is empty" in one_error_line(serve(project, "params.yaml", "--rev", ""))
    assert "does not name a commit" in one_error_line(
        serve(project, "params.yaml", "--rev", "HEAD^{tree}"))


def test_8_an_oversized_query_is_refused_before_it_is_read(project):
    query = project / "huge.jpg"
    with open(query, "wb") as handle:
        handle.truncate(2 << 30)                       # 2 GiB, sparse
    probe = ("import resource, subprocess, sys\n"
             "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "print(proc.stderr, end='')")
    proc = subprocess.run([sys.executable, "-c", probe, sys.executable, str(tiny.SERVE),
                           str(query)], cwd=project, env=tool_env(), capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=True)
    status, peak_kib = proc.stdout.splitlines()[0].split()
    assert status == "1", proc.stdout
    assert "exceeds the limit of" in proc.stdout and "bytes" in proc.stdout
    assert int(peak_kib) < 1024 * 1024, f"peak RSS {peak_kib} KiB: the file was read"
