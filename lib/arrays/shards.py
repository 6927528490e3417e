"""An array as a folder of ``.npy`` shards cut where the rows' content keys say.

The folder holds ``000000.npy``, ``000001.npy``, ...: the rows in order, each file a
plain ``.npy`` of the rows between two cuts. :func:`shard_cuts` places a cut after a
row when a hash of that row's content key falls in a fixed 1-in-N range, so a cut
depends on one row's photo only: adding, changing or removing k photos changes the
shards those rows fall in (about k), and every other shard is rewritten with the same
bytes. DVC stores files by content, so the unchanged shards are stored once for all
versions and an update grows its cache by about k shards, not by the whole array.
"""
import contextlib
import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from lib.artifacts import atomic_path, load_npy, NpyRowReader, NpyRowWriter
from lib.errors import ArtifactError

# A shard never holds more than this many times the rows asked for: a long run of rows
# without a key cut is cut here (and the next key cut puts the layout back in step).
MAX_FACTOR = 4
SHARD_NAME = "{:06d}.npy"


def _key_hash(key: str) -> int:
    """A uniform 64-bit number from a content key (any text)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def shard_cuts(keys: Sequence[str], shard_rows: int) -> np.ndarray:
    """Where the shards of rows with ``keys`` end: ``(S,) int64`` stops, the last ``len(keys)``.

    Args:
        keys: (N,) the content key of each row, in row order.
        shard_rows: The mean rows per shard asked for (>= 1).

    Returns:
        Ascending stops; ``[0]`` (one empty shard) when there are no rows.
    """
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
    stops: List[int] = []
    size = 0
    for row, key in enumerate(keys):
        size += 1
        if _key_hash(str(key)) % shard_rows == 0 or size >= MAX_FACTOR * shard_rows:
            stops.append(row + 1)
            size = 0
    if size or not stops:
        stops.append(len(keys))
    return np.asarray(stops, dtype=np.int64)


def shard_files(folder: Path) -> List[Path]:
    """The shard files of a sharded array, in row order.

    Raises:
        ArtifactError: The folder holds no shard.
    """
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise ArtifactError(f"artifact {folder} holds no .npy shard")
    return files


class ShardedRowReader:
    """Reads rows of a sharded array (its shard files, in order) with plain file reads.

    Same interface as :class:`lib.artifacts.NpyRowReader`: ``shape``, ``dtype``,
    ``len``, ``read(start, stop)`` and ``chunks(size)``.

    Args:
        shards: The shard files, in row order.
        label: Names the array in messages.
        **checks: As :func:`lib.artifacts.load_npy`, for every shard.
    """

    def __init__(self, shards: Sequence[Path], label: Union[str, Path], **checks: Any):
        self.path = Path(label)
        self._readers = [NpyRowReader(shard, **checks) for shard in shards]
        if not self._readers:
            raise ArtifactError(f"artifact {label} holds no shard")
        first = self._readers[0]
        for reader in self._readers[1:]:
            if reader.shape[1:] != first.shape[1:] or reader.dtype != first.dtype:
                raise ArtifactError(f"artifact {label}: shard {reader.path.name} has shape "
                                    f"{reader.shape} and dtype {reader.dtype}, the first "
                                    f"{first.shape} and {first.dtype}")
        lengths = [len(reader) for reader in self._readers]
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (S+1,)
        self.shape: Tuple[int, ...] = (int(self.starts[-1]),) + tuple(first.shape[1:])
        self.dtype = first.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (clipped to the array) as an in-memory array."""
        start, stop, _ = slice(start, stop).indices(len(self))
        out = np.empty((max(stop - start, 0),) + self.shape[1:], dtype=self.dtype)
        if stop <= start:
            return out
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        for shard in range(first, len(self._readers)):
            base = int(self.starts[shard])
            if base >= stop:
                break
            low, high = max(start, base), min(stop, int(self.starts[shard + 1]))
            if high > low:
                out[low - start:high - start] = self._readers[shard].read(low - base,
                                                                          high - base)
        return out

    def chunks(self, chunk_size: int) -> Iterator[Tuple[int, np.ndarray]]:
        """Yields ``(start, rows)`` over the whole array, ``chunk_size`` rows at a time."""
        for start in range(0, len(self), chunk_size):
            yield start, self.read(start, start + chunk_size)


class ShardedRows:
    """A read-only, lazy view of a sharded array: ``view[i]`` and ``view[a:b]`` read rows.

    For code that indexes single rows of a large array (thumbnails), as it would a
    memory map, without holding the array in memory. Each shard is memory-mapped, so
    the view keeps working when its files are removed (a pinned copy released).

    Args:
        shards: The shard files, in row order.
        **checks: As :func:`lib.artifacts.load_npy`, for every shard.
    """

    def __init__(self, shards: Sequence[Path], **checks: Any):
        reader = ShardedRowReader(shards, shards[0].parent if shards else "", **checks)
        self._maps = [load_npy(shard, mmap=True) for shard in shards]
        self._starts = reader.starts
        self.shape, self.dtype, self.ndim = reader.shape, reader.dtype, len(reader.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _row(self, row: int) -> np.ndarray:
        if not -len(self) <= row < len(self):
            raise IndexError(f"row {row} out of range for {len(self)} rows")
        row %= len(self)
        shard = int(np.searchsorted(self._starts, row, side="right")) - 1
        return np.asarray(self._maps[shard][row - int(self._starts[shard])])

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            return self._row(int(index))
        rows = np.arange(len(self))[index] if isinstance(index, slice) else \
            np.asarray(index, dtype=np.int64).reshape(-1)                    # (K,)
        out = np.empty((len(rows),) + self.shape[1:], dtype=self.dtype)
        for position, row in enumerate(rows.tolist()):
            out[position] = self._row(row)
        return out


class ShardedRowWriter:
    """Writes rows of a sharded array being made (``writer[i] = row``, ``writer[a:b] = rows``).

    Each shard is a preallocated ``.npy`` file written through plain file writes, as
    :class:`lib.artifacts.NpyRowWriter`; one shard file is open at a time.
    """

    def __init__(self, folder: Path, shape: Tuple[int, ...], dtype: np.dtype,
                 cuts: np.ndarray):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._starts = np.concatenate([[0], np.asarray(cuts, dtype=np.int64)])  # (S+1,)
        if self._starts[-1] != self.shape[0] or np.any(np.diff(self._starts) < 0):
            raise ValueError(f"shard cuts {cuts} do not split {self.shape[0]} rows")
        self._folder = folder
        self._offsets: Dict[int, int] = {}       # shard -> data offset, once its file exists
        self._open: Optional[Tuple[int, Any, NpyRowWriter]] = None
        self._adopted: Set[int] = set()

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def starts(self) -> np.ndarray:
        """(S+1,) the first row of each shard, then the row count."""
        return self._starts

    def adopt(self, shard: int, source: Path, link: Callable[[Path, Path], None]) -> None:
        """Puts shard ``shard`` in place from ``source``, a file with exactly its bytes (the
        same rows of the previous version, in DVC's cache), instead of writing it.

        ``link(source, target)`` makes the file (a hard link into the cache, or a copy);
        nothing is ever written into it: writes to its rows are skipped.
        """
        if shard in self._offsets:
            raise ValueError(f"shard {shard} is being written: it cannot be put in place")
        link(source, self._folder / SHARD_NAME.format(shard))
        self._adopted.add(shard)

    def adopted_rows(self) -> np.ndarray:
        """(N,) ``bool``: the rows of the shards put in place (nothing to write there)."""
        mask = np.zeros(self.shape[0], dtype=bool)
        for shard in self._adopted:
            mask[self._starts[shard]:self._starts[shard + 1]] = True
        return mask

    def _create(self, shard: int) -> int:
        """Creates shard ``shard``'s file (header, then sparse rows); its data offset."""
        rows = int(self._starts[shard + 1] - self._starts[shard])
        header = np.lib.format.open_memmap(self._folder / SHARD_NAME.format(shard), mode="w+",
                                           dtype=self.dtype, shape=(rows,) + self.shape[1:])
        self._offsets[shard] = int(header.offset)
        del header
        return self._offsets[shard]

    def finish(self) -> None:
        """Creates every shard no row was written to (rows of zeros; an empty shard)."""
        self.close()
        for shard in range(len(self._starts) - 1):
            if shard not in self._adopted and shard not in self._offsets:
                self._create(shard)

    def _writer(self, shard: int) -> Optional[NpyRowWriter]:
        if shard in self._adopted:
            return None                       # its bytes are in place already
        if self._open is None or self._open[0] != shard:
            self.close()
            offset = self._offsets.get(shard)
            offset = self._create(shard) if offset is None else offset
            rows = int(self._starts[shard + 1] - self._starts[shard])
            handle = open(self._folder / SHARD_NAME.format(shard),  # pylint: disable=consider-using-with
                          "r+b")
            self._open = (shard, handle, NpyRowWriter(handle, offset, (rows,) + self.shape[1:],
                                                      self.dtype))
        return self._open[2]

    def close(self) -> None:
        """Closes the shard file open, if any."""
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            if not -len(self) <= index < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            start = int(index) % len(self)
            index, value = slice(start, start + 1), np.asarray(value)[np.newaxis]
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("rows are written by index or by a contiguous slice")
        start, stop, _ = index.indices(len(self))
        stop = max(start, stop)
        block = np.broadcast_to(np.asarray(value, dtype=self.dtype),
                                (stop - start,) + self.shape[1:])
        shard = int(np.searchsorted(self._starts, start, side="right")) - 1
        while start < stop:
            base, end = int(self._starts[shard]), int(self._starts[shard + 1])
            high = min(stop, end)
            writer = self._writer(shard) if high > start else None
            if writer is not None:
                writer[start - base:high - base] = block[:high - start]
            if high > start:
                block = block[high - start:]
                start = high
            shard += 1


@contextlib.contextmanager
def open_sharded_writer(folder: Path, shape: Tuple[int, ...], dtype: Any,
                        cuts: np.ndarray) -> Iterator[ShardedRowWriter]:
    """Creates a sharded array to fill row by row; it appears atomically at ``folder``."""
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        writer = ShardedRowWriter(tmp, tuple(shape), np.dtype(dtype), cuts)
        try:
            yield writer
            writer.finish()
        finally:
            writer.close()
