"""The ``ray`` embedding engine: the feature store embedded by an actor pool on a Ray cluster.

The driver (the process running the modelling stage) keeps the artifacts: Ray Data
read tasks pinned to the driver's node read feature-store rows chunk by chunk, a pool
of actors (each loads the *saved* ``model.keras``, shipped through Ray's object store,
with :meth:`Vectorizer.load` and the same runtime rule as the local engine) embeds them
anywhere in the cluster, and the driver writes each returned block of vectors at its
rows of the output, streaming: memory stays a few chunks, whatever N.

Failures: an actor whose process or node dies is restarted and its pending batches are
retried, :data:`RETRIES` times each (Ray's ``max_restarts`` / ``max_task_retries``); an
unreachable cluster address is a one-line :class:`RayClusterError` before any work;
an interrupted run leaves no output behind (the writer is atomic).

Ray is optional (``requirements-ray.txt``) and imported only when this engine runs.
"""
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from lib.arrays import Layout, open_rows, open_rows_writer, RowWriter
from lib.artifacts import atomic_path
from lib.config import ModellingConfig
from lib.embedding.vectorizer import MODEL_FILE, Vectorizer
from lib.errors import ArtifactError, ConfigError, PathLike, RayClusterError
from lib.incremental import copy_rows, RowPlan

logger = logging.getLogger(__name__)

RETRIES = 3                 # restarts of a dead actor, and retries of each of its batches
CONNECT_TIMEOUT_S = 5.0     # to reach the cluster's address before Ray is asked to
LIB_DIR = Path(__file__).resolve().parents[1]     # shipped to the workers (py_modules)
Progress = Callable[[int, int], None]


def _ray():
    """Imports Ray lazily: it is optional, and only the ``ray`` engine needs it."""
    try:
        import ray  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigError("modelling.engine is 'ray' but Ray is not installed (pip install "
                          "-r requirements-ray.txt, or set modelling.engine to local)") from None
    return ray


def cluster_address(configured: Optional[str]) -> Tuple[Optional[str], str]:
    """The address to connect to and where it came from; None starts a local instance."""
    if configured:
        return configured.strip(), "modelling.ray_address"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return (env, "$RAY_ADDRESS") if env else (None, "")


def check_reachable(address: str, source: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fails in seconds, with one line, when nothing answers at ``host:port``.

    Ray itself retries an unreachable address for minutes before it gives up.

    Raises:
        RayClusterError: Not ``host:port``, a Ray Client address, or nothing listening.
    """
    if address.startswith("ray://"):
        raise RayClusterError(f"{source} {address!r}: Ray Client addresses are not supported "
                              "(the driver reads the feature store on its own node): run the "
                              "stage on a cluster node and give the head's host:port")
    if address == "auto":                      # Ray finds the cluster started on this node
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayClusterError(f"{source} {address!r} is not host:port (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise RayClusterError(
            f"cannot reach the Ray cluster at {address} ({source}): {reason}; start one with "
            "`ray start --head`, or unset the address to use a local Ray instance") from None


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, num_cpus: Optional[int] = None) -> Iterator[Any]:
    """Connects to the cluster at ``address`` (see :func:`cluster_address`), or starts a
    local Ray instance with ``num_cpus`` (default: this machine's cores); disconnects
    (and stops a local instance) on exit.

    Yields:
        The ``ray`` module.

    Raises:
        RayClusterError: The cluster cannot be reached (checked before anything runs).
        ConfigError: Ray is not installed.
    """
    ray = _ray()
    target, source = cluster_address(address)
    options: Dict[str, Any] = {
        "runtime_env": {"py_modules": [str(LIB_DIR)]}, "log_to_driver": True,
        "logging_level": logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.WARNING}
    if target is None:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 **options)
    else:
        check_reachable(target, source)
        try:
            ray.init(address=target, **options)
        except ConnectionError as err:
            raise RayClusterError(f"cannot connect to the Ray cluster at {target} ({source}): "
                                  f"{err}; is it a Ray head's GCS port (6379 by default)?"
                                  ) from None
    logger.info("ray: %s, %s CPUs", "local instance" if target is None else target,
                ray.cluster_resources().get("CPU", 0))
    try:
        yield ray
    finally:
        ray.shutdown()


def _read_rows(batch: Dict[str, np.ndarray], features: str) -> Dict[str, np.ndarray]:
    """Ray Data task on the driver's node: the feature-store rows a batch names."""
    rows = np.asarray(batch["data"], dtype=np.int64)                    # (C,) sorted
    reader = open_rows(features, dtype=np.float32, ndim=4)             # (N, S, S, 3)
    runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)       # contiguous runs
    return {"row": rows,
            "features": np.concatenate([reader.read(run[0], run[-1] + 1) for run in runs])}


class EmbeddingActor:
    """Ray Data actor: the saved vectorizer model, loaded once, embedding batches.

    Args:
        model: ``[ref]``, the object-store reference of the ``model.keras`` bytes.
        digest: Their SHA-256 (names the worker's local copy).
        batch_size: Images per forward pass.
        runtime: ``modelling.runtime``, resolved on the worker by the usual rule.
    """

    def __init__(self, model: List[Any], digest: str, batch_size: int, runtime: str):
        folder = Path(tempfile.gettempdir()) / "image-search-ray" / digest
        if not (folder / MODEL_FILE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / MODEL_FILE, suffix=".keras") as tmp:
                tmp.write_bytes(_ray().get(model[0]))
        self.vectorizer = Vectorizer.load(folder, batch_size=batch_size, runtime=runtime)
        logger.info("actor %d: model loaded, runtime %s", os.getpid(), self.vectorizer.runtime)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {"row": batch["row"],
                "vector": self.vectorizer.transform(batch["features"])}     # (C, D)


def _actors(ray, modelling: ModellingConfig) -> int:
    """The pool size: ``ray_actors``, or one per ``ray_actor_cpus`` CPUs of the cluster."""
    if modelling.ray_actors:
        return modelling.ray_actors
    return max(1, int(ray.cluster_resources().get("CPU", 1) // modelling.ray_actor_cpus))


def _dataset(ray, features: Path, vectorizer: Vectorizer, modelling: ModellingConfig,
             rows: np.ndarray):
    """The lazy Ray Data pipeline: row ids -> feature rows (driver node) -> vectors."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    size = modelling.chunk_size                 # one block per chunk: the unit of streaming
    # Row ids from the driver's memory (ray.data.range would need a CPU for its read
    # tasks, and the actors may hold every CPU of the cluster).
    ids = ray.data.from_numpy([rows[i:i + size] for i in range(0, len(rows), size)])
    blob = Path(vectorizer.source).read_bytes()
    if hashlib.sha256(blob).hexdigest() != vectorizer.source_sha256:
        raise ArtifactError(f"{vectorizer.source} changed since it was loaded: run the stage "
                            "again")
    actors = _actors(ray, modelling)
    logger.info("ray: %d rows to %d actors of %d CPUs", len(rows), actors,
                modelling.ray_actor_cpus)
    reads = ids.map_batches(
        _read_rows, batch_size=size, num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=2),
        label_selector={"ray.io/node-id": ray.get_runtime_context().get_node_id()},
        fn_kwargs={"features": str(features)})
    with warnings.catch_warnings():
        # Ray 2.60 deprecates these remote args (removal: 2.64) without a named successor;
        # without them Ray Data restarts actors and retries batches forever.
        warnings.simplefilter("ignore", DeprecationWarning)
        return reads.map_batches(
            EmbeddingActor, batch_size=size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=modelling.ray_actor_cpus, max_restarts=RETRIES, max_task_retries=RETRIES,
            fn_constructor_kwargs={"model": [ray.put(blob)],
                                   "digest": hashlib.sha256(blob).hexdigest(),
                                   "batch_size": modelling.batch_size,
                                   "runtime": modelling.runtime})


def embed_rows(features_in: PathLike, out: RowWriter, vectorizer: Vectorizer,
               modelling: ModellingConfig, rows: Optional[np.ndarray] = None,
               out_rows: Optional[np.ndarray] = None,
               progress: Optional[Progress] = None) -> int:
    """Embeds feature-store rows on the connected Ray cluster into an open writer.

    Args:
        features_in: The feature store, (N, S, S, 3) ``float32``, on the driver's node.
        out: Where the vectors go, (M', D).
        vectorizer: The saved model as loaded on the driver (its ``source`` file is
            shipped to the actors, which load it themselves).
        modelling: Chunk and batch sizes, runtime, actor pool.
        rows: Sorted, distinct feature-store rows to embed (default: all N).
        out_rows: The output row of each of ``rows`` (default: the same numbers).
        progress: Called with (rows done, rows to do) after each block.

    Returns:
        The number of vectors written.

    Raises:
        ArtifactError: The feature store is missing or not images of the model's shape.
        ValueError: ``rows`` not sorted and distinct, out of range, or not one
            output row each.
    """
    ray = _ray()
    features = Path(features_in).resolve()
    total = len(open_rows(features, dtype=np.float32, ndim=4,
                          trailing_shape=vectorizer.input_shape))
    rows = np.arange(total, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= total):
        raise ValueError(f"rows must be sorted, distinct and within [0, {total})")
    targets = rows if out_rows is None else np.asarray(out_rows, dtype=np.int64)  # (M,)
    if targets.shape != rows.shape:
        raise ValueError(f"{len(targets)} output rows for {len(rows)} rows")
    done = np.zeros(len(rows), dtype=bool)                              # (M,)
    if len(rows):
        for batch in _dataset(ray, features, vectorizer, modelling, rows).iter_batches(
                batch_size=None, batch_format="numpy"):
            index = np.searchsorted(rows, batch["row"])                 # (C,) positions
            _write(out, targets[index], batch["vector"])
            done[index] = True
            if progress is not None:
                progress(int(done.sum()), len(rows))
            logger.info("embedding: %d/%d images", int(done.sum()), len(rows))
    if not done.all():
        raise RuntimeError(f"ray returned {int(done.sum())} of {len(rows)} rows")
    return len(rows)


def _write(out: RowWriter, targets: np.ndarray, vectors: np.ndarray) -> None:
    """Writes (C, D) ``vectors`` at output rows ``targets``, one write per contiguous run."""
    order = np.argsort(targets, kind="stable")
    targets, vectors = targets[order], vectors[order]                    # (C,), (C, D)
    for run in np.split(np.arange(len(targets)), np.flatnonzero(np.diff(targets) != 1) + 1):
        out[int(targets[run[0]]):int(targets[run[-1]]) + 1] = vectors[run]


def run_ray_embedding(features_in: PathLike, vectors_out: PathLike, vectorizer: Vectorizer,
                      modelling: ModellingConfig, rows: Optional[np.ndarray] = None,
                      progress: Optional[Progress] = None,
                      plan: Optional[RowPlan] = None,
                      storage: Optional[Layout] = None) -> int:
    """Embeds the feature store (or its ``rows``) on Ray into a new ``.npy``, atomically.

    The Ray counterpart of :func:`lib.embedding.vectorizer.run_embedding`: row ``i`` of the output
    is the vector of feature row ``i`` (of ``rows[i]`` when given). With an incremental
    ``plan`` (see :mod:`lib.incremental.rows`) the output has every feature row: the rows of
    ``plan.compute`` are embedded on Ray, the others copied from the previous vectors.
    Call it inside :func:`ray_session`. ``storage`` (:class:`lib.arrays.Layout`) may
    write the planned output as shards.

    Returns:
        The number of vectors written.
    """
    # pylint: disable=too-many-arguments
    if plan is not None:
        total = len(plan.sources)
        with open_rows_writer(vectors_out, (total, vectorizer.dim), np.float32,
                              storage, plan.previous, plan.sources) as out:
            if plan.previous is not None:
                previous = open_rows(plan.previous, dtype=np.float32, ndim=2,
                                     trailing_shape=(vectorizer.dim,))      # (N', D)
                copy_rows(previous, out, plan.sources, modelling.chunk_size)
            if len(plan.compute):
                embed_rows(features_in, out, vectorizer, modelling, plan.compute,
                           plan.compute, progress)
        return total
    count = len(open_rows(features_in)) if rows is None else len(rows)
    with open_rows_writer(vectors_out, (count, vectorizer.dim), np.float32) as out:
        return embed_rows(features_in, out, vectorizer, modelling, rows,
                          np.arange(count) if rows is not None else None, progress)
