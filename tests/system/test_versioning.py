"""Versioned artifacts with real git, real DVC and the repo's own default remote.

One origin project is built once (10 real photos, tracked with ``dvc add`` as the
README shows for a user's own collection), committed, tagged ``v1`` and pushed to the
default remote of ``.dvc/config`` (``dvc-storage`` beside the project). Every test
works in its own ``git clone`` of it, beside the origin so the remote resolves alike.
Serving runs in-process (``stages/serve.py``'s real ``main``) so TensorFlow loads once.
"""
import importlib.util
import re
import shutil
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from lib import cli
from tests.support.helpers import (DATASET, PIPELINE, REPO_ROOT, copy_photos, make_project,
                           pick_per_class, repro, run, set_params)

pytestmark = pytest.mark.slow

PHOTOS = pick_per_class("train", 1)                 # 10 photos, one per class
NEW_PHOTOS = pick_per_class("train", 1, skip=1)     # 10 more for a second version
QUERIES = [DATASET / path for path, _ in pick_per_class("test", 1)[:3]]


def _load_serve():
    """``stages/serve.py`` as a module (stages is not a package)."""
    spec = importlib.util.spec_from_file_location("serve_stage", REPO_ROOT / "stages/serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SERVE = _load_serve()


def serve(project: Path, query: Path, capsys, *extra: str) -> Tuple[int, List[str], str]:
    """Runs serving in-process: exit status, stdout lines (no picture line), stderr."""
    capsys.readouterr()
    status = cli.run(SERVE.main, [str(query), "-n", "5", "--params", str(project / "params.yaml"),
                                  "--output", str(project.parent / f"{project.name}.png"), *extra])
    out, err = capsys.readouterr()
    return status, [line for line in out.splitlines() if not line.startswith("picture:")], err


def ranked_names(lines: List[str]) -> List[str]:
    """The image names of serving's ranking lines."""
    return [line.split()[2] for line in lines if line[:3].strip().isdigit()]


def git_commit(project: Path, message: str) -> str:
    """Commits everything and returns the commit hash."""
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", message], project)
    return run(["git", "rev-parse", "HEAD"], project).stdout.strip()


def clone(origin: Path, name: str, pull: bool = True) -> Path:
    """``git clone`` of the origin beside it, then ``dvc pull`` (the README's workflow)."""
    target = origin.parent / name
    run(["git", "clone", "-q", str(origin), str(target)], origin.parent)
    if pull:
        run(["dvc", "pull"], target)
    return target


@pytest.fixture(scope="module", name="origin")
def origin_fixture(tmp_path_factory):
    """The origin project at ``v1``: built, committed, tagged and pushed."""
    started = time.perf_counter()
    project = make_project(tmp_path_factory.mktemp("versioning") / "origin", PHOTOS)
    shutil.copyfile(REPO_ROOT / ".dvc/config", project / ".dvc/config")   # shipped remote
    run(["dvc", "add", "data/master"], project)
    assert repro(project) == PIPELINE
    commit = git_commit(project, "v1")
    run(["git", "tag", "v1"], project)
    run(["dvc", "push"], project)
    print(f"\norigin built, committed and pushed in {time.perf_counter() - started:.1f} s")
    return {"path": project, "commit": commit}


def test_default_remote_is_a_folder_beside_the_project(origin):
    listed = run(["dvc", "remote", "list"], origin["path"]).stdout.split()
    storage = origin["path"].parent / "dvc-storage"
    assert listed == ["local", str(storage), "(default)"]
    assert (storage / "files" / "md5").is_dir()


def test_round_trip_push_clone_pull_serves_the_same(origin, capsys):
    started = time.perf_counter()
    other = clone(origin["path"], "other-machine", pull=False)
    assert not (other / "data/master").exists(), "photos must come from the remote, not git"
    assert not (other / ".dvc/cache").exists()
    run(["dvc", "pull"], other)
    pulled = time.perf_counter() - started
    assert sorted(p.name for p in (other / "data/master").rglob("*.jpg")) == \
        sorted(Path(path).name for path, _ in PHOTOS)
    status = run(["dvc", "status"], other).stdout
    assert "up to date" in status, status
    assert repro(other) == []
    for query in QUERIES:
        first = serve(origin["path"], query, capsys)
        second = serve(other, query, capsys)
        assert first[0] == second[0] == 0, first[2] + second[2]
        assert first[1] == second[1]                      # same names, scores, version line
        assert len(ranked_names(first[1])) == 5
        assert first[1][0].startswith(f"version: git {origin['commit'][:12]} (workspace)")
    print(f"\nclone + dvc pull {pulled:.1f} s, whole round trip check "
          f"{time.perf_counter() - started:.1f} s")


def test_rev_serves_an_old_version_without_checkout(origin, capsys):
    project = clone(origin["path"], "two-versions")
    new_name = f"{NEW_PHOTOS[3][1]}/{Path(NEW_PHOTOS[3][0]).name}"
    query = DATASET / NEW_PHOTOS[3][0]                 # a photo that v2 adds
    _, v1_lines, _ = serve(project, query, capsys)
    v1_md5 = v1_lines[0].rsplit(" ", 1)[1]

    copy_photos(NEW_PHOTOS, project / "data/master")
    run(["dvc", "add", "data/master"], project)
    assert repro(project) == ["etl", "feature_engineering", "modelling", "whitening", "index",
                              "evaluate"]
    v2 = git_commit(project, "v2: more photos")
    run(["dvc", "push"], project)

    # A git checkout without `dvc checkout` leaves v2 artifacts under v1's dvc.lock.
    run(["git", "checkout", "-q", "v1"], project)
    status, _, err = serve(project, query, capsys)
    assert status == cli.EXIT_USER_ERROR
    assert "not the version recorded in dvc.lock" in err and "`dvc pull`" in err
    run(["dvc", "pull"], project)
    assert serve(project, query, capsys)[1] == v1_lines
    run(["git", "checkout", "-q", "main"], project)
    run(["dvc", "checkout"], project)
    shutil.rmtree(project / ".dvc/cache")        # --rev must now fetch from the remote

    status, latest, err = serve(project, query, capsys)
    assert status == 0, err
    assert latest[0].startswith(f"version: git {v2[:12]} (workspace)")
    assert f"of {len(PHOTOS) + len(NEW_PHOTOS)} images" in latest[1]
    assert ranked_names(latest)[0] == new_name
    assert latest[0].rsplit(" ", 1)[1] != v1_md5

    status, old, err = serve(project, query, capsys, "--rev", "v1")
    assert status == 0, err
    assert old[0] == f"version: git {origin['commit'][:12]} (v1), vectors md5 {v1_md5}"
    assert f"of {len(PHOTOS)} images" in old[1]
    v1_names = {f"{label}/{Path(path).name}" for path, label in PHOTOS}
    assert set(ranked_names(old)) <= v1_names
    assert old[1:] == v1_lines[1:]           # exactly as the v1 workspace answered
    assert run(["git", "rev-parse", "HEAD"], project).stdout.strip() == v2   # no checkout


def _refusal(project: Path, capsys) -> str:
    """Serving's one-line refusal (asserting it is one)."""
    status, lines, err = serve(project, QUERIES[0], capsys)
    assert status == cli.EXIT_USER_ERROR and not lines
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_serving_refuses_artifacts_that_are_not_the_pinned_versions(origin, capsys):
    project = clone(origin["path"], "tampered")
    names = project / "data/landing/image_names.npy"
    kept = np.load(names)
    np.save(names, kept[::-1].copy())                       # edited by hand
    assert "data/landing/image_names.npy (names) is not the version recorded" in \
        _refusal(project, capsys)
    # --no-verify loads what is there, and says so.
    status, lines, _ = serve(project, QUERIES[0], capsys, "--no-verify")
    assert status == 0 and "(workspace, unverified)" in lines[0]
    np.save(names, kept)
    assert serve(project, QUERIES[0], capsys)[0] == 0

    thumbnails = project / "data/landing/resized_rgb.npy"
    thumbnails.unlink()
    assert "data/landing/resized_rgb.npy (images) is missing" in _refusal(project, capsys)
    run(["dvc", "checkout"], project)

    shutil.rmtree(project / "data/model/vectorizer_model")
    err = _refusal(project, capsys)
    assert "data/model/vectorizer_model (model) is missing" in err and "`dvc pull`" in err
    run(["dvc", "checkout"], project)

    set_params(project, {"etl.resize_mode": "crop"})         # stale: params changed
    assert "params.yaml etl modified since stage 'etl' ran: run `dvc repro`" in \
        _refusal(project, capsys)
    run(["git", "checkout", "params.yaml"], project)

    with open(project / "lib/photos/images.py", "a", encoding="utf-8") as handle:   # stale: code
        handle.write("\n")
    assert re.search(r"lib/photos modified since stage '\w+' ran", _refusal(project, capsys))
    run(["git", "checkout", "lib/photos/images.py"], project)

    # Stale photos: added to data/master, neither `dvc add` nor `dvc repro` run.
    copy_photos(NEW_PHOTOS[:2], project / "data/master")
    err = _refusal(project, capsys)
    assert "data/master modified since `dvc add`: run `dvc add data/master` and `dvc repro`" \
        in err
    # Half-built: only the first stage reran after the new photos.
    run(["dvc", "add", "data/master"], project)
    assert repro(project, "etl") == ["etl"]
    err = _refusal(project, capsys)
    assert "half-built" in err and "`dvc repro`" in err


def test_rev_errors_are_one_line(origin, capsys):
    project = clone(origin["path"], "bad-revs", pull=False)
    status, _, err = serve(project, QUERIES[0], capsys, "--rev", "no-such-tag")
    assert status == cli.EXIT_USER_ERROR and "unknown Git revision 'no-such-tag'" in err
    run(["dvc", "remote", "modify", "local", "url", str(project.parent / "empty-storage")],
        project)
    git_commit(project, "an empty remote")
    shutil.rmtree(project / ".dvc/cache", ignore_errors=True)
    status, _, err = serve(project, QUERIES[0], capsys, "--rev", "HEAD")
    assert status == cli.EXIT_USER_ERROR and "cannot fetch" in err, err
    assert len(err.strip().splitlines()) == 1


def test_rev_decodes_the_query_with_the_revisions_etl_settings(origin, capsys):
    project = clone(origin["path"], "decode-rule")
    query = QUERIES[0]
    status, v1_lines, err = serve(project, query, capsys)
    assert status == 0, err
    # The working tree's etl settings change: a pixel limit the query exceeds, and full
    # decoding. The revision's artifacts answer, so the revision's settings decode.
    set_params(project, {"etl.max_pixels": 1000, "etl.reduced_decode": False})
    status, lines, err = serve(project, query, capsys, "--rev", "v1")
    assert status == 0, err
    assert lines[1:] == v1_lines[1:]
    # The workspace itself is now stale, and says so.
    status, _, err = serve(project, query, capsys)
    assert status == cli.EXIT_USER_ERROR and "params.yaml etl modified" in err
