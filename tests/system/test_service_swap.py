"""A running service switches to a new version without a failed request, and refuses
a tampered one while the old version keeps answering.

A copy of the query project is served with ``service.watch_seconds`` short; a client
loop queries it the whole time. ``dvc repro`` of a new whitening makes a new version
that the service notices in ``dvc.lock`` and swaps in; then a served artifact is
tampered with and ``POST /reload`` is refused. The served version's private snapshot
is kept while it answers and removed when it is swapped out and when the service stops.
"""
import shutil
import threading
import time
from pathlib import Path
from typing import List, Tuple

import httpx
import numpy as np
import pytest

from tests.support.helpers import repro, set_params
from tests.support.query_project import COLLECTION, name_of
from tests.support.service_helpers import ServiceProcess

pytestmark = pytest.mark.slow


class ClientLoop(threading.Thread):
    """Queries the service without pause (upload and by-name) until stopped."""

    def __init__(self, url: str, photo: Path):
        super().__init__(daemon=True)
        self.url = url
        self.photo = photo.read_bytes()
        self.stop = threading.Event()
        self.answers: List[Tuple[int, tuple]] = []      # (status, top scores)
        self.failures: List[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                try:
                    response = client.post("/search", params={"n": 3},
                                           files={"image": ("q.jpg", self.photo)})
                    by_name = client.get("/search", params={"name": name_of(COLLECTION[4])})
                except httpx.HTTPError as err:
                    self.failures.append(f"{type(err).__name__}: {err}")
                    continue
                for answer in (response, by_name):
                    if answer.status_code != 200:
                        self.failures.append(f"{answer.status_code} {answer.text}")
                scores = tuple(round(hit["score"], 4) for hit in response.json()["results"]) \
                    if response.status_code == 200 else ()
                self.answers.append((response.status_code, scores))

    def count(self) -> int:
        """Answers so far."""
        return len(self.answers)

    def wait_for_more(self, extra: int, timeout: float = 300) -> None:
        """Blocks until ``extra`` more answers came back."""
        target, deadline = self.count() + extra, time.monotonic() + timeout
        while self.count() < target and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.05)
        assert self.count() >= target, f"client loop stalled: {self.failures[-3:]}"


def wait_for(predicate, timeout: float, what: str) -> None:
    """Polls until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_new_version_swapped_in_without_failures_tampered_one_refused(query_project,
                                                                    tmp_path):
    project = tmp_path / "project"
    shutil.copytree(query_project, project, symlinks=True)
    set_params(project, {"service.watch_seconds": 0.5})
    service = ServiceProcess(project, tmp_path / "log.txt")
    loop = ClientLoop(service.url, project / "data" / "master" / name_of(COLLECTION[4]))
    try:
        with httpx.Client(base_url=service.url, timeout=120) as client:
            before = client.get("/version").json()
            loop.start()
            loop.wait_for_more(3)
            # A new version: whitening on. The service notices the new dvc.lock.
            set_params(project, {"whitening.dim": 4})
            assert repro(project) == ["whitening", "index", "evaluate"]
            wait_for(lambda: client.get("/version").json()["hashes"] != before["hashes"],
                     300, "the new version to be swapped in")
            loop.wait_for_more(3)
            swapped = client.get("/version").json()
            # The old version's private copy is gone; the new one's is kept while it answers.
            snapshot = service.snapshot()
            assert swapped["served_md5"]["whitening"] == swapped["hashes"]["whitening"]
            assert swapped["hashes"]["whitening"] != before["hashes"]["whitening"]
            assert swapped["hashes"]["vectors"] == before["hashes"]["vectors"]
            # A tampered artifact: the reload is refused, the old version answers on.
            whitening = project / "data" / "model" / "whitening.npz"
            tampered = project / "data" / "model" / "tampered.npz"
            with np.load(whitening) as data:
                arrays = dict(data)
            arrays["projection"] = arrays["projection"] * 2
            np.savez(tampered, **arrays)
            tampered.replace(whitening)
            refused = client.post("/reload")
            assert refused.status_code == 409, refused.text
            assert "whitening.npz" in refused.json()["error"]
            assert "not the version recorded in dvc.lock" in refused.json()["error"]
            loop.wait_for_more(3)
            assert client.get("/version").json()["hashes"] == swapped["hashes"]
            assert client.get("/health").json()["last_reload_error"] == \
                refused.json()["error"].split(": ", 1)[1]
    finally:
        loop.stop.set()
        loop.join(timeout=120)
        service.stop()
    assert not snapshot.exists()                      # removed when the service stopped
    log = service.log()
    assert not loop.failures, loop.failures[:5]
    assert all(code == 200 for code, _ in loop.answers)
    # Answers came from both versions: unwhitened scores first, whitened ones after.
    assert loop.answers[0][1] != loop.answers[-1][1]
    assert "swapped in the new version (changed: index, whitening)" in log, log
    assert "new version refused" in log, log
    assert "Traceback" not in log, log
