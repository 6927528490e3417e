"""PCA whitening against a reference SVD, its artifact, and the engine's search options."""
import numpy as np
import pytest

from lib.config import EtlConfig
from lib.embedding.vectorizer import Vectorizer
from lib.errors import ArtifactError
from lib.retrieval.engine import ImageSearchEngine
from lib.retrieval.similarity import l2_normalize
from lib.retrieval.whitening import fit_whitening, load_whitening, save_whitening

ROWS, WIDTH = 60, 16


@pytest.fixture(name="vectors")
def vectors_fixture():
    """Non-negative vectors with correlated dimensions, as pooled CNN features are."""
    rng = np.random.default_rng(7)
    mixing = rng.standard_normal((WIDTH, WIDTH))
    return (np.maximum(rng.standard_normal((ROWS, WIDTH)) @ mixing, 0) + 0.05).astype(np.float32)


@pytest.fixture(scope="module", name="vectorizer")
def vectorizer_fixture():
    """A tiny real Keras model (8x8x3 -> 16-d), so the engine runs without weights."""
    import keras  # pylint: disable=import-outside-toplevel
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(WIDTH, 3)(inputs))
    return Vectorizer(keras.Model(inputs, pooled), batch_size=4)


def reference_whiten(vectors, dim):
    """Textbook PCA whitening by SVD of the centred unit vectors."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    std = singular[:dim] / np.sqrt(vectors.shape[0] - 1)
    return unit.mean(axis=0), axes[:dim].T / std                    # (D,), (D, d)


def test_fit_matches_the_reference_up_to_axis_signs(vectors):
    whitening = fit_whitening(vectors, 6)
    mean, projection = reference_whiten(vectors, 6)
    np.testing.assert_allclose(whitening.mean, mean, atol=1e-6)
    signs = np.sign(np.sum(whitening.projection * projection, axis=0))
    np.testing.assert_allclose(whitening.projection, projection * signs, rtol=1e-3, atol=1e-3)


def test_whitened_database_has_identity_covariance(vectors):
    whitened = fit_whitening(vectors, 8).apply(vectors)              # (N, 8)
    np.testing.assert_allclose(whitened.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(8), atol=1e-3)


def test_fit_is_reproducible_and_checks_its_dimension(vectors):
    first, second = fit_whitening(vectors, 5), fit_whitening(vectors.copy(), 5)
    np.testing.assert_array_equal(first.projection, second.projection)
    with pytest.raises(ValueError, match="at most 16"):
        fit_whitening(vectors, 17)
    with pytest.raises(ValueError, match="at most 3"):
        fit_whitening(vectors[:4], 4)
    with pytest.raises(ValueError, match="positive integer"):
        fit_whitening(vectors, 0)


def test_artifact_round_trip_and_staleness(vectors, tmp_path):
    path = tmp_path / "whitening.npz"
    save_whitening(path, fit_whitening(vectors, 4), input_dim=WIDTH, rows=ROWS)
    loaded = load_whitening(path, WIDTH, ROWS, expected_dim=4)
    np.testing.assert_array_equal(loaded.apply(vectors), fit_whitening(vectors, 4).apply(vectors))
    with pytest.raises(ArtifactError, match="whitening.dim 8: run dvc repro"):
        load_whitening(path, WIDTH, ROWS, expected_dim=8)
    with pytest.raises(ArtifactError, match="fitted on 60 vectors"):
        load_whitening(path, WIDTH, ROWS + 1)
    save_whitening(path, None, input_dim=WIDTH, rows=ROWS)
    assert load_whitening(path, WIDTH, ROWS, expected_dim=0) is None
    with pytest.raises(ArtifactError, match="is missing"):
        load_whitening(tmp_path / "none.npz", WIDTH, ROWS)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not valid"):
        load_whitening(tmp_path / "bad.npz", WIDTH, ROWS)


def _engine(vectors, vectorizer, **options):
    names = np.array([f"c{row % 3}/{row}.jpg" for row in range(ROWS)])
    return ImageSearchEngine(vectors, names, vectorizer, EtlConfig(image_size=8), **options)


def test_default_scores_are_plain_cosine_bit_for_bit(vectors, vectorizer):
    query = vectors[3] + 0.5
    scores = _engine(vectors, vectorizer).scores(query)
    expected = vectors @ l2_normalize(query)
    expected /= np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    np.testing.assert_array_equal(scores, expected)


def test_whitened_scores_are_cosine_in_the_whitened_space(vectors, vectorizer):
    whitening = fit_whitening(vectors, 6)
    mean, projection = reference_whiten(vectors, 6)
    signs = np.sign(np.sum(whitening.projection * projection, axis=0))
    query = vectors[5] * 0.7 + vectors[9] * 0.3

    def whiten(rows):
        return (l2_normalize(rows) - mean) @ (projection * signs)
    database, wanted = whiten(vectors), whiten(query[np.newaxis])[0]
    expected = database @ wanted / np.linalg.norm(database, axis=1) / np.linalg.norm(wanted)
    scores = _engine(vectors, vectorizer, whitening=whitening).scores(query)
    np.testing.assert_allclose(scores, expected, atol=2e-3)
    assert np.argmax(scores) == np.argmax(expected)


def test_query_expansion_averages_the_query_and_its_top_k(vectors, vectorizer):
    query = vectors[11] + 0.2
    plain = _engine(vectors, vectorizer).scores(query)
    top = np.argsort(-plain, kind="stable")[:3]
    expanded = l2_normalize(l2_normalize(query) + l2_normalize(vectors[top]).sum(axis=0))
    expected = l2_normalize(vectors) @ expanded
    scores = _engine(vectors, vectorizer, query_expansion=3).scores(query)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert not np.allclose(scores, plain)


def test_whitening_and_expansion_together(vectors, vectorizer):
    whitening = fit_whitening(vectors, 6)
    engine = _engine(vectors, vectorizer, whitening=whitening, query_expansion=2)
    query = vectors[20]
    space = whitening.apply(vectors)
    unit_query = l2_normalize(whitening.apply(query[np.newaxis])[0])
    first = l2_normalize(space) @ unit_query
    top = np.argsort(-first, kind="stable")[:2]
    expanded = l2_normalize(unit_query + l2_normalize(space[top]).sum(axis=0))
    np.testing.assert_allclose(engine.scores(query), l2_normalize(space) @ expanded, atol=1e-5)
    # A collection image is its own best match, whitened and expanded or not.
    assert engine.search_vector(query, 1)[0][1] == 20


def test_embedded_query_goes_through_whitening_and_expansion(vectors, vectorizer):
    whitening = fit_whitening(vectors, 6)
    engine = _engine(vectors, vectorizer, whitening=whitening, query_expansion=2)
    bgr = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = engine.search_vector(engine.embed(bgr), 4)
    assert engine.most_similar(bgr, 4) == [(score, str(engine.names[row]))
                                          for score, row in expected]


def test_bad_options_are_refused(vectors, vectorizer):
    with pytest.raises(ValueError, match="query_expansion"):
        _engine(vectors, vectorizer, query_expansion=-1)
    with pytest.raises(ValueError, match="takes \\(N, 8\\)"):
        _engine(vectors, vectorizer, whitening=fit_whitening(vectors[:, :8], 4))
