"""``serve.py --compare REV``: one query at a committed revision and in the workspace.

A real project is built at ``v1`` (six photos), then grows by three photos in a second
commit; a query that is one of the new photos comes first in the workspace and is
absent at ``v1``, so the comparison must name it as entered and what it pushed out as
left, and draw two rows. TensorFlow is made unimportable for the comparison: the
inference model's IR answers both versions. Bad input (a revision that is unknown or
holds no build, a missing or unreadable photo, options that do not go with
``--compare``) is checked on the tiny project, without a model: one line, non-zero.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import pytest

from tests.support import tiny_project as tiny
from tests.support.helpers import (
    copy_photos, make_project, pick_per_class, REPO_ROOT, repro, run, tool_env)

PHOTOS = pick_per_class("train", 1)[:6]
NEW = pick_per_class("train", 1, skip=2)[:3]          # the second version adds these
QUERIES = pick_per_class("test", 1)[:2]               # a small labelled set: quick evaluate
RANKED = re.compile(r"^\s+(\d+)\s+(\d\.\d{4})\s+(.+)$")
CHANGE = re.compile(r"^  (entered|left|moved)\s+(#\d+(?: -> #\d+)?)\s+(.+)$")
N = 3


def name_of(row) -> str:
    """The image name the ETL gives a copied dataset photo."""
    return f"{row[1]}/{Path(row[0]).name}"


@pytest.fixture(scope="module", name="library")
def library_fixture(tmp_path_factory):
    """``v1`` (six photos) and the commit after it (three more), both built with
    ``dvc repro`` and committed; the workspace is the second."""
    project = make_project(tmp_path_factory.mktemp("compare") / "library", PHOTOS,
                           queries=QUERIES)
    repro(project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "v1"], project)
    run(["git", "tag", "v1"], project)
    copy_photos(NEW, project / "data" / "master")
    repro(project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "v2: three more photos"], project)
    return project


def sections(stdout: str) -> Dict[str, List[str]]:
    """``--compare``'s output parsed: the names ranked at REV (``old``) and in the
    workspace (``new``), and the change lines as ``kind rank name``."""
    found: Dict[str, List[str]] = {"old": [], "new": [], "changes": []}
    block = None
    for line in stdout.splitlines():
        if " most similar of " in line:
            block = "new" if line.startswith("the workspace: ") else "old"
        elif line.startswith("from "):
            block = "changes"
        elif block in ("old", "new") and RANKED.match(line):
            found[block].append(RANKED.match(line).group(3))
        elif block == "changes" and CHANGE.match(line):
            found["changes"].append(" ".join(CHANGE.match(line).groups()))
    return found


@pytest.mark.usefixtures("without_tensorflow")
def test_compare_names_what_entered_left_and_moved_and_draws_two_rows(library):
    query = library / "data" / "master" / name_of(NEW[0])
    refused = run(["python", "-c", "import tensorflow"], library, check=False)
    assert refused.returncode != 0 and "unimportable" in refused.stderr
    proc = run(["python", "stages/serve.py", "--compare", "v1", str(query), "-n", str(N),
                "--output", "compare.png"], library)
    lines = proc.stdout.splitlines()
    v1 = run(["git", "rev-parse", "v1"], library).stdout.strip()
    head = run(["git", "rev-parse", "HEAD"], library).stdout.strip()
    assert lines[0].startswith(f"version: git {v1[:12]} (v1), vectors md5 ")
    assert lines[1].startswith(f"version: git {head[:12]} (workspace), vectors md5 ")
    assert f"v1: {N} most similar of {len(PHOTOS)} images to {query}:" in lines
    assert f"the workspace: {N} most similar of {len(PHOTOS) + len(NEW)} images to " \
           f"{query}:" in lines
    found = sections(proc.stdout)
    old, new = found["old"], found["new"]
    assert len(old) == len(new) == N
    assert set(old) <= {name_of(row) for row in PHOTOS}
    assert new[0] == name_of(NEW[0])                         # the photo itself, first
    entered = [name for name in new if name not in old]
    left = [name for name in old if name not in new]
    assert left, "the new photo takes a place: a result of v1 must leave"
    expected = [f"entered #{new.index(name) + 1} {name}" for name in entered] + \
        [f"left #{old.index(name) + 1} {name}" for name in left] + \
        [f"moved #{old.index(name) + 1} -> #{new.index(name) + 1} {name}"
         for name in new if name in old and old.index(name) != new.index(name)]
    assert found["changes"] == expected
    assert f"from v1 to the workspace: {len(entered)} entered, {len(left)} left, " in \
        proc.stdout
    assert proc.stdout.rstrip().endswith("picture: compare.png")

    single = run(["python", "stages/serve.py", str(query), "-n", str(N), "--output",
                  "one.png"], library)
    assert [RANKED.match(line).group(3) for line in single.stdout.splitlines()
            if RANKED.match(line)] == new                    # the workspace's ranking
    picture = cv2.imread(str(library / "compare.png"))
    row = cv2.imread(str(library / "one.png"))
    assert picture is not None and row is not None
    assert picture.shape[0] == 2 * row.shape[0]              # two rows, one per version
    assert picture.shape[1] == row.shape[1]                  # each: the query and N results
    assert (picture[row.shape[0]:] != 255).any()             # the second row is drawn


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory):
    """The tiny project (no model), built once for this module."""
    return tiny.build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(name="project")
def project_fixture(template, tmp_path):
    """A private copy of the tiny project: ``v1`` in git, a photo to query, and the tag
    ``nobuild``, a commit whose tree lacks ``dvc.lock``."""
    project = tiny.copy(template, tmp_path)
    tree = "".join(line + "\n" for line in run(["git", "ls-tree", "HEAD"], project)
                   .stdout.splitlines() if not line.endswith("\tdvc.lock"))
    tree_id = run(["git", "mktree"], project, stdin=tree).stdout.strip()
    commit = run(["git", "commit-tree", tree_id, "-p", "HEAD", "-m", "no build"],
                 project).stdout.strip()
    run(["git", "tag", "nobuild", commit], project)
    shutil.copyfile(sorted((REPO_ROOT / "data" / "master").rglob("*.jpg"))[0],
                    project / "query.jpg")
    return project


def serve(project: Path, *args: str) -> subprocess.CompletedProcess:
    """``stages/serve.py`` run in the project."""
    return subprocess.run([sys.executable, str(tiny.SERVE), *args], cwd=project,
                          env=tool_env(),
                          capture_output=True, text=True, timeout=300, check=False)


def error_line(proc: subprocess.CompletedProcess, status: int = 1) -> str:
    """The single ``serve.py: error: ...`` line of a refused run: nothing else but the
    progress lines of a revision's fetch."""
    assert proc.returncode == status, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith("INFO lib.pinning.revisions: fetched ")]
    assert len(lines) == 1 and lines[0].startswith("serve.py: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("rev, words", [
    ("no-such-tag", ["unknown Git revision 'no-such-tag'", "give a tag, branch or commit"]),
    ("nobuild", ["is not recorded in dvc.lock at revision 'nobuild'",
                 "holds no build to serve", "git log -- dvc.lock"]),
])
def test_a_revision_that_cannot_be_compared_is_one_line(project, rev, words):
    line = error_line(serve(project, "--compare", rev, "query.jpg"))
    for word in words:
        assert word in line, line


def test_a_missing_or_unreadable_photo_is_one_line(project):
    assert "no such file" in error_line(serve(project, "--compare", "v1", "missing.jpg"))
    (project / "notes.jpg").write_text("not a photo\n", encoding="utf-8")
    assert "notes.jpg" in error_line(serve(project, "--compare", "v1", "notes.jpg"))


@pytest.mark.parametrize("args, words", [
    (["--compare", "v1", "-"], "--compare does not go with - (stdin)"),
    (["--compare", "v1", "--rev", "v1", "query.jpg"], "--compare does not go with --rev"),
    (["--compare", "v1", "--offset", "5", "query.jpg"], "--compare does not go with --offset"),
    (["--compare", "v1", "--http"], "--compare does not go with --http"),
    (["--compare", " ", "query.jpg"], "--compare needs a git revision"),
    (["--compare", "v1"], "a query image"),
])
def test_options_that_do_not_go_with_compare_are_a_usage_error(project, args, words):
    assert words in error_line(serve(project, *args), status=2)
