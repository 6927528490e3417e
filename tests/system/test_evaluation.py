"""The evaluate stage end to end: ``dvc repro`` on 20 real photos with the real weights,
the demo query set, and a ranking recomputed independently from the artifacts.

Serving/pipeline parity: with whitening and query expansion on, the metrics the
evaluate stage writes and the matches ``stages/serve.py`` prints both equal a
reference computed here from the saved vectors, the saved whitening arrays and the
queries embedded by the pipeline's own batch functions.
"""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lib.config import EtlConfig
from lib.embedding.preprocessing import preprocess
from lib.embedding.vectorizer import Vectorizer
from lib.evaluation.metrics import evaluate
from lib.evaluation.query_set import not_applicable, not_applicable_metrics
from lib.photos.images import load_image
from tests.support.helpers import (PIPELINE, QUERY_SET, make_project, pick_per_class, repro, run,
                           set_params)

pytestmark = pytest.mark.slow

KEYS = ("mAP", "P@1", "P@5", "P@10", "R@10")


@pytest.fixture(scope="module", name="project")
def project_fixture(tmp_path_factory):
    """A project of 20 photos (2 per class) built once with ``dvc repro``."""
    project = make_project(tmp_path_factory.mktemp("evaluate") / "project",
                           pick_per_class("train", 2))
    assert repro(project) == PIPELINE
    return project


@pytest.fixture(scope="module", name="queries")
def queries_fixture(project):
    """(labels, raw embeddings) of the demo queries, through the pipeline's batch path."""
    with open(QUERY_SET / "labels.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    images = np.stack([load_image(QUERY_SET / row["path"], EtlConfig()) for row in rows])
    vectorizer = Vectorizer.load(project / "data/model/vectorizer_model")
    return np.array([row["label"] for row in rows]), vectorizer.transform(preprocess(images))


def unit(rows):
    """Rows scaled to unit length."""
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def reference_scores(project, query_vectors, expansion):
    """Cosine scores after the saved whitening (if on) and average query expansion."""
    database = np.load(project / "data/model/embedded_image_vectors.npy")
    with np.load(project / "data/model/whitening.npz") as saved:
        if int(saved["dim"]):
            database = (unit(database) - saved["mean"]) @ saved["projection"]
            query_vectors = (unit(query_vectors) - saved["mean"]) @ saved["projection"]
    database, query_vectors = unit(database), unit(query_vectors)
    scores = query_vectors @ database.T                                     # (Q, N)
    if expansion:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :expansion]     # (Q, k)
        query_vectors = unit(query_vectors + database[top].sum(axis=1))
        scores = query_vectors @ database.T
    return scores


def relevance(project, labels):
    """(Q, N): a database image is relevant when its folder is the query's label."""
    names = np.load(project / "data/landing/image_names.npy")
    folders = np.array([name.split("/")[0] for name in names])
    return labels[:, np.newaxis] == folders[np.newaxis, :]


def written_metrics(project):
    """The metrics JSON the evaluate stage wrote."""
    return json.loads((project / "metrics/evaluation.json").read_text(encoding="utf-8"))


def test_default_metrics_match_the_reference(project, queries):
    labels, vectors = queries
    expected, curve = evaluate(reference_scores(project, vectors, 0), relevance(project, labels))
    written = written_metrics(project)
    for key in KEYS:
        assert written[key] == pytest.approx(expected[key], abs=1e-5), key
    assert written["queries"] == written["queries_evaluated"] == 20
    assert "seconds_per_query" not in written       # timings stay out of the tracked file
    lines = (project / "metrics/pr_curve.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "recall,precision" and len(lines) == 12
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines[1:]], curve[:, 1],
                               atol=1e-5)
    shown = run(["dvc", "metrics", "show"], project).stdout
    assert "metrics/evaluation.json" in shown and "mAP" in shown
    assert "metrics/reproduction.json" in shown and "top10_checksum" in shown


def test_the_reproduction_record_holds_each_querys_top_10(project, queries):
    _, vectors = queries
    record = json.loads((project / "metrics/reproduction.json").read_text(encoding="utf-8"))
    with open(QUERY_SET / "labels.csv", encoding="utf-8") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    names = np.load(project / "data/landing/image_names.npy")
    scores = reference_scores(project, vectors, 0)                         # (Q, N)
    assert list(record["top10"]) == paths and record["queries"] == 20
    for path, row in zip(paths, scores):
        best = np.argsort(-row, kind="stable")[:10]
        assert [name for name, _ in record["top10"][path]] == list(names[best]), path
        np.testing.assert_allclose([score for _, score in record["top10"][path]], row[best],
                                   atol=2e-4)


def test_whitening_and_expansion_parity_of_serving_and_evaluation(project, queries, tmp_path):
    labels, vectors = queries
    default = written_metrics(project)
    set_params(project, {"whitening.dim": 8, "serve.query_expansion": 3})
    try:
        # Neither option re-embeds the collection.
        assert repro(project) == ["whitening", "index", "evaluate"]
        scores = reference_scores(project, vectors, 3)
        expected, _ = evaluate(scores, relevance(project, labels))
        written = written_metrics(project)
        for key in KEYS:
            assert written[key] == pytest.approx(expected[key], abs=1e-5), key

        row = 7
        query = QUERY_SET / sorted(p.relative_to(QUERY_SET).as_posix()
                                   for p in QUERY_SET.rglob("*.jpg"))[row]
        proc = run(["python", "stages/serve.py", str(query), "-n", "4",
                    "--output", str(tmp_path / "out.png")], project)
        printed = [line.split() for line in proc.stdout.splitlines() if line[:3].strip().isdigit()]
        names = np.load(project / "data/landing/image_names.npy")
        best = np.argsort(-scores[row], kind="stable")[:4]
        assert [parts[2] for parts in printed] == [str(names[i]) for i in best]
        np.testing.assert_allclose([float(parts[1]) for parts in printed], scores[row, best],
                                   atol=2e-4)

        # A whitening artifact that no longer matches params.yaml is refused.
        set_params(project, {"whitening.dim": 4})
        stale = run(["python", "stages/serve.py", str(query)], project, check=False)
        assert stale.returncode == 1
        assert stale.stderr.strip().count("\n") == 0 and "dvc repro" in stale.stderr
    finally:
        set_params(project, {"whitening.dim": 0, "serve.query_expansion": 0})
    repro(project)        # back to the design (DVC may restore it from its run cache)
    assert {key: written_metrics(project)[key] for key in KEYS} == {
        key: default[key] for key in KEYS}


def test_a_bad_query_set_is_one_line_error(project, tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,class\na.jpg,shoes\n", encoding="utf-8")
    proc = run(["python", "stages/evaluate.py", str(bad), str(tmp_path / "m.json"),
                str(tmp_path / "c.csv"), str(tmp_path / "c.png"), str(tmp_path / "r.json")],
               project, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "path,label" in proc.stderr
    bad.write_text("path,label\nmissing.jpg,shoes\n", encoding="utf-8")
    proc = run(["python", "stages/evaluate.py", str(bad), str(tmp_path / "m.json"),
                str(tmp_path / "c.csv"), str(tmp_path / "c.png"), str(tmp_path / "r.json")],
               project, check=False)
    assert proc.returncode == 1 and "missing.jpg: no such file" in proc.stderr
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "c.png").exists()
    assert written_metrics(project)["queries"] == 20


def test_a_query_set_applies_only_when_a_label_is_a_collection_folder():
    queries = [(Path("q/1.jpg"), "shoes"), (Path("q/2.jpg"), "hat")]
    assert not_applicable(np.array(["shoes/a.jpg", "x.jpg"]), queries) == ""
    flat = not_applicable(np.array(["a.jpg", "b.jpg"]), queries)
    assert flat == "no query label (hat, shoes) is a folder of the collection (folders: none)"
    assert "(folders: 2019, 2020)" in not_applicable(np.array(["2019/a.jpg", "2020/b.jpg"]),
                                                     queries)
    metrics = not_applicable_metrics(queries, flat)
    assert metrics == {"applicable": False, "reason": flat, "queries": 2,
                       "queries_evaluated": 0, "queries_without_relevant": 2}


def test_against_a_revision_gates_on_a_map_drop(project, tmp_path):
    copy = Path(shutil.copytree(project, tmp_path / "copy", symlinks=True))
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-q", "-m", "evaluated"], copy)
    same = run(["python", "stages/evaluate.py", "--against", "HEAD", "--max-map-drop", "0",
                "--json", str(tmp_path / "same.json")], copy, check=False)
    assert same.returncode == 0, same.stderr
    assert "top 10 changed for 0 of 20 queries" in same.stdout
    assert json.loads((tmp_path / "same.json").read_text())["metrics"]["mAP"]["delta"] == 0
    set_params(copy, {"whitening.dim": 2})                  # a made-worse version
    run(["dvc", "repro"], copy)
    worse = run(["python", "stages/evaluate.py", "--against", "HEAD", "--max-map-drop", "0.01",
                 "--json", str(tmp_path / "worse.json")], copy, check=False)
    assert worse.returncode == 3, worse.stderr
    assert worse.stderr.startswith("evaluate.py: mAP fell by ") and \
        worse.stderr.count("\n") == 1
    result = json.loads((tmp_path / "worse.json").read_text())
    assert result["metrics"]["mAP"]["delta"] < -0.01 and result["changed_queries"]
    first = result["changed_queries"][0]
    assert first["shared"] + len(first["entered"]) == 10 and \
        len(first["entered"]) == len(first["left"])
    assert run(["python", "stages/evaluate.py", "--against", "HEAD"], copy).returncode == 0
    bad = run(["python", "stages/evaluate.py", "--against", "no-such-rev"], copy, check=False)
    assert bad.returncode == 1 and "not a git revision" in bad.stderr
