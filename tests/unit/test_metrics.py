"""Retrieval metrics against hand-computed rankings, ties and a query with no relevant image."""
import numpy as np
import pytest

from lib.evaluation.metrics import (
    average_precisions, evaluate, interpolated_precision, precision_at, rank_relevance,
    recall_at)
from lib.retrieval.similarity import top_k

T, F = True, False

# Four queries over a database of six images.
SCORES = np.array([
    [0.9, 0.8, 0.8, 0.5, 0.3, 0.1],   # A: rows 1 (relevant) and 2 tie; row 1 ranks first
    [0.2, 0.7, 0.7, 0.7, 0.1, 0.0],   # B: rows 1, 2 (irrelevant) and 3 (relevant) tie
    [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],   # C: no relevant image
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # D: relevant first and last
], dtype=np.float32)
RELEVANT = np.array([
    [F, T, F, T, F, F],
    [F, F, F, T, F, T],
    [F, F, F, F, F, F],
    [T, F, F, F, F, T],
])
# By hand, ranked order (ties by lower row):
# A: 0 1 2 3 4 5 -> F T F T F F: AP = (1/2 + 2/4) / 2 = 1/2
# B: 1 2 3 0 4 5 -> F F T F F T: AP = (1/3 + 2/6) / 2 = 1/3
# D: 5 4 3 2 1 0 -> T F F F F T: AP = (1/1 + 2/6) / 2 = 2/3
RANKED = np.array([[F, T, F, T, F, F], [F, F, T, F, F, T], [F] * 6, [T, F, F, F, F, T]])


def test_ranking_breaks_ties_by_lower_row():
    np.testing.assert_array_equal(rank_relevance(SCORES, RELEVANT), RANKED)


def test_ranking_is_the_order_serving_returns():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(5, 40)).astype(np.float32)    # many ties
    relevant = rng.random((5, 40)) < 0.3
    for row in range(5):
        order, _ = top_k(scores[row], 40)
        np.testing.assert_array_equal(rank_relevance(scores, relevant)[row],
                                      relevant[row][order])


def test_per_query_values_by_hand():
    ap = average_precisions(RANKED)
    np.testing.assert_allclose(ap[[0, 1, 3]], [1 / 2, 1 / 3, 2 / 3])
    assert np.isnan(ap[2])
    np.testing.assert_allclose(precision_at(RANKED, 1), [0, 0, 0, 1])
    np.testing.assert_allclose(precision_at(RANKED, 5), [2 / 5, 1 / 5, 0, 1 / 5])
    np.testing.assert_allclose(precision_at(RANKED, 10), [2 / 10, 2 / 10, 0, 2 / 10])
    recall = recall_at(RANKED, 3)
    np.testing.assert_allclose(recall[[0, 1, 3]], [1 / 2, 1 / 2, 1 / 2])
    assert np.isnan(recall[2])
    np.testing.assert_allclose(recall_at(RANKED, 10)[[0, 1, 3]], [1, 1, 1])


def test_interpolated_precision_by_hand():
    curve = interpolated_precision(RANKED)
    # A: precision .5 at recall .5 and at recall 1 -> .5 everywhere.
    np.testing.assert_allclose(curve[0], [0.5] * 11)
    # B: precision 1/3 at recall .5 and at recall 1 -> 1/3 everywhere.
    np.testing.assert_allclose(curve[1], [1 / 3] * 11)
    assert np.isnan(curve[2]).all()
    # D: precision 1 up to recall .5, then 2/6.
    np.testing.assert_allclose(curve[3], [1.0] * 6 + [1 / 3] * 5)


def test_means_leave_out_the_query_without_relevant_images():
    metrics, curve = evaluate(SCORES, RELEVANT, precision_ks=(1, 5, 10), recall_ks=(3, 10))
    assert metrics["queries"] == 4
    assert metrics["queries_evaluated"] == 3
    assert metrics["queries_without_relevant"] == 1
    assert metrics["mAP"] == pytest.approx((1 / 2 + 1 / 3 + 2 / 3) / 3)
    assert metrics["P@1"] == pytest.approx(1 / 3)
    assert metrics["P@5"] == pytest.approx((2 / 5 + 1 / 5 + 1 / 5) / 3)
    assert metrics["P@10"] == pytest.approx(0.2)
    assert metrics["R@3"] == pytest.approx(0.5)
    assert metrics["R@10"] == pytest.approx(1.0)
    np.testing.assert_allclose(curve[:, 0], np.linspace(0, 1, 11))
    np.testing.assert_allclose(curve[:6, 1], [(0.5 + 1 / 3 + 1) / 3] * 6)
    np.testing.assert_allclose(curve[6:, 1], [(0.5 + 1 / 3 + 1 / 3) / 3] * 5)


def test_perfect_and_worst_rankings():
    relevant = np.array([[T, T, F, F]])
    best, _ = evaluate(np.array([[4.0, 3.0, 2.0, 1.0]]), relevant, (1, 2), (2,))
    worst, _ = evaluate(np.array([[1.0, 2.0, 3.0, 4.0]]), relevant, (1, 2), (2,))
    assert best["mAP"] == 1.0 and best["P@2"] == 1.0 and best["R@2"] == 1.0
    assert worst["mAP"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert worst["P@1"] == 0.0 and worst["R@2"] == 0.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no query has a relevant image"):
        evaluate(SCORES[2:3], RELEVANT[2:3])
    with pytest.raises(ValueError, match="one shape"):
        evaluate(SCORES, RELEVANT[:, :3])
    with pytest.raises(TypeError, match="bool"):
        evaluate(SCORES, RELEVANT.astype(int))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.full((1, 2), np.nan), np.array([[T, F]]))
    with pytest.raises(ValueError, match="positive integer"):
        precision_at(RANKED, 0)
