"""Cosine similarity and top-k ranking in vectorised NumPy."""
from typing import Optional, Tuple

import numpy as np

_EPS = 1e-12


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scales each row to unit length; all-zero rows stay zero (no division by zero).

    Args:
        vectors: (D,) or (N, D) array.

    Returns:
        ``float32`` array of the same shape.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, _EPS)


def get_cosine_similarity(x: np.ndarray, y: np.ndarray,
                          y_norms: Optional[np.ndarray] = None) -> np.ndarray:
    """Cosine similarity of every row of ``x`` with every row of ``y``.

    A zero vector has similarity 0 with everything. This is the cosine serving ranks
    by (:class:`lib.retrieval.engine.ImageSearchEngine`).

    Args:
        x: (D,) or (M, D).
        y: (D,) or (N, D).
        y_norms: The L2 norms of ``y``'s rows, (N,) (or () for one vector), when the
            caller keeps them: ``y`` is then used as it is, not normalised again.

    Returns:
        (M, N) for two matrices, (N,) or (M,) for one vector and a matrix, and a 0-d
        array for two vectors.

    Raises:
        ValueError: The dimensions differ or an input is not 1-D or 2-D.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim not in (1, 2) or y.ndim not in (1, 2):
        raise ValueError(f"inputs must be 1-D or 2-D, got shapes {x.shape} and {y.shape}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"dimension mismatch: {x.shape[-1]} vs {y.shape[-1]}")
    if y_norms is None:
        return l2_normalize(x) @ l2_normalize(y).T
    y = np.asarray(y, dtype=np.float32)
    if np.shape(y_norms) != y.shape[:-1]:
        raise ValueError(f"y_norms has shape {np.shape(y_norms)}, y has {y.shape[:-1]} rows")
    unit = l2_normalize(x)
    dots = y @ unit if unit.ndim == 1 else unit @ y.T               # (N,) or (M, N)
    return dots / np.maximum(y_norms, _EPS)


def top_k(scores: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest scores, best first.

    Ties are broken by the lower index, so results are deterministic.

    Args:
        scores: (N,) scores.
        k: How many to return; clipped to N.

    Returns:
        (indices, values), each of shape (min(k, N),).
    """
    scores = np.asarray(scores)
    k = min(int(k), scores.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=scores.dtype)
    if k < scores.shape[0]:
        candidates = np.argpartition(-scores, k - 1)[:k]
        # Everything tied with the k-th score competes on index order.
        threshold = scores[candidates].min()
        candidates = np.flatnonzero(scores >= threshold)
    else:
        candidates = np.arange(scores.shape[0])
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    best = candidates[order]
    return best, scores[best]
