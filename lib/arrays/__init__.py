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
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from lib.artifacts import load_npy, NpyRowReader, NpyRowWriter, open_npy_writer
from lib.arrays.shards import (
    open_sharded_writer, shard_cuts, shard_files, ShardedRowReader, ShardedRows,
    ShardedRowWriter)
from lib.errors import PathLike

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
    if isinstance(source, tuple):
        label = source[0].parent if source else "sharded array"
        return ShardedRowReader(source, label, **checks)
    path = Path(source)
    if path.is_dir():
        return ShardedRowReader(shard_files(path), path, **checks)
    return NpyRowReader(path, **checks)


@contextlib.contextmanager
def open_rows_writer(path: PathLike, shape: Tuple[int, ...], dtype: Any,
                     keys: Optional[Sequence[str]] = None, shard_rows: int = 0
                     ) -> Iterator[RowWriter]:
    """Creates an array to fill row by row; it appears atomically at ``path``.

    Args:
        path: Final location (a file, or with ``shard_rows`` a folder of that name).
        shape: Array shape.
        dtype: Array dtype.
        keys: (N,) the content key of each row: where shards are cut. None: one file.
        shard_rows: Mean rows per shard; 0: one ``.npy`` file.
    """
    if shard_rows and keys is not None:
        if len(keys) != shape[0]:
            raise ValueError(f"{len(keys)} keys for {shape[0]} rows of {path}")
        with open_sharded_writer(Path(path), shape, dtype, shard_cuts(keys, shard_rows)) as out:
            yield out
    else:
        with open_npy_writer(path, shape, dtype) as out:
            yield out


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


def is_sharded(path: PathLike) -> bool:
    """Whether the array at ``path`` is a folder of shards."""
    return Path(path).is_dir()


__all__ = ["ArraySource", "RowReader", "RowWriter", "ShardedRows", "is_sharded", "open_rows",
           "open_rows_writer", "read_array", "row_view", "shard_cuts"]
