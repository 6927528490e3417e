"""Shared test helpers: real photos, real weights, real DVC projects in temporary folders."""
import configparser
import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
WEIGHTS = SHARED / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
DATASET = SHARED / "datasets" / "clothing-small"
# Set (CI sets it in .ci/run): a test that needs ../shared fails instead of skipping.
REQUIRE_SHARED_ENV = "IMAGE_SEARCH_REQUIRE_SHARED"
_SHARED_WHAT = {WEIGHTS: "the real ResNet50 no-top weights", DATASET: "the real photos"}
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "stages", "lib")
QUERY_SET = REPO_ROOT / "data" / "queries"     # the demo labelled query set
RAN = re.compile(r"Running stage '([^']+)'")
# Every stage, in the order a first `dvc repro` runs them (the weights check first).
PIPELINE = ["weights", "etl", "feature_engineering", "modelling", "whitening", "index",
            "evaluate"]


def missing_shared(*paths: Path) -> Optional[str]:
    """One line naming what of ``../shared`` is missing among ``paths``, or None."""
    missing = [f"{_SHARED_WHAT.get(path, path.name)} ({path})" for path in paths
               if not path.exists()]
    if not missing:
        return None
    return (f"needs {' and '.join(missing)}, not found: put the shared models and datasets "
            f"in {SHARED} beside the repository")


def require_shared(*paths: Path) -> None:
    """Skips the calling test (or test module) when part of ``../shared`` is missing.

    With ``$IMAGE_SEARCH_REQUIRE_SHARED`` set (CI), it fails instead: there every test
    must run.
    """
    reason = missing_shared(*(paths or (WEIGHTS, DATASET)))
    if reason is None:
        return
    if os.environ.get(REQUIRE_SHARED_ENV):
        pytest.fail(f"{reason} ({REQUIRE_SHARED_ENV} is set, so tests may not skip)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def tool_env() -> Dict[str, str]:
    """Environment whose PATH starts with this interpreter's bin folder (python, dvc)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("GIT_AUTHOR_NAME", "test")
    env.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "test")
    env.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: Sequence[str], cwd: Path, check: bool = True,
        stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """Runs a command with the test environment and returns its completed process."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=tool_env(), capture_output=True, text=True,
                          input=stdin, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def dataset_rows(split: str) -> List[Tuple[str, str]]:
    """(relative path, label) of the dataset's images in one split, sorted."""
    require_shared(DATASET)
    with open(DATASET / "labels.csv", encoding="utf-8") as handle:
        return sorted((row["path"], row["label"]) for row in csv.DictReader(handle)
                      if row["split"] == split)


def pick_per_class(split: str, per_class: int, skip: int = 0) -> List[Tuple[str, str]]:
    """The first ``per_class`` images of each class in a split (after ``skip``)."""
    by_label: Dict[str, List[str]] = {}
    for path, label in dataset_rows(split):
        by_label.setdefault(label, []).append(path)
    return [(path, label) for label in sorted(by_label)
            for path in by_label[label][skip:skip + per_class]]


def copy_photos(rows: Iterable[Tuple[str, str]], dest: Path) -> None:
    """Copies dataset photos into ``dest/<label>/<file>``."""
    for path, label in rows:
        target = dest / label / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATASET / path, target)


def set_params(project: Path, updates: Dict[str, object]) -> None:
    """Sets dotted keys (``section.key``) in a project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for dotted, value in updates.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def write_query_set(rows: Iterable[Tuple[str, str]], dest: Path) -> None:
    """Copies dataset photos into ``dest/<label>/<file>`` and writes ``dest/labels.csv``."""
    rows = list(rows)
    copy_photos(rows, dest)
    with open(dest / "labels.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((f"{label}/{Path(path).name}", label) for path, label in rows)


def repo_cache_type() -> str:
    """The cache link types this repository's ``.dvc/config`` sets (DVC's default if none)."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / ".dvc" / "config", encoding="utf-8")
    return config.get("cache", "type", fallback="reflink,copy").strip('"')


def make_project(root: Path, photos: Iterable[Tuple[str, str]], git: bool = True,
                 queries: Optional[Iterable[Tuple[str, str]]] = None) -> Path:
    """A new git + DVC project with this repo's code, the real weights and given photos.

    Its DVC cache links outputs as this repository's ``.dvc/config`` says.

    The labelled query set of the evaluate stage is the repo's demo set
    (``data/queries``), or the given dataset photos when ``queries`` is set.
    """
    require_shared(WEIGHTS)
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(source, root / name)
    copy_photos(photos, root / "data" / "master")
    if queries is None:
        shutil.copytree(QUERY_SET, root / "data" / "queries")
    else:
        write_query_set(queries, root / "data" / "queries")
    set_params(root, {"modelling.weights": str(WEIGHTS)})
    if git:
        run(["git", "init", "-q", "-b", "main"], root)
        run(["dvc", "init", "-q"], root)
    else:
        run(["dvc", "init", "-q", "--no-scm"], root)
    run(["dvc", "config", "cache.type", repo_cache_type()], root)
    return root


def repro(project: Path, *args: str) -> List[str]:
    """Runs ``dvc repro`` and returns the names of the stages that actually ran."""
    proc = run(["dvc", "repro", *args], project)
    return RAN.findall(proc.stdout + proc.stderr)


def flip_last_byte(path: Path) -> int:
    """Flips one bit of a file's last byte in place (the same inode, as bit rot or a
    write through a link would); returns the byte it held, to put back."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)[0]
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last ^ 1]))
    return last
