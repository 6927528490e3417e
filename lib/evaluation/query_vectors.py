"""The labelled queries' vectors, kept between runs of the evaluate stage.

A query's vector depends on its photo's bytes and on what embeds it: the saved model and
inference model (their md5s as ``dvc.lock`` records them), the settings and code that
made the collection's vectors (the modelling stage's row fingerprint,
:mod:`lib.incremental.rows`) and the serving path's own code and settings. It does not
depend on the collection, so an update of the collection, which reruns the evaluate
stage, reuses them instead of embedding every query again. They are kept in
``.dvc/tmp/query-vectors.npz`` (DVC's scratch folder, not versioned): the fingerprint of
all of the above, each query's content key and its (D,) vector. Anything that differs,
or a missing or unreadable file, embeds again; the metrics are the same either way.
"""
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from lib.artifacts import atomic_path, recorded_output
from lib.config import Config
from lib.errors import ArtifactError, PathLike
from lib.incremental import code_files, content_key, file_sha256, RowIndex

logger = logging.getLogger(__name__)

CACHE = Path(".dvc") / "tmp" / "query-vectors.npz"


def fingerprint(root: PathLike, config: Config, script: PathLike) -> Optional[str]:
    """What the query vectors depend on besides the photos; None when it is not known
    (no row index, or outputs ``dvc.lock`` does not record)."""
    root, paths = Path(root), config.paths.resolve(root)
    try:
        rows = RowIndex.load(paths["vector_rows"]).fingerprint
    except ArtifactError:
        return None
    models = [recorded_output(root, paths[name]) for name in ("model", "inference_model")]
    if any(entry is None or not entry.get("md5") for entry in models):
        return None
    code = {path.as_posix(): file_sha256(path) for path in code_files(script)}
    made_by = {"rows": rows, "models": [entry["md5"] for entry in models], "code": code,
               "etl": config.etl.to_dict(), "modelling": config.modelling.to_dict()}
    return hashlib.sha256(json.dumps(made_by, sort_keys=True, default=str).encode()).hexdigest()


def _load(path: Path, wanted: str) -> Dict[str, np.ndarray]:
    """``{content key: vector}`` of a cache made with fingerprint ``wanted``, else empty."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["fingerprint"]) != wanted:
                return {}
            keys, vectors = np.array(data["keys"]), np.array(data["vectors"])   # (Q,), (Q, D)
            return {str(key): vector for key, vector in zip(keys, vectors)}
    except (OSError, ValueError, KeyError, EOFError) as err:
        logger.info("query vectors not reused (%s): embedding them", err)
        return {}


def _key(path: Path) -> str:
    """A photo's content key; an unreadable one gets none (embedding it says why)."""
    try:
        return content_key(path)
    except OSError:
        return ""


def query_vectors(root: PathLike, paths: List[Path], made_by: Optional[str],
                  embed: Callable[[Path], np.ndarray]) -> List[np.ndarray]:
    """The (D,) vector of each query photo: kept ones reused, the others embedded.

    Args:
        root: The project root (the cache is in its ``.dvc/tmp``).
        paths: The query photos.
        made_by: :func:`fingerprint`; None embeds every query and keeps nothing.
        embed: Embeds one photo as serving does.
    """
    if made_by is None:
        return [embed(path) for path in paths]
    cache = Path(root) / CACHE
    kept = _load(cache, made_by) if cache.is_file() else {}
    keys = [_key(path) for path in paths]
    started = time.perf_counter()
    vectors = [kept[key] if key in kept else embed(path) for key, path in zip(keys, paths)]
    reused = sum(key in kept for key in keys)
    logger.info("query vectors: %d reused, %d read and embedded as serving does in %.1f s",
                reused, len(keys) - reused, time.perf_counter() - started)
    if reused < len(keys) and vectors and all(keys):
        with atomic_path(cache, suffix=".npz") as tmp:
            np.savez(tmp, fingerprint=np.array(made_by), keys=np.array(keys),
                     vectors=np.stack(vectors).astype(np.float32))          # (Q, D)
    return vectors
