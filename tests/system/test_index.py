"""The vector index: exact below the threshold bit for bit, approximate kinds measured
against the exact scan, stale indexes refused, grown collections extended."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lib import cli
from lib.config import EtlConfig, IndexConfig, load_config
from lib.errors import ArtifactError, ConfigError
from lib.pinning.verify import pin
from lib.retrieval.engine import ImageSearchEngine
from lib.retrieval.index import ApproximateIndex
from lib.retrieval.index_build import check_config
from lib.retrieval.index_store import build_index, load_index, read_index, save_index
from lib.retrieval.whitening import fit_whitening
from tests.support import query_project as builder
from tests.support.helpers import REPO_ROOT, repro, run, set_params, tool_env


def clustered(rows: int, seed: int = 0, dim: int = 64) -> np.ndarray:
    """(rows, dim) float32 vectors around 40 centres, as embeddings cluster by content."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    return (centres[rng.integers(0, 40, rows)] + 0.5 * rng.normal(size=(rows, dim))).astype(
        np.float32)


def ranking_engine(vectors, index=None, config=None, expansion=0) -> ImageSearchEngine:
    """An engine that ranks embeddings (no model), with or without an index."""
    names = np.array([f"row{i}" for i in range(vectors.shape[0])])
    return ImageSearchEngine(vectors, names, None, EtlConfig(), query_expansion=expansion,
                             index=index, index_config=config)


def test_auto_keeps_the_exact_scan_bit_for_bit(query_project):
    config = load_config(query_project / "params.yaml")
    meta = json.loads((query_project / "data/model/index/meta.json").read_text())
    assert config.index.kind == "auto" and meta["kind"] == "exact"
    indexed = ImageSearchEngine.load(config, config.paths.resolve(query_project),
                                     with_images=False)
    plain = builder.load_engine(query_project)
    assert not indexed.index.approximate
    rng = np.random.default_rng(3)
    for expansion in (0, 2):
        indexed.query_expansion = plain.query_expansion = expansion
        for row in rng.choice(len(plain), 4, replace=False):
            query = np.asarray(plain.vectors[row]) + rng.normal(0, 0.1, plain.vectors.shape[1])
            assert np.array_equal(indexed.scores(query), plain.scores(query))
            assert indexed.search_vector(query, 5) == plain.search_vector(query, 5)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_kinds_find_the_exact_top_10_and_print_exact_cosines(kind):
    vectors = clustered(3000)
    config = IndexConfig(kind=kind, pq_m=32, pq_bits=5)
    index, action = build_index(vectors, None, config)
    assert action == f"built a {kind} index over 3000 vectors"
    queries = clustered(40, seed=1)
    for expansion, floor in ((0, 0.9), (2, 0.85)):
        approx = ranking_engine(vectors, index, config, expansion)
        exact = ranking_engine(vectors, expansion=expansion)
        assert approx.index.approximate and not exact.index.approximate
        recall = []
        for query in queries:
            found = approx.search_vector(query, 10)
            truth = {row for _, row in exact.search_vector(query, 10)}
            recall.append(len(truth & {row for _, row in found}) / 10)
            if not expansion:                    # printed scores are the exact cosines
                scores = exact.scores(query)
                for score, row in found:
                    assert score == pytest.approx(float(scores[row]), abs=1e-5)
        assert np.mean(recall) >= floor, (kind, expansion, np.mean(recall))


def test_an_index_that_does_not_match_the_collection_is_refused(tmp_path):
    vectors = clustered(1500)
    config = IndexConfig(kind="hnsw")
    save_index(tmp_path / "index", build_index(vectors, None, config)[0])
    assert load_index(tmp_path / "index", vectors, None, config).kind == "hnsw"
    other = clustered(1500, seed=9)
    cases = [(vectors[:-1], None, config, "built for 1500 vectors of 64"),
             (vectors, None, IndexConfig(kind="hnsw", hnsw_m=16), "params.yaml asks for hnsw"),
             (vectors, None, IndexConfig(kind="exact"), "is hnsw"),
             (vectors, fit_whitening(vectors, 64), config, "another whitening"),
             (other, None, config, "holds other vectors")]
    for rows, whitening, asked, message in cases:
        with pytest.raises(ArtifactError, match=message) as err:
            load_index(tmp_path / "index", rows, whitening, asked)
        assert "\n" not in str(err.value) and str(err.value).endswith("run dvc repro")
    (tmp_path / "index" / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(ArtifactError, match="cannot be read"):
        read_index(tmp_path / "index")


def test_params_the_collection_cannot_support_name_the_param_and_its_limit(tmp_path):
    config = IndexConfig(kind="ivfpq")
    for kwargs, rows, message in (({"nlist": 500}, 300, "index.nlist 500 is more than the "
                                                         "300 vectors"),
                                  ({"pq_m": 30}, 3000, "index.pq_m 30 must divide"),
                                  ({"pq_bits": 8}, 100, "index.pq_bits 8 needs at least 256")):
        with pytest.raises(ConfigError, match=message):
            check_config(IndexConfig(kind="ivfpq", **kwargs), "ivfpq", rows, 64)
    check_config(config, "ivfpq", 3000, 64)
    # Through the stage: one line, exit 1, nothing written.
    np.save(tmp_path / "vectors.npy", clustered(300))
    from lib.retrieval.whitening import save_whitening  # pylint: disable=import-outside-toplevel
    save_whitening(tmp_path / "whitening.npz", None, 64, 300)
    shutil.copyfile(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, {"index.kind": "ivfpq", "index.nlist": 301})
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "stages/index.py"), "vectors.npy",
                           "whitening.npz", "index", "--params", "params.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, env=tool_env(), check=False)
    assert proc.returncode == cli.EXIT_USER_ERROR
    assert proc.stderr.strip() == ("index.py: error: index.nlist 301 is more than the 300 "
                                   "vectors of the collection: at most 300 (or 0 for automatic)")
    assert not (tmp_path / "index").exists()


def test_a_grown_collection_gets_only_its_new_vectors(tmp_path):
    vectors = clustered(2000)
    config = IndexConfig(kind="hnsw")
    save_index(tmp_path / "index", build_index(vectors, None, config)[0])
    rng = np.random.default_rng(5)
    new = clustered(60, seed=11)
    at = np.sort(rng.choice(2060, 60, replace=False))          # new photos anywhere in order
    grown = np.empty((2060, 64), np.float32)
    mask = np.zeros(2060, bool)
    mask[at] = True
    grown[mask], grown[~mask] = new, vectors
    index, action = build_index(grown, None, config, previous=read_index(tmp_path / "index"))
    assert action == "added 60 vectors to the previous hnsw index of 2000 (no rebuild)"
    assert index.faiss_index.ntotal == 2060
    assert np.array_equal(np.sort(index.rows), np.arange(2060))
    searched = ApproximateIndex(index, grown, None, config)
    scores, rows = searched.search(grown[at[:10]], 1)          # each new photo finds itself
    assert np.array_equal(rows[:, 0], at[:10])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    save_index(tmp_path / "grown", index)
    assert load_index(tmp_path / "grown", grown, None, config).faiss_index.ntotal == 2060
    previous = read_index(tmp_path / "index")
    # A removed photo, other build params or another kind: rebuilt.
    for rows, asked in ((grown[1:], config), (grown, IndexConfig(kind="hnsw", hnsw_m=16)),
                        (grown, IndexConfig(kind="ivfpq", pq_m=16, pq_bits=5))):
        assert build_index(rows, None, asked, previous=previous)[1].startswith("built a")
    # An IVF index is retrained once the collection has more than doubled.
    ivf = IndexConfig(kind="ivfpq", pq_m=16, pq_bits=5)
    small = build_index(vectors[:900], None, ivf)[0]
    assert "no rebuild" in build_index(vectors[:1800], None, ivf, previous=small)[1]
    assert build_index(vectors, None, ivf, previous=small)[1].startswith("built a")


@pytest.mark.slow
def test_an_hnsw_index_in_the_pipeline_is_pinned_evaluated_and_served(query_project,
                                                                       tmp_path):
    project = tmp_path / "project"
    shutil.copytree(query_project, project, symlinks=True)
    set_params(project, {"index.kind": "hnsw"})
    assert repro(project) == ["index", "evaluate"]
    meta = json.loads((project / "data/model/index/meta.json").read_text())
    assert meta["kind"] == "hnsw" and meta["rows"] == builder.N_IMAGES
    metrics = json.loads((project / "metrics/evaluation.json").read_text())
    assert metrics["index_recall@10"] == 1.0 and "search_ms_index" not in metrics
    config = load_config(project / "params.yaml")
    with pin(project, config) as pinned:
        assert "index" in pinned.paths
        engine = ImageSearchEngine.load(config, pinned.paths, with_images=False)
    assert engine.index.approximate and engine.index.kind == "hnsw"
    # The near-duplicate report goes through the same index: the copied photo is found.
    proc = run([sys.executable, str(REPO_ROOT / "stages/duplicates.py"), "--output",
                str(tmp_path / "report")], project)
    assert "1 groups of near-duplicates" in proc.stdout
    report = json.loads((tmp_path / "report" / "duplicates.json").read_text())
    assert report["index"] == "hnsw"
    assert report["groups"][0]["images"] == sorted([builder.name_of(builder.COLLECTION[0]),
                                                    builder.DUPLICATE_NAME])
    assert (tmp_path / "report" / "group-0001.png").stat().st_size > 0
    # The index stage's artifact edited after the build is refused like any other.
    (project / "data/model/index/meta.json").write_text("{}")
    proc = run([sys.executable, str(REPO_ROOT / "stages/duplicates.py")], project, check=False)
    assert proc.returncode == 1 and "data/model/index (index) is not the version" in proc.stderr


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_scope_cutoff_and_paging_with_the_exact_scan_and_an_hnsw_index(kind):
    vectors = clustered(3000)
    names = np.array([f"{'a' if i % 3 else 'b'}/{i:05d}.jpg" for i in range(3000)])
    config = IndexConfig(kind=kind)
    index = build_index(vectors, None, config)[0] if kind == "hnsw" else None
    engine = ImageSearchEngine(vectors, names, None, EtlConfig(), index=index,
                               index_config=config)
    exact = ImageSearchEngine(vectors, names, None, EtlConfig())
    query = clustered(1, seed=2)[0]
    in_b = np.flatnonzero(np.char.startswith(names, "b/"))
    assert np.array_equal(engine.folder_rows("b"), in_b)
    assert engine.folder_rows("b/") is engine.folder_rows("b")
    assert engine.folder_rows("c").shape == (0,) and engine.search_vector(query, 5,
                                                                         folder="c") == []
    scoped = engine.search_vector(query, 10, folder="b")
    assert len(scoped) == 10 and all(names[row].startswith("b/") for _, row in scoped)
    truth = set(in_b[np.argsort(-exact.scores(query)[in_b], kind="stable")[:10]].tolist())
    assert len(truth & {row for _, row in scoped}) >= 8                    # scoped recall
    page1, page2 = engine.search_vector(query, 5), engine.search_vector(query, 5, offset=5)
    assert engine.search_vector(query, 10) == page1 + page2
    cutoff = page1[2][0]
    assert engine.search_vector(query, 10, min_score=cutoff) == page1[:3]
    with pytest.raises(ValueError, match="offset"):
        engine.search_vector(query, 5, offset=-1)
