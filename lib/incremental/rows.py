"""Incremental stages: which rows of the previous output a stage may reuse.

Each incremental stage (``etl``, ``feature_engineering``, ``modelling``) writes a small
sidecar, a :class:`RowIndex`, beside its arrays (``rows.npz``, a DVC output like them):

- ``keys``: (N,) ``<U32``, the content key of each output row, in row order: the
  BLAKE2b-128 hex digest of the bytes of the photo the row came from. Names play no
  part: a renamed photo keeps its key, a photo replaced under its name gets a new one.
- ``fingerprint``: ``<U64``, the SHA-256 of everything besides the photo that decides
  a row's values (the :func:`recipe`): the stage's row settings, the hash of every
  code file the stage runs, the upstream stage's fingerprint, and what the stage adds
  (the model weights' hash, the runtime).
- ``recipe``: the JSON those ingredients were hashed from, for people to read.

A stage reuses a previous row only when the fingerprints are equal and the keys match
(:func:`plan_rows`); anything else is computed again, so a changed setting, code file
or model always recomputes the stage in full.
"""
import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, Mapping, NamedTuple, Optional,
                    Tuple)

import numpy as np

from lib.arrays import (
    ArraySource, Layout, open_rows, open_rows_writer, pending, RowReader, RowWriter)
from lib.artifacts import atomic_path
from lib.errors import ArtifactError, PathLike
from lib.incremental.code import ROOT, code_files
from lib.progress import progress

KEY_CHARS = 32
# Settings that change only speed or memory, never a row's values: not fingerprinted.
PERFORMANCE_SETTINGS = frozenset({"workers", "chunk_size", "batch_size", "runtime"})


def content_key(path: PathLike) -> str:
    """The content key of a photo file: BLAKE2b-128 of its bytes, 32 hex characters.

    Raises:
        OSError: The file cannot be read.
    """
    with open(path, "rb") as handle:
        return hashlib.file_digest(
            handle, lambda: hashlib.blake2b(digest_size=KEY_CHARS // 2)).hexdigest()


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def row_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """A params section without the settings that change only speed or memory."""
    return {key: value for key, value in settings.items() if key not in PERFORMANCE_SETTINGS}


def recipe(script: PathLike, settings: Mapping[str, Any], upstream: Optional[str] = None,
           **extra: Any) -> Dict[str, Any]:
    """Everything besides the photo that decides a stage's rows (JSON-ready).

    Args:
        script: The stage script; it and its ``lib`` imports are hashed.
        settings: The settings that change row values (see :func:`row_settings`).
        upstream: The fingerprint of the stage whose rows this one reads, if any.
        **extra: Anything else the rows depend on (the weights' hash, the runtime).
    """
    code = {path.relative_to(ROOT).as_posix(): file_sha256(path)
            for path in code_files(script)}
    return {"settings": dict(settings), "code": code, "upstream": upstream, **extra}


@dataclasses.dataclass(frozen=True)
class RowIndex:
    """The content key of each output row and the fingerprint of how rows were made."""

    keys: np.ndarray          # (N,) <U32
    fingerprint: str
    recipe: str = "{}"        # JSON

    @classmethod
    def of(cls, keys: np.ndarray, made_by: Mapping[str, Any]) -> "RowIndex":
        """The index of rows with ``keys`` made by ``made_by`` (a :func:`recipe`)."""
        text = json.dumps(made_by, sort_keys=True)
        return cls(np.asarray(keys, dtype=f"<U{KEY_CHARS}"),
                   hashlib.sha256(text.encode("utf-8")).hexdigest(), text)

    def save(self, path: PathLike) -> None:
        """Writes the sidecar atomically: an ``.npz`` (no pickle), byte-identical for
        equal indexes (fixed zip timestamps), so DVC sees an unchanged index as such."""
        arrays = {"keys": self.keys, "fingerprint": np.array(self.fingerprint),
                  "recipe": np.array(self.recipe)}
        with atomic_path(path, suffix=".npz") as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
                for name, array in arrays.items():
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                    with archive.open(info, "w", force_zip64=True) as handle:
                        np.lib.format.write_array(handle, array, allow_pickle=False)

    @classmethod
    def load(cls, path: PathLike) -> "RowIndex":
        """Reads a sidecar.

        Raises:
            ArtifactError: Missing, unreadable or malformed.
        """
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"row index {path} is missing: run `dvc repro`")
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = np.array(data["keys"])                            # (N,)
                fingerprint, text = str(data["fingerprint"]), str(data["recipe"])
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise ArtifactError(f"row index {path} is not valid: {err}") from err
        if keys.ndim != 1 or keys.dtype.kind != "U":
            raise ArtifactError(f"row index {path} holds keys of shape {keys.shape} and "
                                f"dtype {keys.dtype}, expected (N,) text")
        return cls(keys, fingerprint, text)


class RowPlan(NamedTuple):
    """Which output rows a stage computes and which it copies from its previous output.

    Attributes:
        compute: (K,) ``int64``, sorted: the output rows to compute.
        sources: (N,) ``int64``: for each output row, its row in ``previous``; -1 for
            the rows in ``compute``.
        previous: The previous output array to copy from (a file, or the shard files
            of a sharded one); None when nothing is reused.
    """

    compute: np.ndarray
    sources: np.ndarray
    previous: Optional[ArraySource]

    @classmethod
    def full(cls, total: int) -> "RowPlan":
        """Every row computed, nothing reused."""
        return cls(np.arange(total, dtype=np.int64), np.full(total, -1, np.int64), None)

    @property
    def reused(self) -> int:
        """How many rows are copied."""
        return int(len(self.sources) - len(self.compute))

    def describe(self, what: str) -> str:
        """``what: K of N rows to compute, R reused from the previous output``."""
        return (f"{what}: {len(self.compute)} of {len(self.sources)} rows to compute, "
                f"{self.reused} reused from the previous output")


def plan_rows(keys: np.ndarray, made_by: RowIndex, previous: Optional[RowIndex],
              previous_array: Optional[ArraySource]) -> RowPlan:
    """The rows to compute: those whose key the previous output lacks, or all.

    Args:
        keys: (N,) content keys of the output rows, in row order.
        made_by: The index the new output will have (its fingerprint decides).
        previous: The previous output's index, or None.
        previous_array: The previous output array, or None.

    Returns:
        The plan; every row is computed unless the fingerprints are equal and the
        previous array exists and has one row per previous key.
    """
    if previous is None or previous_array is None or \
            previous.fingerprint != made_by.fingerprint:
        return RowPlan.full(len(keys))
    try:
        rows = len(open_rows(previous_array))
    except ArtifactError:
        return RowPlan.full(len(keys))
    if rows != len(previous.keys):
        return RowPlan.full(len(keys))
    lookup = {key: row for row, key in enumerate(previous.keys.tolist())}
    sources = np.array([lookup.get(key, -1) for key in np.asarray(keys).tolist()],
                       dtype=np.int64)                                    # (N,)
    return RowPlan(np.flatnonzero(sources < 0).astype(np.int64), sources, previous_array)


def runs(targets: np.ndarray, rows: Optional[np.ndarray] = None) -> Iterator[Tuple[int, int, int]]:
    """Contiguous runs ``(start, target_start, length)`` where both indices step by 1.

    ``targets[i]`` and ``rows[i]`` (``rows`` defaults to ``targets``) pair up; a run
    covers positions ``start .. start + length`` of both arrays.
    """
    targets = np.asarray(targets, dtype=np.int64)
    rows = targets if rows is None else np.asarray(rows, dtype=np.int64)
    if len(targets) == 0:
        return
    breaks = np.flatnonzero((np.diff(targets) != 1) | (np.diff(rows) != 1)) + 1
    starts = np.concatenate([[0], breaks])                                # (R,)
    stops = np.concatenate([breaks, [len(targets)]])                      # (R,)
    for start, stop in zip(starts.tolist(), stops.tolist()):
        yield start, int(targets[start]), stop - start


def read_rows(reader: RowReader, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted or not) of a ``.npy`` file, read run by run."""
    out = np.empty((len(rows),) + reader.shape[1:], dtype=reader.dtype)   # (K, ...)
    for start, first, length in runs(rows):
        out[start:start + length] = reader.read(first, first + length)
    return out


def write_rows(writer: RowWriter, rows: np.ndarray, values: np.ndarray) -> None:
    """``writer[rows[i]] = values[i]``, written run by run."""
    for start, first, length in runs(rows):
        writer[first:first + length] = values[start:start + length]


def copy_rows(source: RowReader, writer: RowWriter, sources: np.ndarray,
              chunk_size: int) -> None:
    """``writer[i] = source[sources[i]]`` for every ``i`` with ``sources[i] >= 0``.

    Reads and writes go in contiguous runs of at most ``chunk_size`` rows, so copying
    a sorted collection with a few rows added or removed is sequential I/O.
    """
    sources = pending(writer, sources)          # not the rows of shards put in place
    targets = np.flatnonzero(sources >= 0)                                # (R,)
    rows = sources[targets]                                               # (R,)
    for start, first, length in runs(targets, rows):
        for offset in range(0, length, chunk_size):
            count = min(chunk_size, length - offset)
            row = int(rows[start + offset])
            writer[first + offset:first + offset + count] = source.read(row, row + count)


def apply_rows(source: RowReader, output: PathLike, trailing_shape: Tuple[int, ...],
               dtype: Any, transform: Callable[[np.ndarray], np.ndarray], plan: RowPlan,
               chunk_size: int, desc: str, storage: Optional[Layout] = None) -> int:
    # pylint: disable=too-many-arguments,too-many-positional-arguments
    """Writes ``output[i] = transform(source[i])`` for the planned rows, copies the rest.

    Rows are copied from ``plan.previous`` first (sequential runs), then the rows of
    ``plan.compute`` are read, transformed and written ``chunk_size`` at a time, with
    progress reported. The output appears atomically, as one file or, with a ``storage``
    layout, as shards (:mod:`lib.arrays`; unchanged ones put in place, not rewritten).

    Returns:
        The number of rows written.
    """
    total = len(source)
    if len(plan.sources) != total:
        raise ArtifactError(f"{source.path} has {total} rows, its row index "
                            f"{len(plan.sources)}: run `dvc repro`")
    shape = (total,) + tuple(trailing_shape)
    with open_rows_writer(output, shape, dtype, storage, plan.previous, plan.sources) as out:
        if plan.previous is not None:
            previous = open_rows(plan.previous, dtype=dtype, ndim=len(shape),
                                 trailing_shape=trailing_shape)
            copy_rows(previous, out, plan.sources, chunk_size)
        with progress(len(plan.compute), desc) as meter:
            for start in range(0, len(plan.compute), chunk_size):
                rows = plan.compute[start:start + chunk_size]                 # (C,)
                write_rows(out, rows, transform(read_rows(source, rows)))     # (C, ...)
                meter.update(len(rows))
    return total
