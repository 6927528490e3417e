"""Database-side augmentation (DBA): each collection vector joined by its neighbours.

Every collection vector is replaced by the sum of its unit vector and the unit vectors
of its ``k`` nearest other rows, each weighted by its cosine raised to ``alpha``
(negative cosines count 0; ``alpha`` 0 is the plain sum). The collection then ranks as
a smoothed version of itself: a photo close to many of one kind moves towards them.
Queries are not augmented.

The whitening stage computes it once, after the modelling stage, with an exact blocked
scan (``O(N^2 D)``), and saves it as a plain ``.npy`` (:func:`save_augmented`); the
engine and the index stage search those vectors instead of the embeddings. With
``augmentation.k: 0`` (the default) the artifact is a ``(0, D)`` array that records
"off", and search is the design's, bit for bit.
"""
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from lib.artifacts import atomic_path, load_npy
from lib.errors import ArtifactError, PathLike
from lib.retrieval.similarity import l2_normalize

logger = logging.getLogger(__name__)

_BLOCK = 1024          # rows whose neighbours are found per step


def neighbours(unit: np.ndarray, k: int, start: int, stop: int) -> tuple:
    """The ``k`` nearest other rows of rows ``start:stop`` of a unit matrix.

    Returns:
        (rows, cosines), each (C, k'), nearest first; equal cosines in row order.
    """
    block = unit[start:stop]                                                # (C, D)
    sims = block @ unit.T                                                   # (C, N)
    sims[np.arange(block.shape[0]), np.arange(start, stop)] = -np.inf       # not itself
    k = min(k, unit.shape[0] - 1)
    if k < unit.shape[0] - 1:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]                 # (C, k)
    else:
        part = np.broadcast_to(np.arange(unit.shape[0]), sims.shape)
    values = np.take_along_axis(sims, part, axis=1)                         # (C, k)
    order = np.lexsort((part, -values), axis=-1)[:, :k]
    rows = np.take_along_axis(part, order, axis=1)                          # (C, k)
    return rows, np.take_along_axis(values, order, axis=1)


def augment(vectors: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """DBA of a collection: (N, D) vectors to (N, D) ``float32``.

    Args:
        vectors: (N, D) embeddings (a memmap is fine).
        k: Neighbours joined to each row; 0 returns the vectors unchanged (a copy).
        alpha: Weight exponent of a neighbour's cosine (0: plain sum).

    Returns:
        (N, D) ``float32``: row i is ``u_i + sum_j max(cos_ij, 0) ** alpha u_j`` over
        its ``k`` nearest other rows ``j`` (``u`` the unit vectors), in nearest-first
        order; unnormalised (the cosine ignores the scale).
    """
    if not k or vectors.shape[0] < 2:
        return np.array(vectors, dtype=np.float32)
    unit = l2_normalize(np.asarray(vectors, dtype=np.float32))              # (N, D)
    out = np.empty_like(unit)                                               # (N, D)
    for start in range(0, unit.shape[0], _BLOCK):
        stop = min(start + _BLOCK, unit.shape[0])
        rows, values = neighbours(unit, k, start, stop)                     # (C, k)
        weights = np.maximum(values, 0.0) ** np.float32(alpha)              # (C, k)
        out[start:stop] = unit[start:stop] + np.einsum(
            "ck,ckd->cd", weights.astype(np.float32), unit[rows])           # (C, D)
    return out


def save_augmented(path: PathLike, augmented: Optional[np.ndarray], dim: int) -> None:
    """Atomically saves the augmented vectors, or the ``(0, dim)`` record that DBA is off."""
    array = np.zeros((0, dim), np.float32) if augmented is None else augmented
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)


def load_augmented(path: PathLike, vectors: np.ndarray, k: int) -> Optional[np.ndarray]:
    """The whitening stage's augmented vectors (memory-mapped), checked against the collection.

    Args:
        path: The ``.npy`` artifact.
        vectors: (N, D) collection embeddings.
        k: ``augmentation.k`` of the params: 0 wants the "off" record.

    Returns:
        (N, D) ``float32``, or None when DBA is off.

    Raises:
        ArtifactError: Missing, not valid, or not made for these vectors and ``k``.
    """
    if not Path(path).is_file():
        raise ArtifactError(f"augmentation artifact {path} is missing: run dvc repro")
    array = load_npy(path, dtype=np.float32, ndim=2, mmap=bool(k))        # (N, D) or (0, D)
    want = (vectors.shape[0] if k else 0, vectors.shape[1])
    if array.shape != want:
        raise ArtifactError(f"augmentation artifact {path} holds {array.shape[0]} x "
                            f"{array.shape[1]} vectors, augmentation.k {k} with "
                            f"{vectors.shape[0]} x {vectors.shape[1]} embeddings needs "
                            f"{want[0]} x {want[1]}: run dvc repro")
    return array if k else None
