"""The big arrays, stored as one ``.npy`` file (the design) or as a folder of shards.

``storage.shard_rows`` chooses: 0 keeps each of the landing images, the feature store
and the vectors one ``.npy`` file; N > 0 makes each a folder of that name holding
``.npy`` shards of about N rows (:mod:`lib.arrays.shards`), so that an update stores
only the shards it changed in DVC's cache. Code reads and writes either form through
this face:

- :func:`open_rows` reads rows chunk by chunk (a file, a folder, or the cached shard
  files of a previous version);
- :func:`open_rows_writer` writes rows, into one file or into shards;
- :func:`read_array` loads a whole array (a memory map of a file; a sharded array is
  read into memory); :func:`row_view` gives single rows without reading the rest.

Every shard is a plain ``.npy``; a whole sharded array, without this project's code:
``np.concatenate([np.load(p) for p in sorted(Path(folder).glob("*.npy"))])``.
"""
import contextlib
import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from lib.artifacts import load_npy, NpyRowReader, NpyRowWriter, open_npy_writer
from lib.arrays.shards import (
    open_sharded_writer, shard_cuts, shard_files, ShardedRowReader, ShardedRows,
    ShardedRowWriter)
from lib.errors import PathLike

logger = logging.getLogger(__name__)

# Where an array is: a ``.npy`` file, a folder of shards, or shard files in row order.
ArraySource = Union[PathLike, Tuple[Path, ...]]
RowReader = Union[NpyRowReader, ShardedRowReader]
RowWriter = Union[NpyRowWriter, ShardedRowWriter]


def open_rows(source: ArraySource, **checks: Any) -> RowReader:
    """A chunk reader of an array's rows, whichever way it is stored.

    Args:
        source: A ``.npy`` file, a folder of shards, or a tuple of shard files.
        **checks: ``dtype``, ``ndim``, ``trailing_shape`` or ``kind``, as
            :func:`lib.artifacts.load_npy` (checked for every shard).

    Raises:
        ArtifactError: Missing, unreadable, or not of the form asked for.
    """
    if isinstance(source, tuple):       # cached shard files: read-only, so readers are shared
        frozen = tuple(sorted((key, tuple(value) if isinstance(value, list) else value)
                              for key, value in checks.items()))
        return _cached_reader(source, frozen)
    path = Path(source)
    if path.is_dir():
        return ShardedRowReader(shard_files(path), path, **checks)
    return NpyRowReader(path, **checks)


@functools.lru_cache(maxsize=8)
def _cached_reader(shards: Tuple[Path, ...], checks: Tuple[Tuple[str, Any], ...]
                   ) -> ShardedRowReader:
    """One reader per set of cached shard files and checks (their headers read once)."""
    return ShardedRowReader(shards, shards[0].parent if shards else "sharded array",
                            **dict(checks))


@dataclasses.dataclass(frozen=True)
class Layout:
    """How an array being written is stored.

    Attributes:
        keys: (N,) the content key of each row: where shards are cut. None: one file.
        shard_rows: Mean rows per shard (``storage.shard_rows``); 0: one ``.npy`` file.
        link: Puts an unchanged shard of the previous version in place (a hard link into
            DVC's cache; see ``lib.incremental.linker``) instead of writing it; None:
            every shard is written.
    """

    keys: Optional[Sequence[str]] = None
    shard_rows: int = 0
    link: Optional[Callable[[Path, Path], None]] = None


@contextlib.contextmanager
def open_rows_writer(path: PathLike, shape: Tuple[int, ...], dtype: Any,
                     layout: Optional[Layout] = None, previous: Optional[ArraySource] = None,
                     sources: Optional[np.ndarray] = None) -> Iterator[RowWriter]:
    """Creates an array to fill row by row; it appears atomically at ``path``.

    Args:
        path: Final location (a file, or with ``layout.shard_rows`` a folder of that name).
        shape: Array shape.
        dtype: Array dtype.
        layout: One file (None, the default) or shards (:class:`Layout`).
        previous: The previous version of the array, if any.
        sources: (N,) each output row's row in ``previous`` (-1: new). With a sharded
            ``previous`` and ``layout.link``, every shard whose rows are exactly one
            previous shard's is put in place from it, not written: an update then writes
            and stores only the shards it changed.
    """
    layout = layout or Layout()
    if not layout.shard_rows or layout.keys is None:
        with open_npy_writer(path, shape, dtype) as out:
            yield out
        return
    if len(layout.keys) != shape[0]:
        raise ValueError(f"{len(layout.keys)} keys for {shape[0]} rows of {path}")
    with open_sharded_writer(Path(path), shape, dtype,
                             shard_cuts(layout.keys, layout.shard_rows)) as out:
        shards = _shards_of(previous)
        if shards and layout.link is not None and sources is not None:
            adopted = adopt_unchanged(out, shards, sources, layout.link)
            logger.info("%s: %d of %d shards unchanged, linked from the previous version",
                        Path(path).name, adopted, len(out.starts) - 1)
        yield out


def _shards_of(source: Optional[ArraySource]) -> Tuple[Path, ...]:
    """The shard files of a sharded array source; empty for a file or nothing."""
    if isinstance(source, tuple):
        return source
    if source is not None and Path(source).is_dir():
        return tuple(shard_files(Path(source)))
    return ()


def adopt_unchanged(writer: ShardedRowWriter, previous: Sequence[Path], sources: np.ndarray,
                    link: Callable[[Path, Path], None]) -> int:
    """Puts in place, from the previous version, every shard whose rows are exactly one
    previous shard's: the same rows in the same order (then its bytes are the same).

    Args:
        writer: The sharded array being written.
        previous: The previous version's shard files, in row order.
        sources: (N,) for each output row its previous row, -1 for a new row.
        link: Makes a target file from a source file (a hard link into DVC's cache).

    Returns:
        The number of shards put in place.
    """
    reader = open_rows(tuple(previous))
    if reader.dtype != writer.dtype or reader.shape[1:] != writer.shape[1:]:
        return 0
    first_shard = {int(start): shard for shard, start in enumerate(reader.starts[:-1])}
    sources = np.asarray(sources, dtype=np.int64)                          # (N,)
    adopted = 0
    for shard, (start, stop) in enumerate(zip(writer.starts[:-1].tolist(),
                                              writer.starts[1:].tolist())):
        rows = sources[start:stop]                                          # (R,)
        if rows.size == 0 or rows[0] < 0 or np.any(np.diff(rows) != 1):
            continue
        match = first_shard.get(int(rows[0]))
        if match is not None and reader.starts[match + 1] - rows[0] == len(rows):
            writer.adopt(shard, previous[match], link)
            adopted += 1
    return adopted


def pending(writer: RowWriter, sources: np.ndarray) -> np.ndarray:
    """``sources`` (each output row's previous row, -1: new) with -1 also for the rows the
    writer holds already (shards put in place): what is left to copy."""
    if isinstance(writer, ShardedRowWriter):
        return np.where(writer.adopted_rows(), -1, np.asarray(sources, dtype=np.int64))
    return np.asarray(sources, dtype=np.int64)


def read_array(path: PathLike, **checks: Any) -> np.ndarray:
    """A whole array: a read-only memory map of a file, a sharded array read into memory.

    Raises:
        ArtifactError: Missing, unreadable, or not of the form asked for.
    """
    if Path(path).is_dir():
        reader = open_rows(path, **checks)
        array = reader.read(0, len(reader))
        array.flags.writeable = False
        return array
    return load_npy(path, mmap=True, **checks)


def row_view(path: PathLike, **checks: Any) -> Union[np.ndarray, ShardedRows]:
    """Rows by index without reading the whole array (a memory map, or a shard view)."""
    if Path(path).is_dir():
        return ShardedRows(shard_files(Path(path)), **checks)
    return load_npy(path, mmap=True, **checks)


__all__ = ["ArraySource", "Layout", "RowReader", "RowWriter", "ShardedRows",
           "open_rows", "open_rows_writer", "pending", "read_array", "row_view", "shard_cuts"]
