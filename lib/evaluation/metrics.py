"""Retrieval quality metrics over ranked lists, in vectorised NumPy.

Conventions (the evaluate stage and the tests rely on them):

- **Ranking and ties.** Each query ranks the whole database by descending score;
  equal scores are ordered by database row, lower row first. This is exactly the
  order serving returns (:func:`lib.retrieval.similarity.top_k`), so the metrics score the very
  list a user would see. A tie between a relevant and an irrelevant image is thus
  resolved deterministically, never averaged.
- **Queries with no relevant image** (no database image carries their label) have no
  defined average precision or recall. They are left out of *every* mean, so all the
  metrics are averaged over the same queries, and are counted in
  ``queries_without_relevant``. If no query has a relevant image, that is an error.
- ``P@k`` divides the relevant images among the first ``k`` by ``k`` (also when the
  database holds fewer than ``k`` images); ``R@k`` divides them by the query's number
  of relevant images. Average precision is the mean of the precision at the rank of
  each relevant image (non-interpolated).
- The precision-recall curve is the interpolated precision (the best precision at
  any recall at least as high) at recall 0.0, 0.1, ..., 1.0, averaged over queries.
"""
from typing import Dict, Sequence, Tuple

import numpy as np

from lib.config import positive_int
from lib.errors import InputError

PRECISION_KS = (1, 5, 10)
RECALL_KS = (10,)
RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


def rank_relevance(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Relevance of each query's results in ranked order.

    Args:
        scores: (Q, N) similarity of each query to each database image.
        relevant: (Q, N) ``bool``, whether each database image is relevant to each query.

    Returns:
        (Q, N) ``bool``: row q is ``relevant[q]`` ordered by descending score, ties by
        lower database row.

    Raises:
        ValueError: Shapes differ, are not 2-D, the database is empty, or a score is NaN.
    """
    scores = np.asarray(scores)
    relevant = np.asarray(relevant)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise ValueError(f"scores and relevance must be (Q, N) arrays of one shape, got "
                         f"{scores.shape} and {relevant.shape}")
    if scores.shape[1] == 0:
        raise ValueError("the database is empty")
    if relevant.dtype != np.bool_:
        raise TypeError(f"relevance must be a bool array, got {relevant.dtype}")
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN")
    rows = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)        # (Q, N)
    order = np.lexsort((rows, -scores), axis=-1)                            # (Q, N)
    return np.take_along_axis(relevant, order, axis=1)                      # (Q, N)


def average_precisions(ranked: np.ndarray) -> np.ndarray:
    """Average precision of each query; NaN where it has no relevant image.

    Args:
        ranked: (Q, N) ``bool`` relevance in ranked order.

    Returns:
        (Q,) ``float64``.
    """
    ranked = np.asarray(ranked, dtype=bool)
    hits = np.cumsum(ranked, axis=1)                                        # (Q, N)
    precision = hits / np.arange(1, ranked.shape[1] + 1)                    # (Q, N)
    total = ranked.sum(axis=1)                                              # (Q,)
    summed = np.where(ranked, precision, 0.0).sum(axis=1)                   # (Q,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, summed / np.maximum(total, 1), np.nan)


def precision_at(ranked: np.ndarray, k: int) -> np.ndarray:
    """Precision among the first ``k`` results of each query: (Q,) ``float64``."""
    _check_k(k)
    return np.asarray(ranked, dtype=bool)[:, :k].sum(axis=1) / k


def recall_at(ranked: np.ndarray, k: int) -> np.ndarray:
    """Recall among the first ``k`` results; NaN where a query has no relevant image."""
    _check_k(k)
    ranked = np.asarray(ranked, dtype=bool)
    total = ranked.sum(axis=1)
    found = ranked[:, :k].sum(axis=1)
    return np.where(total > 0, found / np.maximum(total, 1), np.nan)


def interpolated_precision(ranked: np.ndarray,
                           levels: np.ndarray = RECALL_LEVELS) -> np.ndarray:
    """Interpolated precision at each recall level: (Q, L), NaN rows without relevant."""
    ranked = np.asarray(ranked, dtype=bool)
    total = ranked.sum(axis=1, keepdims=True)                               # (Q, 1)
    hits = np.cumsum(ranked, axis=1)                                        # (Q, N)
    precision = hits / np.arange(1, ranked.shape[1] + 1)                    # (Q, N)
    recall = hits / np.maximum(total, 1)                                    # (Q, N)
    # Best precision at this rank or any later one (recall never decreases).
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # (Q, N)
    out = np.empty((ranked.shape[0], len(levels)))                          # (Q, L)
    for column, level in enumerate(levels):
        reached = recall >= level - 1e-12                                   # (Q, N)
        first = np.argmax(reached, axis=1)                                  # (Q,)
        value = best_after[np.arange(ranked.shape[0]), first]
        out[:, column] = np.where(reached.any(axis=1), value, 0.0)
    out[total[:, 0] == 0] = np.nan
    return out


def evaluate(scores: np.ndarray, relevant: np.ndarray,
             precision_ks: Sequence[int] = PRECISION_KS,
             recall_ks: Sequence[int] = RECALL_KS) -> Tuple[Dict[str, float], np.ndarray]:
    """All the metrics of a query set, averaged as the module docstring defines.

    Args:
        scores: (Q, N) similarity of each query to each database image.
        relevant: (Q, N) ``bool`` relevance.
        precision_ks: The k of each ``P@k``.
        recall_ks: The k of each ``R@k``.

    Returns:
        The metrics (``mAP``, ``P@k``, ``R@k``, ``queries``, ``queries_evaluated``,
        ``queries_without_relevant``) and the (L, 2) precision-recall curve, columns
        recall and mean interpolated precision.

    Raises:
        ValueError: Bad shapes, or no query has a relevant image.
    """
    ranked = rank_relevance(scores, relevant)                               # (Q, N)
    counted = ranked.any(axis=1)                                            # (Q,)
    if not counted.any():
        raise InputError("no query has a relevant image in the database: check that the "
                         "query labels match the database labels")
    ranked = ranked[counted]
    metrics: Dict[str, float] = {"mAP": float(np.mean(average_precisions(ranked)))}
    for k in precision_ks:
        metrics[f"P@{k}"] = float(np.mean(precision_at(ranked, k)))
    for k in recall_ks:
        metrics[f"R@{k}"] = float(np.mean(recall_at(ranked, k)))
    metrics["queries"] = int(counted.shape[0])
    metrics["queries_evaluated"] = int(counted.sum())
    metrics["queries_without_relevant"] = int((~counted).sum())
    curve = np.stack([RECALL_LEVELS, interpolated_precision(ranked).mean(axis=0)], axis=1)
    return metrics, curve


def _check_k(k) -> None:
    """Validates a cut-off."""
    positive_int(k, "k")
