"""The service's engine holder on a tiny real DVC project: DVC's lock is free while a
version loads, one reload runs at a time, and each version keeps its private snapshot
exactly as long as it answers.

No TensorFlow: the slow model load is replaced by a stand-in that probes DVC's
repository lock from another process (as ``dvc checkout`` would take it) and can be
held open, so the timing of two reloads is decided by the test, not by the machine.
"""
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lib.errors import PinningError
from lib.service.engines import EngineHolder, Served
from tests.support import tiny_project as tiny
from tests.support.helpers import flip_last_byte, run, tool_env

LOCK_PROBE = ("import sys\nfrom dvc.repo import Repo\nrepo = Repo('.')\n"
              "try:\n    repo.lock.lock()\nexcept Exception as err:\n"
              "    sys.exit(f'held: {err}')\nrepo.lock.unlock()\nprint('free')")


class StandIn:
    """What the holder needs of a loaded version, and a record of each load."""

    def __init__(self, project: Path):
        self.project = project
        self.probes = []
        self.gate = threading.Event()
        self.gate.set()
        self.loading = threading.Event()

    def load(self, pinned) -> Served:
        """Probes the lock, waits at the gate, and 'loads' the vectors from the snapshot."""
        self.loading.set()
        probe = subprocess.run([sys.executable, "-c", LOCK_PROBE], cwd=self.project,
                               env=tool_env(), capture_output=True, text=True, timeout=120,
                               check=False)
        self.probes.append(probe.stdout.strip() or probe.stderr.strip())
        assert self.gate.wait(120)
        vectors = np.load(pinned.paths["vectors"], mmap_mode="r")
        return Served(engine=vectors, version=pinned.version, config=pinned.config,
                      loaded_at=time.time(), pinned=pinned)


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory):
    """The tiny project, built once for this module."""
    return tiny.build(tmp_path_factory.mktemp("holder"))


@pytest.fixture(name="holder")
def holder_fixture(template, tmp_path, monkeypatch):
    """A holder serving a private copy of the project, with the stand-in load."""
    project = tiny.copy(template, tmp_path)
    stand_in = StandIn(project)
    monkeypatch.setattr(EngineHolder, "_load", staticmethod(stand_in.load))
    holder = EngineHolder(project / "params.yaml")
    holder.stand_in = stand_in
    yield holder
    holder.close()


def test_a_version_loads_with_dvc_s_lock_free_and_keeps_its_snapshot(holder):
    served = holder.start()
    assert holder.stand_in.probes == ["free"]
    assert served.pinned.snapshot.is_dir()                  # kept while it answers
    assert holder.recheck()["files"] == 4
    assert holder.reload() == ("unchanged", holder.current)
    assert holder.current.pinned.snapshot == served.pinned.snapshot   # not copied again
    assert len(list(served.pinned.snapshot.parent.iterdir())) == 1
    # A new version: swapped in, the old snapshot removed, the old mapping still valid.
    project = holder.root
    (project / "data/master/d.jpg").write_text("d.jpg", encoding="utf-8")
    run(["dvc", "repro", "-q"], project)
    status, new = holder.reload()
    assert status == "swapped" and new.engine.shape == (4, 4)
    assert not served.pinned.snapshot.exists() and new.pinned.snapshot.is_dir()
    assert served.engine.shape == (3, 4) and float(served.engine[0, 0]) == 15.0
    assert holder.stand_in.probes == ["free", "free"]
    holder.close()
    assert not new.pinned.snapshot.exists()


def test_a_second_reload_while_one_runs_is_turned_away_with_a_wait(holder):
    holder.start()
    (holder.root / "data/master/d.jpg").write_text("d.jpg", encoding="utf-8")
    run(["dvc", "repro", "-q"], holder.root)
    holder.stand_in.gate.clear()
    holder.stand_in.loading.clear()
    first = {}
    thread = threading.Thread(target=lambda: first.update(result=holder.reload()))
    thread.start()
    try:
        assert holder.stand_in.loading.wait(120)
        assert holder.reload(wait=False) is None             # the service answers 429
        assert holder.retry_after() >= 1
    finally:
        holder.stand_in.gate.set()
        thread.join(120)
    assert first["result"][0] == "swapped"
    assert holder.reload(wait=False)[0] == "unchanged"       # free again


def test_recheck_refuses_changed_bytes_and_a_refused_reload_keeps_the_old_one(holder):
    served = holder.start()
    flip_last_byte(served.pinned.paths["vectors"])
    with pytest.raises(PinningError, match="no longer holds the bytes verified"):
        holder.recheck()
    np.save(holder.root / "out/vectors.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(PinningError, match="not the version recorded in dvc.lock"):
        holder.reload()
    assert holder.current is served and served.pinned.snapshot.is_dir()
    assert "not the version recorded" in holder.last_error
