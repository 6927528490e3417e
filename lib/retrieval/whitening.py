"""PCA whitening of embeddings, fitted on the database and applied to database and query.

The whitening stage fits it on the collection's vectors and saves it as a ``.npz`` of
plain arrays (no pickle); :class:`lib.retrieval.engine.ImageSearchEngine` loads the same file and
applies it to the collection and to every query, so serving and evaluation use the
very fit the pipeline made. A vector is L2-normalised, centred on the database mean,
projected on the top ``dim`` principal components and divided by their standard
deviations; cosine similarity then normalises the result.

``dim: 0`` (the default) switches whitening off: the artifact then records only that,
and search is exactly the unwhitened cosine of the design.
"""
import dataclasses
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from lib.artifacts import atomic_path
from lib.config import positive_int
from lib.errors import ArtifactError, ConfigError, PathLike
from lib.retrieval.similarity import l2_normalize

logger = logging.getLogger(__name__)

_CHUNK = 8192          # rows per step when fitting or applying
_EIG_FLOOR = 1e-12     # relative floor on eigenvalues (guards against division by ~0)


@dataclasses.dataclass(frozen=True)
class Whitening:
    """A fitted PCA whitening.

    Attributes:
        mean: (D,) ``float32`` mean of the L2-normalised database vectors.
        projection: (D, d) ``float32``: principal axes divided by their standard deviations.
    """

    mean: np.ndarray
    projection: np.ndarray

    @property
    def input_dim(self) -> int:
        """Length of the vectors it takes."""
        return int(self.projection.shape[0])

    @property
    def dim(self) -> int:
        """Length of the vectors it gives."""
        return int(self.projection.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Whitens (N, D) vectors (a memmap is fine) into (N, d) ``float32``.

        Raises:
            ValueError: The vectors are not (N, D) with this whitening's D.
        """
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"whitening takes (N, {self.input_dim}) vectors, got "
                             f"{vectors.shape}")
        out = np.empty((vectors.shape[0], self.dim), dtype=np.float32)          # (N, d)
        for start in range(0, vectors.shape[0], _CHUNK):
            block = l2_normalize(np.asarray(vectors[start:start + _CHUNK]))     # (C, D)
            out[start:start + block.shape[0]] = (block - self.mean) @ self.projection
        return out


def fit_whitening(vectors: np.ndarray, dim: int) -> Whitening:
    """Fits PCA whitening on database vectors.

    Args:
        vectors: (N, D) embeddings (a memmap is fine; read in chunks).
        dim: Output dimension, 1 <= dim <= min(D, N - 1).

    Returns:
        The fitted whitening. Each axis's sign is fixed (largest component positive),
        so refitting the same vectors gives the same artifact.

    Raises:
        ValueError: Bad shapes.
        ConfigError: A dimension the data cannot support.
    """
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got {vectors.shape}")
    rows, width = vectors.shape
    positive_int(dim, "whitening dim")
    if dim > min(width, rows - 1):
        raise ConfigError(f"whitening.dim {dim} is too large: {rows} database vectors of "
                         f"{width} dimensions support at most {max(min(width, rows - 1), 0)}")
    total = np.zeros(width)                                                  # (D,)
    gram = np.zeros((width, width))                                          # (D, D)
    for start in range(0, rows, _CHUNK):
        block = l2_normalize(np.asarray(vectors[start:start + _CHUNK])).astype(np.float64)
        total += block.sum(axis=0)
        gram += block.T @ block
    mean = total / rows                                                      # (D,)
    covariance = (gram - rows * np.outer(mean, mean)) / (rows - 1)           # (D, D)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)                   # ascending
    order = np.argsort(eigenvalues)[::-1][:dim]
    values = eigenvalues[order]                                              # (d,)
    axes = eigenvectors[:, order]                                            # (D, d)
    floor = _EIG_FLOOR * max(float(eigenvalues.max()), _EIG_FLOOR)
    if values[-1] <= floor:
        raise ConfigError(f"whitening.dim {dim} is too large: the database vectors span "
                         f"only {int((eigenvalues > floor).sum())} dimensions")
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(dim)])   # (d,)
    projection = axes * signs / np.sqrt(values)                              # (D, d)
    return Whitening(mean.astype(np.float32), projection.astype(np.float32))


def save_whitening(path: PathLike, whitening: Optional[Whitening], input_dim: int,
                   rows: int) -> None:
    """Atomically saves a whitening (or the record that it is off) as ``.npz``.

    Args:
        path: The ``.npz`` file.
        whitening: The fit, or None for ``dim: 0``.
        input_dim: Length of the database vectors.
        rows: Number of database vectors it was made for.
    """
    dim = 0 if whitening is None else whitening.dim
    mean = np.zeros(0, np.float32) if whitening is None else whitening.mean
    projection = (np.zeros((input_dim, 0), np.float32) if whitening is None
                  else whitening.projection)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, dim=np.int64(dim), input_dim=np.int64(input_dim),
                 rows=np.int64(rows), mean=mean, projection=projection)


def load_whitening(path: PathLike, input_dim: int, rows: int,
                   expected_dim: Optional[int] = None) -> Optional[Whitening]:
    """Loads the whitening artifact (no pickle) and checks it fits the database.

    Args:
        path: The ``.npz`` file.
        input_dim: Length of the database vectors.
        rows: Number of database vectors.
        expected_dim: ``whitening.dim`` of the params, if known: a different saved dim
            means the artifact is stale.

    Returns:
        The whitening, or None when it is off (``dim: 0``).

    Raises:
        ArtifactError: Missing, unreadable, stale or not matching the database.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"whitening artifact {path} is missing: run dvc repro")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("dim", "input_dim", "rows", "mean",
                                                 "projection")}
    except (ValueError, OSError, KeyError, EOFError) as err:
        raise ArtifactError(f"whitening artifact {path} is not valid: {err}") from err
    dim, saved_width, saved_rows = (int(arrays[key]) for key in ("dim", "input_dim", "rows"))
    if expected_dim is not None and dim != expected_dim:
        raise ArtifactError(f"whitening artifact {path} has dim {dim} but params.yaml asks "
                            f"for whitening.dim {expected_dim}: run dvc repro")
    if saved_width != input_dim or saved_rows != rows:
        raise ArtifactError(f"whitening artifact {path} was fitted on {saved_rows} vectors "
                            f"of {saved_width} dimensions, the index holds {rows} of "
                            f"{input_dim}: run dvc repro")
    if dim == 0:
        return None
    mean, projection = arrays["mean"], arrays["projection"]
    if (mean.dtype != np.float32 or projection.dtype != np.float32
            or mean.shape != (input_dim,) or projection.shape != (input_dim, dim)):
        raise ArtifactError(f"whitening artifact {path} holds arrays of the wrong form")
    return Whitening(mean, projection)
