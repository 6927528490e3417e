"""alpha-QE, database-side augmentation and k-reciprocal re-ranking on small vectors."""
import numpy as np
import pytest

from lib.config import ConfigError, EtlConfig, ServeConfig
from lib.errors import ArtifactError
from lib.retrieval import augment, ImageSearchEngine, load_augmented, save_augmented
from lib.retrieval.expansion import expand
from lib.retrieval.index import ExactIndex
from lib.retrieval.ranking import Ranking, ranked_scores, ranked_search
from lib.retrieval.similarity import l2_normalize, top_k


def _vectors(rows=40, dim=12, seed=0):
    """Random (rows, dim) float32 vectors and one (dim,) query."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, dim)).astype(np.float32),
            rng.normal(size=dim).astype(np.float32))


def _ray(degrees):
    """A unit vector at an angle in the first plane of a 4-d space."""
    angle = np.radians(degrees)
    return np.array([np.cos(angle), np.sin(angle), 0.0, 0.0], dtype=np.float32)


def test_alpha_zero_is_the_plain_expansion_bit_for_bit():
    vectors, query = _vectors()
    index = ExactIndex(vectors, None)
    _, rows = index.search(query[np.newaxis], 3)
    plain = l2_normalize(query) + index.unit_rows(np.sort(rows[0])).sum(axis=0)   # (D,)
    assert np.array_equal(expand(index, query, 3, alpha=0.0), plain)
    assert np.array_equal(expand(index, query, 3), plain)
    assert expand(index, query, 0, alpha=3.0) is query


def test_alpha_weights_each_match_by_its_cosine_to_the_power_alpha():
    vectors, query = _vectors(seed=1)
    index = ExactIndex(vectors, None)
    values, rows = index.search(query[np.newaxis], 4)
    weights = np.maximum(values[0], 0) ** 3                                       # (4,)
    expected = l2_normalize(query) + (weights[:, np.newaxis] * index.unit_rows(rows[0])).sum(0)
    np.testing.assert_allclose(expand(index, query, 4, alpha=3.0), expected, atol=1e-6)
    # A match with a negative cosine counts nothing.
    lone = np.array([[1.0, 0.0], [-1.0, 0.1]], dtype=np.float32)
    far = expand(ExactIndex(lone, None), np.array([1.0, 0.0], np.float32), 2, alpha=1.0)
    np.testing.assert_allclose(far, [2.0, 0.0], atol=1e-6)


def test_augmentation_with_k_zero_is_the_identity():
    vectors, _ = _vectors()
    out = augment(vectors, 0, 3.0)
    assert np.array_equal(out, vectors) and out is not vectors


def test_augmentation_adds_the_weighted_nearest_rows():
    vectors, _ = _vectors(rows=30, dim=8, seed=2)
    unit = l2_normalize(vectors)
    out = augment(vectors, 2, 1.0)                                               # (N, D)
    for row in (0, 7, 29):
        cosines = unit @ unit[row]
        cosines[row] = -np.inf
        nearest, values = top_k(cosines, 2)
        expected = unit[row] + (np.maximum(values, 0)[:, np.newaxis] * unit[nearest]).sum(0)
        np.testing.assert_allclose(out[row], expected, atol=1e-5)
    assert augment(vectors, 1000, 0.0).shape == vectors.shape           # k clipped to N - 1


def test_augmented_artifact_round_trip_and_staleness(tmp_path):
    vectors, _ = _vectors(rows=10, dim=4)
    path = tmp_path / "augmented.npy"
    save_augmented(path, None, dim=4)
    assert load_augmented(path, vectors, 0) is None
    with pytest.raises(ArtifactError, match="run dvc repro"):
        load_augmented(path, vectors, 3)                   # "off" record, but k is set
    save_augmented(path, augment(vectors, 3, 3.0), dim=4)
    assert np.array_equal(load_augmented(path, vectors, 3), augment(vectors, 3, 3.0))
    with pytest.raises(ArtifactError, match="run dvc repro"):
        load_augmented(path, vectors[:5], 3)               # made for another collection
    with pytest.raises(ArtifactError, match="missing"):
        load_augmented(tmp_path / "none.npy", vectors, 3)


def test_reranking_keeps_the_candidates_ahead_of_every_other_row():
    vectors, query = _vectors(rows=60)
    index = ExactIndex(vectors, None)
    cosine_top, _ = top_k(index.scores(query), 15)
    scores = ranked_scores(index, query, Ranking(candidates=15, k1=4, k2=2))
    reranked_top, _ = top_k(scores, 15)
    assert set(reranked_top.tolist()) == set(cosine_top.tolist())
    rest = np.setdiff1d(np.arange(60), cosine_top)
    np.testing.assert_allclose(scores[rest], 0.3 * index.scores(query)[rest], atol=1e-6)
    # Serving through the index gives the same order as scoring every row.
    values, rows = ranked_search(index, query, 20, None, Ranking(candidates=15, k1=4, k2=2))
    assert rows.tolist() == top_k(scores, 20)[0].tolist()
    np.testing.assert_allclose(values, scores[rows], atol=1e-6)


def test_reranking_demotes_a_close_match_whose_neighbours_are_another_kind():
    # Kind A spreads over -10..10 degrees, kind B over 40..65; the query (20 degrees)
    # is of kind A, but a photo of kind B (27 degrees) is its nearest by cosine.
    kinds = [27, -10, -5, 0, 3, 5, 10, 40, 45, 50, 55, 60, 65]
    vectors, query = np.stack([_ray(angle) for angle in kinds]), _ray(20)
    index = ExactIndex(vectors, None)
    assert top_k(index.scores(query), 1)[0][0] == 0
    scores = ranked_scores(index, query, Ranking(candidates=13, k1=6, k2=1, lam=0.3))
    assert sorted(top_k(scores, 6)[0].tolist()) == [1, 2, 3, 4, 5, 6]      # all of kind A


def test_engine_searches_the_augmented_vectors_and_not_the_query():
    vectors, query = _vectors(rows=20, dim=6, seed=3)
    names = np.array([f"c/{i}.jpg" for i in range(20)])
    augmented = augment(vectors, 3, 3.0)
    engine = ImageSearchEngine(vectors, names, None, EtlConfig(), augmented=augmented,
                               ranking=Ranking(alpha=3.0), query_expansion=2)
    plain = ExactIndex(augmented, None)
    expected = plain.scores(expand(plain, query, 2, alpha=3.0))
    np.testing.assert_array_equal(engine.scores(query), expected)
    assert [row for _, row in engine.search_vector(query, 5)] == top_k(expected, 5)[0].tolist()
    engine.query_expansion = 0                       # read at search time
    np.testing.assert_array_equal(engine.scores(query), plain.scores(query))
    with pytest.raises(ArtifactError):
        ImageSearchEngine(vectors, names, None, EtlConfig(), augmented=augmented[:5])


def test_ranking_knobs_come_from_the_serve_section():
    serve = ServeConfig(query_expansion=5, query_expansion_alpha=3.0, reciprocal_candidates=50,
                        reciprocal_k1=10, reciprocal_k2=1, reciprocal_lambda=0.5)
    assert Ranking.from_config(serve) == Ranking(5, 3.0, 50, 10, 1, 0.5)
    with pytest.raises(ConfigError, match="reciprocal_lambda"):
        ServeConfig(reciprocal_lambda=1.5)
