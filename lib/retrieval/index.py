"""The vector index serving ranks through: the exact scan, or a FAISS index.

Both answer one interface, ``search(queries, k) -> (scores, rows)`` over the search
space (the collection's vectors, whitened when whitening is on), and ``unit_rows``:
:class:`ExactIndex` is the design's linear scan, bit for bit; :class:`ApproximateIndex`
asks the index stage's FAISS index (built L2-normalised, so that FAISS's L2 order is
the cosine order) for ``k x rerank`` candidates and re-scores them with the exact
cosine, so every score is a true cosine.

The artifact (:mod:`lib.retrieval.index_store`) also records which collection row each index
entry holds and a content key per entry, so a collection that only grew gets its new
vectors added to the previous index instead of a rebuild (:func:`plan_update`).
"""
import dataclasses
import hashlib
import logging
import math
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from lib.config import IndexConfig
from lib.errors import ArtifactError, ConfigError
from lib.retrieval.similarity import get_cosine_similarity, l2_normalize, top_k
from lib.retrieval.whitening import Whitening

logger = logging.getLogger(__name__)

_CHUNK = 8192          # rows per step when building, adding or hashing
_SCAN = 65536          # rows scored per step by the exact scan
_TRAIN_MAX = 131072    # IVF-PQ training sample cap
_SEED = 1234           # training sample and k-means seed (reproducible builds)
# The params that shape a built index, by kind (search-time knobs are not among them).
BUILD_PARAMS = {"exact": (), "hnsw": ("hnsw_m", "ef_construction"),
                "ivfpq": ("nlist", "pq_m", "pq_bits")}


def resolve_kind(config: IndexConfig, rows: int, dim: int) -> str:
    """The kind ``config`` asks for at this size: ``auto`` decided by rows and memory."""
    if config.kind != "auto":
        return config.kind
    if rows < config.exact_below:
        return "exact"
    flat_mb = rows * dim * 4 / 2 ** 20
    return "hnsw" if flat_mb <= config.flat_budget_mb else "ivfpq"


def build_params(config: IndexConfig, kind: str) -> Dict[str, int]:
    """The settings a ``kind`` index is built with (as asked: ``nlist`` 0 stays 0)."""
    return {key: getattr(config, key) for key in BUILD_PARAMS[kind]}


def ivf_lists(config: IndexConfig, rows: int) -> int:
    """IVF lists: ``nlist``, or about sqrt(N) with at least 39 vectors per list."""
    if config.nlist:
        return config.nlist
    return max(1, min(round(math.sqrt(rows)), rows // 39))


def check_config(config: IndexConfig, kind: str, rows: int, dim: int) -> None:
    """Refuses settings the collection cannot support, naming the param and its limit.

    Raises:
        ConfigError: More IVF lists than vectors, too few vectors to train PQ codes,
            ``pq_m`` not dividing the dimension, or ``pq_bits`` above 16.
    """
    if kind != "ivfpq":
        return
    if config.nlist > rows:
        raise ConfigError(f"index.nlist {config.nlist} is more than the {rows} vectors of the "
                          f"collection: at most {rows} (or 0 for automatic)")
    if dim % config.pq_m:
        raise ConfigError(f"index.pq_m {config.pq_m} must divide the vector dimension {dim}")
    if config.pq_bits > 16:
        raise ConfigError(f"index.pq_bits {config.pq_bits} is too large: at most 16")
    if rows < 2 ** config.pq_bits:
        raise ConfigError(f"index.pq_bits {config.pq_bits} needs at least "
                          f"{2 ** config.pq_bits} vectors to train its codes, the collection "
                          f"has {rows}: lower index.pq_bits or use index.kind hnsw or exact")


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


def row_keys(vectors: np.ndarray, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """Content key of each row: the first 8 bytes of BLAKE2b of its float32 bytes.

    Returns:
        (R,) ``uint64``.
    """
    rows = np.arange(vectors.shape[0]) if rows is None else np.asarray(rows)
    keys = np.empty(rows.shape[0], dtype=np.uint64)                      # (R,)
    for start in range(0, rows.shape[0], _CHUNK):
        block = np.ascontiguousarray(vectors[rows[start:start + _CHUNK]], dtype=np.float32)
        keys[start:start + block.shape[0]] = [
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
            for row in block]
    return keys


def whitening_fingerprint(whitening: Optional[Whitening]) -> str:
    """Identifies a whitening fit (``off`` when there is none)."""
    if whitening is None:
        return "off"
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(whitening.mean).tobytes())
    digest.update(np.ascontiguousarray(whitening.projection).tobytes())
    return digest.hexdigest()


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

    def candidates(self, queries: np.ndarray, k: int, config: IndexConfig) -> np.ndarray:
        """Collection rows of the ``k`` nearest entries of each query, by FAISS.

        Args:
            queries: (Q, D') search-space vectors (normalised here).
            k: Candidates per query (clipped to the entries).
            config: Search-time knobs (``ef_search``, ``nprobe``).

        Returns:
            (Q, k') ``int64`` rows, nearest first; -1 where FAISS found fewer.
        """
        import faiss  # pylint: disable=import-outside-toplevel
        k = min(int(k), self.rows.shape[0])
        unit = np.ascontiguousarray(l2_normalize(queries), dtype=np.float32)   # (Q, D')
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(config.ef_search, k)
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = min(config.nprobe, self.meta["params"]["lists"])
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

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows of each query (Q, D'): (scores, rows), each (Q, k').

        ``k'`` is ``k`` clipped to the collection; equal scores come in row order.
        """
        found = [top_k(self.scores(query), k) for query in queries]
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

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows of each query (Q, D'): (scores, rows), each (Q, k).

        ``k x rerank`` FAISS candidates are re-scored by exact cosine, so every score
        is a true cosine; equal scores come in row order, as in the exact scan. Where
        FAISS found fewer than ``k``, rows are -1 and scores NaN.
        """
        found = self.built.candidates(queries, k * self.config.rerank, self.config)  # (Q, K)
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


def build_faiss(kind: str, config: IndexConfig, dim: int, rows: int,
                sample: Callable[[np.ndarray], np.ndarray]) -> Tuple[Any, Dict[str, int]]:
    """An empty, trained FAISS index of ``kind`` and the params it was made with.

    Args:
        sample: Maps sorted row numbers to their search-space vectors (IVF training).
    """
    import faiss  # pylint: disable=import-outside-toplevel
    params = dict(build_params(config, kind))
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m)
        index.hnsw.efConstruction = config.ef_construction
        return index, params
    lists = ivf_lists(config, rows)
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, lists, config.pq_m, config.pq_bits)
    index.cp.seed = _SEED
    index.pq.cp.seed = _SEED
    count = min(rows, max(lists, 2 ** config.pq_bits) * 40, _TRAIN_MAX)
    chosen = np.sort(np.random.default_rng(_SEED).choice(rows, count, replace=False))
    logger.info("training %d IVF lists and %d x %d-bit PQ codes on %d vectors", lists,
                config.pq_m, config.pq_bits, count)
    index.train(np.ascontiguousarray(sample(chosen)))  # pylint: disable=no-value-for-parameter
    params["lists"] = lists
    return index, params
