"""The vector index serving ranks through: the exact scan, or a FAISS index.

Both answer one interface, ``search(queries, k) -> (scores, rows)`` over the search
space (the collection's vectors, whitened when whitening is on), and ``unit_rows``:
:class:`ExactIndex` is the design's linear scan, bit for bit; :class:`ApproximateIndex`
asks the index stage's FAISS index (built L2-normalised, so that FAISS's L2 order is
the cosine order) for ``k x rerank`` candidates and re-scores them with the exact
cosine, so every score is a true cosine.

Building one is :mod:`lib.retrieval.index_build`'s; the artifact
(:mod:`lib.retrieval.index_store`) also records which collection row each index entry
holds and a content key per entry, so a collection that only grew gets its new vectors
added to the previous index instead of a rebuild.
"""
import dataclasses
import logging
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from lib.config import IndexConfig
from lib.errors import ArtifactError
from lib.retrieval.similarity import get_cosine_similarity, l2_normalize, top_k
from lib.retrieval.whitening import Whitening

logger = logging.getLogger(__name__)

_SCAN = 65536          # rows scored per step by the exact scan


def space_rows(vectors: np.ndarray, whitening: Optional[Whitening],
               rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Search-space unit vectors of some collection rows (all when ``rows`` is None).

    Returns:
        (R, D') ``float32``, whitened when whitening is on, L2-normalised.
    """
    block = np.asarray(vectors if rows is None else vectors[rows], dtype=np.float32)  # (R, D)
    if whitening is not None:
        block = whitening.apply(block)                                   # (R, D')
    return l2_normalize(block)


@dataclasses.dataclass
class VectorIndex:
    """A built index and what it covers.

    Attributes:
        kind: ``exact``, ``hnsw`` or ``ivfpq``.
        meta: What it was built from and with (``rows``, ``input_dim``, ``dim``,
            ``whitening``, ``params``, ``trained_rows``, ``key_kind``).
        rows: (E,) ``int64`` collection row held by each index entry (FAISS id order).
        keys: (E,) ``uint64`` content key of each entry's row when it was added.
        faiss_index: The FAISS index, None for ``exact``.
    """

    kind: str
    meta: Dict[str, Any]
    rows: np.ndarray
    keys: np.ndarray
    faiss_index: Any = None

    @property
    def approximate(self) -> bool:
        """Whether searches go through FAISS (not the exact scan)."""
        return self.faiss_index is not None

    def candidates(self, queries: np.ndarray, k: int, config: IndexConfig,
                   within: Optional[np.ndarray] = None) -> np.ndarray:
        """Collection rows of the ``k`` nearest entries of each query, by FAISS.

        Args:
            queries: (Q, D') search-space vectors (normalised here).
            k: Candidates per query (clipped to the entries).
            config: Search-time knobs (``ef_search``, ``nprobe``).
            within: (R,) sorted collection rows the search is limited to (FAISS skips
                every other entry as it searches); None for all.

        Returns:
            (Q, k') ``int64`` rows, nearest first; -1 where FAISS found fewer.
        """
        import faiss  # pylint: disable=import-outside-toplevel
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(config.ef_search, k)
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = min(config.nprobe, self.meta["params"]["lists"])
        entries = self.rows.shape[0]
        if within is not None:
            ids = np.flatnonzero(np.isin(self.rows, within)).astype(np.int64)  # (R',)
            params.sel = faiss.IDSelectorBatch(ids)  # pylint: disable=no-value-for-parameter
            entries = ids.shape[0]
        k = min(int(k), entries)
        if k == 0:
            return np.full((queries.shape[0], 0), -1, dtype=np.int64)
        unit = np.ascontiguousarray(l2_normalize(queries), dtype=np.float32)   # (Q, D')
        _, ids = self.faiss_index.search(unit, k, params=params)               # (Q, k)
        return np.where(ids >= 0, self.rows[np.maximum(ids, 0)], -1)


class ExactIndex:
    """The design's linear scan: the cosine of a query with every collection row.

    Args:
        vectors: (N, D) ``float32`` collection vectors (a memmap is fine).
        whitening: The whitening of the search space, or None.
    """

    approximate = False

    def __init__(self, vectors: np.ndarray, whitening: Optional[Whitening]):
        space = vectors if whitening is None else whitening.apply(vectors)    # (N, D')
        norms = np.concatenate([
            np.linalg.norm(np.asarray(space[i:i + _SCAN], dtype=np.float32), axis=1)
            for i in range(0, space.shape[0], _SCAN)])                        # (N,)
        if not np.isfinite(norms).all():
            raise ArtifactError("the index vectors hold NaN or infinite values")
        self.space, self.norms = space, norms

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine of a search-space query (D',) with every row: (N,) ``float32``.

        The cosine is :func:`get_cosine_similarity`, given the rows' norms computed once.
        """
        total = self.space.shape[0]
        scores = np.empty(total, dtype=np.float32)                            # (N,)
        for start in range(0, total, _SCAN):
            block = np.asarray(self.space[start:start + _SCAN], dtype=np.float32)
            scores[start:start + block.shape[0]] = get_cosine_similarity(
                query, block, y_norms=self.norms[start:start + block.shape[0]])  # (C,)
        return scores

    def search(self, queries: np.ndarray, k: int, within: Optional[np.ndarray] = None
               ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows of each query (Q, D'): (scores, rows), each (Q, k').

        ``k'`` is ``k`` clipped to the rows searched; equal scores come in row order.
        ``within``: (R,) sorted rows the search is limited to (only they are scored);
        None for all.
        """
        if within is None:
            found = [top_k(self.scores(query), k) for query in queries]
        else:
            space = np.asarray(self.space[within], dtype=np.float32)               # (R, D')
            found = [(within[best], values) for best, values in (
                top_k(get_cosine_similarity(query, space, y_norms=self.norms[within]), k)
                for query in queries)]
        return (np.stack([values for _, values in found]),
                np.stack([rows for rows, _ in found]).astype(np.int64))

    def unit_rows(self, rows: np.ndarray) -> np.ndarray:
        """Search-space unit vectors of some rows: (R, D')."""
        return l2_normalize(np.asarray(self.space[rows], dtype=np.float32))


class ApproximateIndex:
    """A FAISS index proposing candidates, re-scored by exact cosine.

    Args:
        built: The index stage's FAISS index (approximate).
        vectors: (N, D) ``float32`` collection vectors it was built from.
        whitening: The whitening of the search space, or None.
        config: Search-time knobs (``rerank``, ``ef_search``, ``nprobe``).
    """

    approximate = True

    def __init__(self, built: VectorIndex, vectors: np.ndarray,
                 whitening: Optional[Whitening], config: IndexConfig):
        self.built, self.vectors, self.whitening, self.config = built, vectors, whitening, config

    @property
    def kind(self) -> str:
        """``hnsw`` or ``ivfpq``."""
        return self.built.kind

    def search(self, queries: np.ndarray, k: int, within: Optional[np.ndarray] = None
               ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows of each query (Q, D'): (scores, rows), each (Q, k).

        ``k x rerank`` FAISS candidates are re-scored by exact cosine, so every score
        is a true cosine; equal scores come in row order, as in the exact scan. Where
        FAISS found fewer than ``k``, rows are -1 and scores NaN. ``within``: (R,)
        sorted rows the search is limited to, filtered inside FAISS; None for all.
        """
        found = self.built.candidates(queries, k * self.config.rerank, self.config,
                                      within)                                       # (Q, K)
        scores = np.full((queries.shape[0], k), np.nan, dtype=np.float32)
        rows = np.full((queries.shape[0], k), -1, dtype=np.int64)
        for i, query in enumerate(queries):
            candidates = np.unique(found[i][found[i] >= 0])                         # (K',)
            best, values = top_k(get_cosine_similarity(query, self.unit_rows(candidates)), k)
            scores[i, :best.shape[0]], rows[i, :best.shape[0]] = values, candidates[best]
        return scores, rows

    def unit_rows(self, rows: np.ndarray) -> np.ndarray:
        """Search-space unit vectors of some sorted rows: (R, D')."""
        return space_rows(self.vectors, self.whitening, rows)


SearchIndex = Union[ExactIndex, ApproximateIndex]


def check_index(vectors: np.ndarray, names: np.ndarray,
                images: Optional[np.ndarray] = None) -> None:
    """Checks that the index arrays have the designed form and are row-aligned.

    Raises:
        ArtifactError: Wrong shape or dtype, empty, duplicate names, or arrays whose
            row counts differ (artifacts from different runs, or tampered with).
    """
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise ArtifactError(f"vectors must be (N, D) float32, got {vectors.shape} "
                            f"{vectors.dtype}")
    if names.ndim != 1 or names.dtype.kind != "U":
        raise ArtifactError(f"image names must be (N,) text, got {names.shape} {names.dtype}")
    if names.shape[0] != vectors.shape[0]:
        raise ArtifactError(f"{names.shape[0]} image names for {vectors.shape[0]} vectors: "
                            "names and vectors are out of step")
    if images is not None and images.shape[0] != vectors.shape[0]:
        raise ArtifactError(f"{images.shape[0]} images for {vectors.shape[0]} vectors: "
                            "landing images and vectors are out of step")
    if vectors.shape[0] == 0:
        raise ArtifactError("the index is empty")
    if np.unique(names).shape[0] != names.shape[0]:
        raise ArtifactError("the image names are not unique")
