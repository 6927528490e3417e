"""The index artifact: building (or extending) it, saving it atomically, loading it checked.

The artifact is a folder (``paths.index``):

- ``meta.json``: kind, build params, the collection it covers (rows, dimension, the
  whitening fit) and the search-space dimension;
- ``index.faiss``: the FAISS index (absent for ``exact``);
- ``rows.npy``: (E,) ``int64``, the collection row of each index entry;
- ``keys.npy``: (E,) ``uint64``, each entry's content key
  (:func:`lib.retrieval.index_build.row_keys`).

An index that does not match the collection it is loaded with (rows, dimension,
whitening, kind or build params, or sampled content keys) is refused as stale.
"""
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from lib.artifacts import atomic_path, load_npy
from lib.config import IndexConfig
from lib.errors import ArtifactError, PathLike
from lib.retrieval.index import space_rows, VectorIndex
from lib.retrieval.index_build import (
    build_faiss, build_params, check_config, resolve_kind, row_keys, whitening_fingerprint)
from lib.retrieval.whitening import Whitening

logger = logging.getLogger(__name__)

FORMAT = 1
META, FAISS_FILE, ROWS, KEYS = "meta.json", "index.faiss", "rows.npy", "keys.npy"
KEY_KIND = "vector-blake2b-64"
_CHUNK = 8192
_SPOT_CHECKS = 16     # entries whose content key is re-hashed at load


def build_index(vectors: np.ndarray, whitening: Optional[Whitening], config: IndexConfig,
                previous: Optional[VectorIndex] = None,
                keys: Optional[np.ndarray] = None) -> Tuple[VectorIndex, str]:
    """Builds the index ``config`` asks for, extending ``previous`` when it can.

    Args:
        vectors: (N, D) collection vectors (a memmap is fine; read in chunks).
        whitening: The whitening fit, or None when off.
        config: The ``index`` settings.
        previous: The last built index (see :func:`load_previous`), or None.
        keys: (N,) content key per row; default :func:`lib.retrieval.index_build.row_keys`. Any key
            that changes when a row's vector changes will do (e.g. the incremental
            pipeline's per-photo content hashes).

    Returns:
        The index and one line saying what was done.

    Raises:
        ConfigError: Settings the collection cannot support.
    """
    rows, width = vectors.shape
    dim = whitening.dim if whitening is not None else width
    kind = resolve_kind(config, rows, dim)
    check_config(config, kind, rows, dim)
    meta: Dict[str, Any] = {"format": FORMAT, "kind": kind, "params": build_params(config, kind),
                            "rows": rows, "input_dim": width, "dim": dim,
                            "whitening": whitening_fingerprint(whitening),
                            "key_kind": KEY_KIND if keys is None else "given"}
    empty = np.zeros(0, dtype=np.int64)
    if kind == "exact":
        return (VectorIndex(kind, meta, empty, empty.astype(np.uint64)),
                f"exact scan over {rows} vectors: nothing to build")
    keys = row_keys(vectors) if keys is None else np.asarray(keys, dtype=np.uint64)

    def space(chosen: np.ndarray) -> np.ndarray:
        return space_rows(vectors, whitening, chosen)

    plan = plan_update(previous, keys, meta)
    if plan is None:
        index, meta["params"] = build_faiss(kind, config, dim, rows, space)
        meta["trained_rows"] = rows
        kept, added = empty, np.arange(rows, dtype=np.int64)
        action = f"built a {kind} index over {rows} vectors"
    else:
        index, (kept, added) = previous.faiss_index, plan
        meta["params"] = previous.meta["params"]
        meta["trained_rows"] = previous.meta["trained_rows"]
        action = (f"added {added.shape[0]} vectors to the previous {kind} index of "
                  f"{kept.shape[0]} (no rebuild)")
    for start in range(0, added.shape[0], _CHUNK):
        index.add(np.ascontiguousarray(space(added[start:start + _CHUNK])))      # (C, D')
        logger.debug("index: %d/%d vectors added", start + _CHUNK, added.shape[0])
    entries = np.concatenate([kept, added])                                      # (N,)
    return VectorIndex(kind, meta, entries, keys[entries], index), action


def save_index(path: PathLike, index: VectorIndex) -> None:
    """Writes the index folder atomically (a half-written index never replaces one)."""
    import faiss  # pylint: disable=import-outside-toplevel
    with atomic_path(path) as tmp:
        tmp.mkdir()
        (tmp / META).write_text(json.dumps(index.meta, indent=2, sort_keys=True) + "\n",
                                encoding="utf-8")
        if index.approximate:
            np.save(tmp / ROWS, index.rows, allow_pickle=False)
            np.save(tmp / KEYS, index.keys, allow_pickle=False)
            faiss.write_index(index.faiss_index, str(tmp / FAISS_FILE))


def read_index(path: PathLike) -> VectorIndex:
    """Reads an index folder as it is, unchecked against any collection.

    Raises:
        ArtifactError: Missing, unreadable, or inconsistent within itself.
    """
    import faiss  # pylint: disable=import-outside-toplevel
    path = Path(path)
    if not (path / META).is_file():
        raise ArtifactError(f"index artifact {path} is missing: run dvc repro")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        kind = meta["kind"]
        valid = (meta["format"] == FORMAT and kind in ("exact", "hnsw", "ivfpq")
                 and all(isinstance(meta[key], int) for key in ("rows", "input_dim", "dim")))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"index artifact {path} is not valid: {err}") from err
    if not valid:
        raise ArtifactError(f"index artifact {path} is not valid: format or kind unknown")
    empty = np.zeros(0, dtype=np.int64)
    if kind == "exact":
        return VectorIndex(kind, meta, empty, empty.astype(np.uint64))
    rows = load_npy(path / ROWS, dtype=np.int64, ndim=1)
    keys = load_npy(path / KEYS, dtype=np.uint64, ndim=1)
    if not (path / FAISS_FILE).is_file():
        raise ArtifactError(f"index artifact {path} lacks {FAISS_FILE}: run dvc repro")
    try:
        index = faiss.read_index(str(path / FAISS_FILE))
    except RuntimeError as err:                 # FAISS reports a bad file this way
        raise ArtifactError(f"index artifact {path / FAISS_FILE} cannot be read: "
                            f"{str(err).splitlines()[0]}") from err
    entries = meta["rows"]
    if not (index.ntotal == rows.shape[0] == keys.shape[0] == entries and index.d == meta["dim"]
            and np.array_equal(np.bincount(rows, minlength=entries), np.ones(entries))):
        raise ArtifactError(f"index artifact {path} is inconsistent: {index.ntotal} entries of "
                            f"{index.d} dimensions for {entries} rows: run dvc repro")
    return VectorIndex(kind, meta, rows, keys, index)


def load_previous(path: PathLike) -> Optional[VectorIndex]:
    """The last built index, to extend; None (rebuild) if there is none usable."""
    if not (Path(path) / META).is_file():
        return None
    try:
        return read_index(path)
    except ArtifactError as err:
        logger.warning("previous index not reusable, rebuilding: %s", err)
        return None


def load_index(path: PathLike, vectors: np.ndarray, whitening: Optional[Whitening],
               config: IndexConfig) -> VectorIndex:
    """Loads the index and checks that it was built for these vectors and settings.

    Raises:
        ArtifactError: Missing, unreadable, or stale: built for other rows, another
            dimension or whitening, or another kind or build params than ``config``
            asks for; or sampled entries whose content no longer matches.
    """
    index = read_index(path)
    meta, (rows, width) = index.meta, vectors.shape
    dim = whitening.dim if whitening is not None else width
    if (meta["rows"], meta["input_dim"], meta["dim"]) != (rows, width, dim):
        raise ArtifactError(f"index artifact {path} was built for {meta['rows']} vectors of "
                            f"{meta['input_dim']} dimensions (search space {meta['dim']}), the "
                            f"collection holds {rows} of {width} (search space {dim}): "
                            "run dvc repro")
    if meta["whitening"] != whitening_fingerprint(whitening):
        raise ArtifactError(f"index artifact {path} was built with another whitening fit: "
                            "run dvc repro")
    kind = resolve_kind(config, rows, dim)
    asked = build_params(config, kind)
    built = {key: value for key, value in meta["params"].items() if key != "lists"}
    if (meta["kind"], built) != (kind, asked):
        raise ArtifactError(f"index artifact {path} is {meta['kind']} {built}, params.yaml asks "
                            f"for {kind} {asked}: run dvc repro")
    if index.approximate and meta.get("key_kind") == KEY_KIND:
        sample = np.unique(np.linspace(0, rows - 1, min(_SPOT_CHECKS, rows)).astype(np.int64))
        if not np.array_equal(row_keys(vectors, index.rows[sample]), index.keys[sample]):
            raise ArtifactError(f"index artifact {path} holds other vectors than the "
                                "collection: run dvc repro")
    return index


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
