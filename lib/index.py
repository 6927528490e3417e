"""The vector index serving ranks through: the exact scan, or a FAISS index.

The index stage builds it over the search space (the collection's vectors, whitened
when whitening is on, L2-normalised so that FAISS's L2 order is the cosine order) and
:class:`lib.search.ImageSearchEngine` loads it. An approximate index only proposes
candidates: ``n x rerank`` of them are re-scored with the exact cosine, so every
score printed is a true cosine. ``exact`` builds nothing and the engine keeps the
design's linear scan, bit for bit.

The artifact (:mod:`lib.index_store`) also records which collection row each index
entry holds and a content key per entry, so a collection that only grew gets its new
vectors added to the previous index instead of a rebuild (:func:`plan_update`).
"""
import dataclasses
import hashlib
import logging
import math
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from lib.config import IndexConfig
from lib.errors import ConfigError
from lib.similarity import get_cosine_similarity, l2_normalize, top_k
from lib.whitening import Whitening

logger = logging.getLogger(__name__)

_CHUNK = 8192          # rows per step when building, adding or hashing
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

    def search(self, query: np.ndarray, n: int, config: IndexConfig,
               space: Callable[[np.ndarray], np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` best rows for one query: FAISS candidates re-scored by exact cosine.

        Args:
            query: (D',) search-space vector.
            n: Results wanted.
            config: Search-time knobs (``rerank``, ``ef_search``, ``nprobe``).
            space: Maps sorted collection rows (R,) to their search-space vectors (R, D').

        Returns:
            (rows, cosines), best first; equal scores in row order, as the exact scan.
        """
        found = self.candidates(query[np.newaxis], n * config.rerank, config)[0]   # (K,)
        rows = np.unique(found[found >= 0])                                         # (K',)
        scores = get_cosine_similarity(query, space(rows))                          # (K',)
        best, values = top_k(scores, n)
        return rows[best], values


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


def plan_update(previous: Optional[VectorIndex], keys: np.ndarray,
                meta: Dict[str, Any]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Whether ``previous`` can be extended to the current collection, and how.

    Extending is possible when the previous index has the same kind, build params,
    search space (dimension and whitening), and every entry's content is still in the
    collection (a removed or changed photo needs a rebuild: FAISS graphs cannot drop
    entries). An IVF index is rebuilt once the collection is more than twice what its
    lists were trained on.

    Args:
        previous: The last built index, or None.
        keys: (N,) content key of every current row (:func:`row_keys`, or any key
            that changes when a row's vector changes).
        meta: The ``kind``, ``params``, ``dim`` and ``whitening`` the index must have
            (``params`` as asked, before ``lists`` is resolved).

    Returns:
        None for a rebuild, else ((E,) current row of each previous entry, (A,) rows
        to add, ascending).
    """
    if previous is None or not previous.approximate:
        return None
    old = previous.meta
    same = (old["kind"] == meta["kind"] and old["dim"] == meta["dim"]
            and old["whitening"] == meta["whitening"]
            and {k: v for k, v in old["params"].items() if k != "lists"} == meta["params"])
    if not same or (meta["kind"] == "ivfpq" and keys.shape[0] > 2 * old["trained_rows"]):
        return None
    order = np.argsort(keys, kind="stable")                               # (N,)
    sorted_keys = keys[order]
    position = np.searchsorted(sorted_keys, previous.keys)                # (E,)
    # Equal keys (the same picture twice) are matched one to one, in row order.
    rank = np.zeros(previous.keys.shape[0], dtype=np.int64)
    seen: Dict[int, int] = {}
    for i, key in enumerate(previous.keys.tolist()):
        rank[i] = seen.get(key, 0)
        seen[key] = rank[i] + 1
    slot = position + rank
    ok = slot < keys.shape[0]
    ok[ok] = sorted_keys[slot[ok]] == previous.keys[ok]
    if not ok.all():
        return None
    kept = order[slot]                                                    # (E,)
    added = np.setdiff1d(np.arange(keys.shape[0]), kept)                  # (A,)
    return kept.astype(np.int64), added.astype(np.int64)
