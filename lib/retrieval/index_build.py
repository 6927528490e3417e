"""Building a FAISS index: which kind, with which params, trained reproducibly.

``auto`` picks the kind by the collection's size and memory (:func:`resolve_kind`);
:func:`check_config` refuses params a kind cannot use; :func:`build_faiss` makes the
empty, trained index; :func:`row_keys` and :func:`whitening_fingerprint` identify what
an index was built from, so that a stale one is refused and a grown collection extends
the previous one (:mod:`lib.retrieval.index_store`).
"""
import hashlib
import logging
import math
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from lib.config import IndexConfig
from lib.errors import ConfigError
from lib.retrieval.whitening import Whitening

logger = logging.getLogger(__name__)

_CHUNK = 8192          # rows per step when hashing
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
