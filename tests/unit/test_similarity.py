"""Cosine similarity and ranking against naive references."""
import math

import numpy as np
import pytest

from lib.retrieval.similarity import get_cosine_similarity, l2_normalize, top_k


def naive_cosine(a, b):
    """Reference: the textbook formula, one pair at a time, in Python floats."""
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    norm_a = math.sqrt(sum(float(x) ** 2 for x in a))
    norm_b = math.sqrt(sum(float(y) ** 2 for y in b))
    return 0.0 if norm_a == 0 or norm_b == 0 else dot / (norm_a * norm_b)


def test_cosine_matches_naive_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16)).astype(np.float32)
    y = rng.normal(size=(7, 16)).astype(np.float32)
    got = get_cosine_similarity(x, y)
    assert got.shape == (4, 7)
    assert got.dtype == np.float32
    expected = np.array([[naive_cosine(a, b) for b in y] for a in x])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_cosine_vector_shapes():
    rng = np.random.default_rng(1)
    y = rng.random((5, 8))
    assert get_cosine_similarity(y[0], y).shape == (5,)
    assert get_cosine_similarity(y, y[0]).shape == (5,)
    assert get_cosine_similarity(y[0], y[0]) == pytest.approx(1.0, abs=1e-6)


def test_cosine_is_scale_invariant_and_bounded():
    x = np.array([[1.0, 2.0, 3.0]])
    assert get_cosine_similarity(x, 10 * x)[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert get_cosine_similarity(x, -x)[0, 0] == pytest.approx(-1.0, abs=1e-6)


def test_zero_vector_is_guarded():
    x = np.zeros((1, 4))
    y = np.array([[1.0, 0, 0, 0]])
    got = get_cosine_similarity(x, y)
    assert np.isfinite(got).all()
    assert got[0, 0] == 0.0
    np.testing.assert_array_equal(l2_normalize(np.zeros(3)), np.zeros(3))


def test_dimension_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="dimension mismatch"):
        get_cosine_similarity(np.ones(3), np.ones((2, 4)))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        get_cosine_similarity(np.ones((1, 1, 3)), np.ones((2, 3)))


def test_top_k_orders_best_first_and_breaks_ties_by_index():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3], dtype=np.float32)
    rows, values = top_k(scores, 3)
    assert rows.tolist() == [1, 3, 2]
    np.testing.assert_allclose(values, [0.9, 0.9, 0.5])


def test_top_k_matches_full_sort():
    rng = np.random.default_rng(3)
    scores = rng.random(1000).astype(np.float32)
    rows, _ = top_k(scores, 25)
    assert rows.tolist() == np.argsort(-scores, kind="stable")[:25].tolist()


def test_top_k_clips_to_length():
    rows, values = top_k(np.array([0.2, 0.7]), 10)
    assert rows.tolist() == [1, 0]
    assert values.shape == (2,)
