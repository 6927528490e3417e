"""k-reciprocal re-ranking of a query's best candidates (a bounded form).

After the (expanded) query is ranked, its ``K`` best candidates
(``serve.reciprocal_candidates``; 0 is off) are ranked again by k-reciprocal
neighbourhoods computed among the query and those candidates only, so the cost per
query is ``O(K^2 D)`` whatever the collection size. Two photos are k-reciprocal
neighbours when each is among the other's ``k1`` nearest; each member's neighbourhood
is widened by the reciprocal sets of its members that mostly overlap it, turned into
weights ``exp(-(1 - cosine))``, and averaged over its ``k2`` nearest (local query
expansion). The Jaccard distance ``d_J`` between the query's weights and a
candidate's measures how much their neighbourhoods share.

The score of a row is ``(1 - lambda) (1 - d_J) + lambda cosine``, with ``d_J = 1`` for
rows outside the candidates: the candidates keep the head of the ranking (their score
is at least ``lambda`` times a cosine no other row beats), re-ordered among
themselves, and every other row keeps its cosine order behind them.
"""
import numpy as np

from lib.retrieval.similarity import l2_normalize


def _reciprocal(nearest: np.ndarray, k: int) -> np.ndarray:
    """(M, M) ``bool``: ``g`` is among the ``k`` nearest of ``p`` and ``p`` of ``g``."""
    size = nearest.shape[0]
    member = np.zeros((size, size), dtype=bool)                             # (M, M)
    member[np.arange(size)[:, np.newaxis], nearest[:, :k + 1]] = True
    return member & member.T


def jaccard_distance(unit: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Jaccard distance of row 0 (the query) to every row of a small unit matrix.

    Args:
        unit: (M, D) unit vectors: the query, then its candidates.
        k1: Reciprocal neighbourhood size.
        k2: Neighbours averaged in local query expansion (1: none).

    Returns:
        (M,) ``float32`` in [0, 1]; 0 for the query itself.
    """
    distance = 1.0 - unit @ unit.T                                          # (M, M)
    nearest = np.argsort(distance, axis=1, kind="stable")                   # (M, M)
    recip = _reciprocal(nearest, k1)                                        # (M, M)
    half = _reciprocal(nearest, max(k1 // 2, 1)).astype(np.float32)         # (M, M)
    overlap = recip.astype(np.float32) @ half.T                             # (M, M)
    widen = recip & (overlap > 2.0 / 3.0 * half.sum(axis=1)[np.newaxis, :])
    recip |= (widen.astype(np.float32) @ half) > 0
    weights = np.where(recip, np.exp(-distance), 0.0).astype(np.float32)    # (M, M)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    if k2 > 1:
        weights = weights[nearest[:, :k2]].mean(axis=1)                     # (M, M)
    shared = np.minimum(weights[0], weights).sum(axis=1)                    # (M,)
    joint = np.maximum(weights[0], weights).sum(axis=1)                     # (M,)
    return (1.0 - shared / np.maximum(joint, 1e-12)).astype(np.float32)


def rerank_scores(query: np.ndarray, candidates: np.ndarray, cosines: np.ndarray,
                  k1: int, k2: int, lam: float) -> np.ndarray:
    """Re-ranked scores of a query's candidates.

    Args:
        query: (D,) search-space query.
        candidates: (K, D) search-space vectors of its best candidates.
        cosines: (K,) their cosines to the query.
        k1, k2: See :func:`jaccard_distance`.
        lam: Weight of the cosine in the score, in [0, 1].

    Returns:
        (K,) ``float32``: ``(1 - lam) (1 - d_J) + lam cosine``.
    """
    unit = l2_normalize(np.vstack([query[np.newaxis], candidates]))        # (K+1, D)
    jaccard = jaccard_distance(unit, k1, k2)[1:]                            # (K,)
    return ((1.0 - lam) * (1.0 - jaccard) + lam * cosines).astype(np.float32)


def outside_scores(cosines: np.ndarray, lam: float) -> np.ndarray:
    """Scores of rows outside the candidates: ``lam`` times their cosine (``d_J = 1``)."""
    return (lam * np.asarray(cosines, dtype=np.float32)).astype(np.float32)
