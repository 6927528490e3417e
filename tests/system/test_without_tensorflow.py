"""The everyday loop needs no TensorFlow: queries, ``--rev``, the service, an update.

TensorFlow builds the Keras model once (the artifact of record); after that the
inference model's OpenVINO IR answers. Here ``tensorflow`` and ``keras`` are made
unimportable (a ``PYTHONPATH`` entry whose packages raise ``ImportError``) and a cold
query, warm mode, a ``--rev`` query, the service and an incremental ``dvc repro`` all
succeed with the answers TensorFlow's presence gave.
"""
import re
import shutil
from pathlib import Path
from typing import List

import httpx
import pytest

from tests.support.helpers import DATASET, make_project, pick_per_class, run
from tests.support.service_helpers import ServiceProcess

pytestmark = pytest.mark.slow

PHOTOS = pick_per_class("train", 1)[:6]
NEW = pick_per_class("train", 1, skip=3)[:2]          # unseen photos for the update
RANKED = re.compile(r"^\s+(\d+)\s+(\d\.\d{4})\s+(.+)$")


@pytest.fixture(scope="module", name="library")
def library_fixture(tmp_path_factory):
    """Six photos built with the full ``dvc repro`` (TensorFlow builds the model), committed."""
    project = make_project(tmp_path_factory.mktemp("notf") / "library", PHOTOS)
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "library"], project)
    return project


def ranked(output: str) -> List[str]:
    """The ``rank score name`` lines of ``serve.py``'s output."""
    return [" ".join(match.groups()) for match in map(RANKED.match, output.splitlines())
            if match]


def test_queries_service_and_update_run_without_tensorflow(library, without_tensorflow,
                                                           monkeypatch):
    query = library / "data/master" / PHOTOS[2][1] / Path(PHOTOS[2][0]).name
    command = ["python", "stages/serve.py", str(query), "-n", "4"]
    monkeypatch.delenv("PYTHONPATH")
    expected = ranked(run(command, library).stdout)                 # TensorFlow importable
    monkeypatch.setenv("PYTHONPATH", str(without_tensorflow))
    refused = run(["python", "-c", "import tensorflow"], library, check=False)
    assert refused.returncode != 0 and "unimportable" in refused.stderr
    assert len(expected) == 4 and expected[0].endswith(query.name)

    assert ranked(run([*command, "--output", "result.png"], library).stdout) == expected
    assert (library / "result.png").stat().st_size > 0
    warm = run(["python", "stages/serve.py", "-", "-n", "4"], library, stdin=f"{query}\n")
    assert ranked(warm.stdout) == expected
    assert ranked(run([*command, "--rev", "HEAD"], library).stdout) == expected

    service = ServiceProcess(library, library / "service.log")
    try:
        with httpx.Client(base_url=service.url, timeout=120) as client:
            answer = client.post("/search", params={"n": 4},
                                 files={"image": (query.name, query.read_bytes())}).json()
    finally:
        service.stop()
    assert [f"{hit['rank']} {hit['score']:.4f} {hit['name']}"
            for hit in answer["results"]] == expected

    for path, label in NEW:                                         # an incremental update
        shutil.copyfile(DATASET / path, library / "data/master" / label / Path(path).name)
    proc = run(["dvc", "repro"], library)
    log = proc.stdout + proc.stderr
    assert "embedded_image_vectors.npy: 2 of 8 rows to compute" in log, log
    assert "keeping the previous inference model" in log, log
    added = library / "data/master" / NEW[0][1] / Path(NEW[0][0]).name
    first = ranked(run(["python", "stages/serve.py", str(added), "-n", "1"], library).stdout)
    assert first[0].endswith(added.name) and first[0].split()[1] == "1.0000"
