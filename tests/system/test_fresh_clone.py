"""A fresh clone agrees with itself: ``dvc status`` says what the README says it will.

The README (Quick start): on a fresh clone, before ``dvc repro`` or ``dvc pull``,
``dvc status`` lists only the artifacts that are not there yet (``not in cache``
outputs, and ``deleted`` inputs that an earlier stage outputs); no code, params or
photos are ``modified``, so ``dvc.lock`` records exactly what the clone holds.
"""
import json
import shutil
import subprocess
import sys
import zipfile

import yaml

from lib.embedding.vectorizer import MODEL_FILE
from lib.embedding.weights import FILE_NAME
from tests.support.helpers import RAN, REPO_ROOT, WEIGHTS, run, tool_env

# The modelling stage's build and save, in a process of its own.
BUILD = ("import sys; from lib.embedding import ResNet50Helper, Vectorizer; "
         "Vectorizer(ResNet50Helper(weights=sys.argv[1]).build()).save(sys.argv[2])")


def test_fresh_clone_status_lists_only_artifacts_to_build_or_pull(tmp_path):
    clone = tmp_path / "image-search"
    run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], tmp_path)
    lock = yaml.safe_load((clone / "dvc.lock").read_text(encoding="utf-8"))
    produced = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    assert set(lock["stages"]) == set(yaml.safe_load(
        (clone / "dvc.yaml").read_text(encoding="utf-8"))["stages"]), "dvc.lock lacks a stage"
    status = json.loads(run(["dvc", "status", "--json"], clone).stdout)
    unexpected = []
    for stage, changes in status.items():
        for change in changes:
            entries = change.items() if isinstance(change, dict) else [(change, {})]
            for kind, paths in entries:
                for path, state in (paths or {"": "(no detail)"}).items():
                    allowed = ((kind, state) == ("changed outs", "not in cache") or
                               (kind, state) == ("changed deps", "deleted")) and path in produced
                    if not allowed:
                        unexpected.append(f"{stage}: {kind}: {path}: {state}")
    assert not unexpected, "a fresh clone disagrees with its dvc.lock:\n" + "\n".join(unexpected)
    assert status, "a fresh clone has no artifacts: dvc status must list them as not in cache"


def test_a_rebuilt_model_has_the_same_bytes(query_project, tmp_path):
    """Building the model again (as `dvc repro` on a fresh clone does) records the same hash.

    Keras' save-time stamps and memory-address ids are dropped from the archive.
    """
    again = tmp_path / "vectorizer_model"
    proc = subprocess.run([sys.executable, "-c", BUILD, str(WEIGHTS), str(again)], cwd=REPO_ROOT,
                          env=tool_env(), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    built = query_project / "data/model/vectorizer_model" / MODEL_FILE   # by `dvc repro`
    with zipfile.ZipFile(again / MODEL_FILE) as archive:
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
        assert {entry.date_time for entry in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert (again / MODEL_FILE).read_bytes() == built.read_bytes()


def test_quick_start_offline_without_weights_stops_first_in_one_line_and_the_fix_works(
        tmp_path, monkeypatch):
    """The README's quick start on a fresh clone, offline, with no weights anywhere."""
    clone = tmp_path / "image-search"
    run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], tmp_path)
    keras_home = tmp_path / "keras-home"                # an empty Keras cache
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # no internet: refused at once
    proc = run(["dvc", "repro"], clone, check=False)
    assert proc.returncode != 0
    assert RAN.findall(proc.stdout + proc.stderr) == ["weights"]
    errors = [line for line in proc.stderr.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith("weights.py: error: modelling.weights:")
    cache_file = keras_home / "models" / FILE_NAME
    assert f"copied to {cache_file}" in errors[0]       # the fix names this clone's own path
    assert "Traceback" not in proc.stderr and "shared" not in errors[0]
    assert not list((clone / "data/landing").glob("*.npy")), "the ETL ran before the check"
    cache_file.parent.mkdir(parents=True, exist_ok=True)  # the fix the line names
    shutil.copyfile(WEIGHTS, cache_file)
    run(["dvc", "repro"], clone)
    assert (clone / "data/model/embedded_image_vectors.npy").is_file()
