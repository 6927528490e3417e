"""A living photo library with real DVC: own photos, O(k) updates, links into the cache.

One library is built once: a git + DVC project whose photos are flat, unlabelled files
(a user's own photos, not the demo layout), built with the full ``dvc repro``,
committed and pushed to a remote folder. Each test that changes it works in its own
``git clone`` + ``dvc pull`` of it, so every update below also proves that reuse works
on another machine: what it needs travels with the DVC-tracked outputs.
"""
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import yaml

from lib.arrays import read_array
from lib.artifacts import load_npy
from lib.config import load_config
from lib.embedding.preprocessing import run_feature_engineering
from lib.embedding.vectorizer import run_embedding, Vectorizer
from lib.errors import PinningError
from lib.incremental.rows import content_key, RowIndex
from lib.photos.etl import run_etl
from lib.pinning.verify import verify_workspace
from lib.retrieval.similarity import get_cosine_similarity
from tests.support.helpers import DATASET, REPO_ROOT, make_project, pick_per_class, run, set_params

pytestmark = pytest.mark.slow

PHOTOS = [path for path, _ in pick_per_class("train", 1)[:6]]        # 6 real photos
NEW = [path for path, _ in pick_per_class("train", 1, skip=2)[:3]]   # 3 more, unseen
STAGES = ("ETL", "feature_engineered.npy", "embedded_image_vectors.npy")


def planned(output: str) -> Dict[str, Tuple[int, int]]:
    """``{stage: (rows computed, rows in all)}`` from the stages' plan log lines."""
    found = re.findall(r"(\S+): (\d+) of (\d+) rows to compute", output)
    return {what: (int(done), int(total)) for what, done, total in found}


def repro_log(project: Path, *targets: str) -> str:
    """Runs ``dvc repro`` (exit 0 required) and returns everything it printed."""
    proc = run(["dvc", "repro", *targets], project)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module", name="library")
def library_fixture(tmp_path_factory):
    """Flat own photos, built with ``dvc repro``, committed and pushed: (project, log)."""
    root = tmp_path_factory.mktemp("library")
    project = make_project(root / "library", [])
    (project / "data/master").mkdir(parents=True)
    for number, path in enumerate(PHOTOS):
        shutil.copyfile(DATASET / path, project / "data/master" / f"photo-{number:02d}.jpg")
    log = repro_log(project)
    run(["dvc", "remote", "add", "-d", "storage", str(root / "storage")], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "library"], project)
    run(["dvc", "push", "-q"], project)
    return project, log


def clone(library: Path, target: Path) -> Path:
    """Another machine: ``git clone`` + ``dvc pull`` of the library."""
    run(["git", "clone", "-q", str(library), str(target)], target.parent)
    run(["dvc", "pull", "-q"], target)
    return target


def recorded(project: Path) -> Dict[str, str]:
    """``{path: md5}`` of every cached file output ``dvc.lock`` records (not metrics)."""
    stages = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    return {out["path"]: out["md5"] for stage in stages.values()
            for out in stage.get("outs", [])
            if out["path"].startswith("data/") and not out["md5"].endswith(".dir")}


def cache_object(project: Path, md5: str) -> Path:
    """Where DVC 3 keeps a file in the project's cache."""
    return project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


def test_own_unlabelled_photos_build_evaluate_as_not_applicable_and_serve(library):
    project, log = library
    metrics = json.loads((project / "metrics/evaluation.json").read_text(encoding="utf-8"))
    assert metrics["applicable"] is False and metrics["queries_evaluated"] == 0
    assert "is a folder of the collection (folders: none)" in metrics["reason"]
    assert not {"mAP", "P@1", "P@5", "R@10"} & set(metrics)          # no made-up numbers
    assert len(re.findall(r"WARNING __main__: the labelled query set .* does not apply",
                          log)) == 1
    assert (project / "metrics/pr_curve.csv").read_text() == "recall,precision\n"
    query = project / "data/master/photo-03.jpg"
    proc = run(["python", "stages/serve.py", str(query), "-n", "3"], project)
    ranked = [line.split() for line in proc.stdout.splitlines() if line[:3].strip().isdigit()]
    assert ranked[0][2] == "photo-03.jpg" and float(ranked[0][1]) > 0.999
    assert len(ranked) == 3


def test_outputs_are_read_only_links_into_the_cache_and_tampering_is_caught(library,
                                                                            tmp_path):
    project = clone(library[0], tmp_path / "other")
    hashes = recorded(project)
    for path in ("data/landing/resized_rgb.npy", "data/feature_store/feature_engineered.npy",
                 "data/model/embedded_image_vectors.npy"):
        stat, cached = (project / path).stat(), cache_object(project, hashes[path]).stat()
        assert (stat.st_ino, stat.st_dev) == (cached.st_ino, cached.st_dev), path
        assert not stat.st_mode & 0o222, f"{path} is writable"
    verify_workspace(project, load_config(project / "params.yaml"))
    vectors = project / "data/model/embedded_image_vectors.npy"
    os.chmod(vectors, 0o644)                  # a user who edits the file in place anyway
    with open(vectors, "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x00\x00\x80\x7f")
    with pytest.raises(PinningError, match="is not the version recorded in dvc.lock"):
        verify_workspace(project, load_config(project / "params.yaml"))


def from_scratch(project: Path, folder: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Names, landing images and vectors of a full build of the project's photos."""
    config = load_config(project / "params.yaml")
    run_etl(project / "data/master", folder / "images.npy", folder / "names.npy",
            folder / "report.json", config.etl)
    run_feature_engineering(folder / "images.npy", folder / "features.npy")
    vectorizer = Vectorizer.load(project / "data/model/vectorizer_model",
                                 runtime=config.modelling.runtime)
    run_embedding(folder / "features.npy", folder / "vectors.npy", vectorizer)
    return (load_npy(folder / "names.npy"), load_npy(folder / "images.npy"),
            load_npy(folder / "vectors.npy"))


def test_k_changed_photos_cost_k_rows_and_equal_a_full_build(library, tmp_path):
    project = clone(library[0], tmp_path / "other")
    master = project / "data/master"
    before = recorded(project)
    (master / "photo-00.jpg").unlink()                                        # removed
    (master / "photo-01.jpg").rename(master / "renamed.jpg")                   # renamed
    (master / "photo-02.jpg").unlink()                                        # replaced
    shutil.copyfile(DATASET / NEW[0], master / "photo-02.jpg")
    (master / "sub").mkdir()
    for number, path in enumerate(NEW[1:]):                                   # added
        shutil.copyfile(DATASET / path, master / "sub" / f"new-{number}.jpg")
    log = repro_log(project, "modelling")
    assert planned(log) == {stage: (3, 7) for stage in STAGES}, log
    assert "keeping the previous saved model" in log
    assert (project / "data/model/vectorizer_model/model.keras").stat().st_nlink == 2  # linked
    for path, md5 in before.items():           # the previous versions are intact in the cache
        data = cache_object(project, md5).read_bytes()
        assert hashlib.md5(data).hexdigest() == md5, f"{path}'s cached version was changed"

    names, images, vectors = from_scratch(project, tmp_path / "scratch")
    assert load_npy(project / "data/landing/image_names.npy").tolist() == names.tolist() == [
        "photo-02.jpg", "photo-03.jpg", "photo-04.jpg", "photo-05.jpg", "renamed.jpg",
        "sub/new-0.jpg", "sub/new-1.jpg"]
    assert np.array_equal(load_npy(project / "data/landing/resized_rgb.npy"), images)
    served = load_npy(project / "data/model/embedded_image_vectors.npy")
    cosine = np.diag(get_cosine_similarity(served, vectors))                  # (N,)
    assert cosine.min() >= 0.99999, cosine
    keys = RowIndex.load(project / "data/model/rows.npz").keys
    assert keys.tolist() == [content_key(master / name) for name in names.tolist()]


def test_changed_settings_code_or_weights_recompute_in_full(library, tmp_path):
    project = clone(library[0], tmp_path / "other")
    set_params(project, {"modelling.pooling": "max"})          # a modelling setting
    log = repro_log(project, "modelling")
    assert planned(log) == {"embedded_image_vectors.npy": (6, 6)}, log
    assert "keeping the previous saved model" not in log

    set_params(project, {"etl.interpolation": "linear"})       # an ETL setting
    assert planned(repro_log(project, "etl")) == {"ETL": (6, 6)}
    code = project / "lib/photos/images.py"                           # the ETL's code
    code.write_text(code.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert planned(repro_log(project, "etl")) == {"ETL": (6, 6)}
    assert planned(repro_log(project, "etl")) == {}            # up to date: nothing runs


def test_other_weights_change_the_vectors_fingerprint(library, tmp_path):
    """The modelling fingerprint holds the weights' content, not their path.

    The plan is made in-process by the stage's own function, on a clone's real
    ``dvc.lock`` and cache; it hashes this checkout's code, which the project copied.
    """
    # pylint: disable=import-outside-toplevel
    import importlib.util
    spec = importlib.util.spec_from_file_location("modelling_stage",
                                                  REPO_ROOT / "stages/modelling.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    project = clone(library[0], tmp_path / "other")
    weights = Path(load_config(project / "params.yaml").modelling.weights)
    same, other = tmp_path / "same-weights.h5", tmp_path / "other-weights.h5"
    shutil.copyfile(weights, same)                              # moved, not changed
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF                                            # one byte differs
    other.write_bytes(bytes(data))
    plans: List[int] = []
    for path in (weights, same, other):
        set_params(project, {"modelling.weights": str(path)})
        args = stage.parse_args([str(project / p) for p in (
            "data/feature_store/feature_engineered.npy", "data/model/embedded_image_vectors.npy",
            "data/model/vectorizer_model", "data/model/inference_model")] + [
            "--upstream-rows", str(project / "data/feature_store/rows.npz"),
            "--rows", str(project / "data/model/rows.npz"),
            "--params", str(project / "params.yaml")])
        config = load_config(project / "params.yaml")
        _, plan = stage.plan_embedding(args, config, stage.ResNet50Helper.from_config(
            config.modelling, config.etl))
        plans.append(len(plan.compute))
    assert plans == [0, 0, len(PHOTOS)]


ARRAYS = ("data/landing/resized_rgb.npy", "data/feature_store/feature_engineered.npy",
          "data/model/embedded_image_vectors.npy")


def shard_md5s(project: Path, path: str) -> List[str]:
    """The md5 of each shard of a sharded output, from its listing in DVC's cache."""
    stages = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    md5 = next(out["md5"] for stage in stages.values() for out in stage.get("outs", [])
               if out["path"] == path)
    assert md5.endswith(".dir"), f"{path} is not a folder of shards"
    listing = json.loads(cache_object(project, md5.removesuffix(".dir") + ".dir").read_text())
    return [item["md5"] for item in sorted(listing, key=lambda item: item["relpath"])]


def test_sharded_arrays_store_only_the_shards_an_update_changed(library, tmp_path):
    project = clone(library[0], tmp_path / "other")
    single = {path: load_npy(project / path) for path in ARRAYS}
    set_params(project, {"storage.shard_rows": 1})           # a shard per photo
    log = repro_log(project)
    assert planned(log) == {stage: (0, 6) for stage in STAGES}, log   # rows kept, relaid
    before = {}
    for path in ARRAYS:
        assert (project / path).is_dir()
        assert np.array_equal(read_array(project / path), single[path]), path
        before[path] = shard_md5s(project, path)
    for number, path in enumerate(NEW[:2]):
        shutil.copyfile(DATASET / path, project / "data/master" / f"photo-{number:02d}b.jpg")
    log = repro_log(project)
    assert planned(log) == {stage: (2, 8) for stage in STAGES}, log
    linked = re.findall(r"(\S+): (\d+) of (\d+) shards unchanged, linked", log)
    assert sorted(name for name, _, _ in linked) == sorted(Path(path).name for path in ARRAYS)
    assert [(int(count), int(total)) for _, count, total in linked] == [(6, 8)] * 3, linked
    for path in ARRAYS:
        stored = set(shard_md5s(project, path)) - set(before[path])
        assert len(stored) == 2, f"{path}: {len(stored)} new shards for 2 new photos"
    names, images, vectors = from_scratch(project, tmp_path / "scratch")
    assert load_npy(project / "data/landing/image_names.npy").tolist() == names.tolist()
    assert np.array_equal(read_array(project / ARRAYS[0]), images)
    cosine = np.diag(get_cosine_similarity(read_array(project / ARRAYS[2]), vectors))
    assert cosine.min() >= 0.99999, cosine
    verify_workspace(project, load_config(project / "params.yaml"))
    proc = run(["python", "stages/serve.py", str(project / "data/master/photo-01b.jpg"),
                "-n", "2"], project)
    ranked = [line.split() for line in proc.stdout.splitlines() if line[:3].strip().isdigit()]
    assert ranked[0][2] == "photo-01b.jpg" and (project / "result.png").is_file()
