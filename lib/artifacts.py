"""Saving and loading artifacts: atomic writes and safe, validated loads.

Writes go to a temporary file beside the target and are renamed into place, so an
interrupted stage never leaves a half-written file that looks complete. A stage killed
outright (``kill -9``) leaves its temporaries (``.<name>.<random>.tmp*``, git-ignored);
:func:`clean_leftovers` removes them at the stage's next run. A full disk is one line
naming the file. Loads never unpickle: NumPy arrays are read with ``allow_pickle=False``.
:func:`recorded_output` is the one reader of what ``dvc.lock`` records of an output.
"""
import contextlib
import errno
import functools
import glob
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from lib.errors import ArtifactError, PathLike

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(target: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``target``; renames it onto ``target`` on success.

    Works for files and directories. On any exception the temporary path is removed
    and ``target`` is left as it was.

    Args:
        target: Final location.
        suffix: Suffix for the temporary name (some writers insist on an extension).

    Yields:
        The temporary path to write to. It does not exist yet.
    """
    target = Path(target)
    with _disk_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}",
                                        dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        with _disk_errors(target):
            yield tmp
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif tmp.is_dir() and (target.is_file() or target.is_symlink()):
                target.unlink()             # a file becomes a folder (an array sharded)
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def _disk_errors(target: Path) -> Iterator[None]:
    """A full disk (or quota, or file size limit) while writing ``target``, as one line;
    also NumPy's short write without an errno ("1048576 requested and 262112 written")."""
    try:
        yield
    except OSError as err:
        if err.errno in _DISK_FULL:
            reason = os.strerror(err.errno)
        elif err.errno is None and "written" in str(err):
            free = shutil.disk_usage(target.parent).free
            reason = f"short write, {free} bytes free ({' '.join(str(err).split())})"
        else:
            raise
        raise ArtifactError(f"cannot write {target}: {reason} (in {target.parent.resolve()}): "
                            "free some space and rerun; finished artifacts are kept") from err


def clean_leftovers(*targets: PathLike) -> List[Path]:
    """Removes (and returns) the temporaries an interrupted write of ``targets`` left.

    Call it at the start of the stage that owns ``targets`` (DVC's repository lock
    keeps two runs of a stage apart, so no temporary of a live write is removed).
    """
    removed = []
    for target in map(Path, targets):
        pattern = f".{glob.escape(target.name)}.*.tmp*"
        for leftover in sorted(target.parent.glob(pattern)):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            removed.append(leftover)
            logger.info("removed %s, left over by an interrupted run", leftover)
    return removed


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Atomically saves ``array`` as a plain ``.npy`` file (no pickle)."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"refusing to save an object array to {path}: it would need pickle")
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


class NpyRowWriter:
    """Writes rows of a preallocated ``.npy`` file with plain file writes.

    Rows are written through the file, not through a memory map, so the pages
    written never count towards this process's resident memory: peak memory is one
    chunk, whatever the array size. Assign with ``writer[i] = row`` or
    ``writer[start:stop] = rows`` (values broadcast as in NumPy). ``handle``: the
    ``.npy`` file open for binary update; ``offset``: its data's (the header length).
    """

    def __init__(self, handle, offset: int, shape: Tuple[int, ...], dtype: np.dtype):
        self._handle = handle
        self._offset = int(offset)
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, index, value) -> None:
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            if not -len(self) <= index < len(self):
                raise IndexError(f"row {index} out of range for {len(self)} rows")
            start, stop = int(index) % max(len(self), 1), int(index) % max(len(self), 1) + 1
            block = np.broadcast_to(np.asarray(value, dtype=self.dtype), self.shape[1:])
        elif isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(len(self))
            stop = max(start, stop)
            block = np.broadcast_to(np.asarray(value, dtype=self.dtype),
                                    (stop - start,) + self.shape[1:])
        else:
            raise TypeError("rows are written by index or by a contiguous slice")
        self._handle.seek(self._offset + start * self._row_bytes)
        self._handle.write(memoryview(np.ascontiguousarray(block)).cast("B"))


@contextlib.contextmanager
def open_npy_writer(path: PathLike, shape: Tuple[int, ...],
                    dtype: Union[str, np.dtype]) -> Iterator[NpyRowWriter]:
    """Creates a ``.npy`` file to fill chunk by chunk, then commits it atomically.

    The file is a normal ``.npy`` (``numpy.load`` reads it). It only appears at
    ``path`` once the ``with`` block finishes without an exception. Memory use is
    that of the chunk being written, not of the array.

    Args:
        path: Final location.
        shape: Array shape.
        dtype: Array dtype.

    Yields:
        A :class:`NpyRowWriter` of the given shape and dtype.
    """
    with atomic_path(path, suffix=".npy") as tmp:
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype),
                                           shape=tuple(shape))      # header + sparse data
        offset = header.offset
        del header
        with open(tmp, "r+b") as handle:
            yield NpyRowWriter(handle, offset, tuple(shape), np.dtype(dtype))


class NpyRowReader:
    """Reads rows of a ``.npy`` file with plain file reads (memory stays one chunk).

    Reading through a memory map would leave every page read resident in this
    process; plain reads keep peak memory independent of the array size.

    Args:
        path: The ``.npy`` file (C order, no pickle), checked as by :func:`load_npy`.
        **checks: ``dtype``, ``ndim``, ``trailing_shape`` or ``kind``, as :func:`load_npy`.
    """

    def __init__(self, path: PathLike, **checks: Any):
        self.path = Path(path)
        mapped = load_npy(self.path, mmap=True, **checks)
        if not mapped.flags.c_contiguous:
            raise ArtifactError(f"artifact {self.path} is not stored in C order")
        self.shape: Tuple[int, ...] = tuple(mapped.shape)
        self.dtype = mapped.dtype
        self._offset = int(mapped.offset)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del mapped

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (clipped to the array) as an in-memory array."""
        start, stop, _ = slice(start, stop).indices(len(self))
        count = max(stop - start, 0)
        out = np.empty((count,) + self.shape[1:], dtype=self.dtype)
        with open(self.path, "rb") as handle:
            handle.seek(self._offset + start * self._row_bytes)
            if handle.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise ArtifactError(f"artifact {self.path} is truncated")
        return out

    def chunks(self, chunk_size: int) -> Iterator[Tuple[int, np.ndarray]]:
        """Yields ``(start, rows)`` over the whole array, ``chunk_size`` rows at a time."""
        for start in range(0, len(self), chunk_size):
            yield start, self.read(start, start + chunk_size)


def load_npy(path: PathLike, dtype: Optional[Union[str, np.dtype]] = None,
             ndim: Optional[int] = None, trailing_shape: Optional[Sequence[int]] = None,
             mmap: bool = False, kind: Optional[str] = None) -> np.ndarray:
    """Loads a ``.npy`` artifact without pickle and checks what it holds.

    Args:
        path: The ``.npy`` file.
        dtype: Required dtype, or None for any.
        ndim: Required number of dimensions, or None for any.
        trailing_shape: Required shape of every axis after the first, or None.
        mmap: Memory-map read-only instead of reading into memory.
        kind: If given, the dtype kind required instead of an exact dtype
            (``"U"`` for unicode strings of any length).

    Returns:
        The array (a read-only memmap when ``mmap``).

    Raises:
        ArtifactError: The file is missing, unreadable, pickled or of the wrong form.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact {path} is missing")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as err:
        raise ArtifactError(f"artifact {path} is not a valid .npy file: {err}") from err
    if not isinstance(array, np.ndarray):
        raise ArtifactError(f"artifact {path} is not a single array")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise ArtifactError(f"artifact {path} has dtype {array.dtype}, expected {np.dtype(dtype)}")
    if kind is not None and array.dtype.kind != kind:
        raise ArtifactError(f"artifact {path} has dtype {array.dtype}, expected kind {kind!r}")
    if ndim is not None and array.ndim != ndim:
        raise ArtifactError(f"artifact {path} has shape {array.shape}, expected {ndim} dimensions")
    if trailing_shape is not None and tuple(array.shape[1:]) != tuple(trailing_shape):
        raise ArtifactError(f"artifact {path} has shape {array.shape}, expected "
                            f"(N, {', '.join(str(s) for s in trailing_shape)})")
    return array


def save_json(path: PathLike, data: Any) -> None:
    """Atomically writes ``data`` as indented JSON."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                       encoding="utf-8")


@functools.lru_cache(maxsize=4)
def _lock_stages(lock: str, mtime_ns: int, size: int) -> Dict[str, Any]:
    """The ``stages`` of a ``dvc.lock`` (``mtime_ns`` and ``size`` key its version)."""
    del mtime_ns, size
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(lock, encoding="utf-8") as handle:
        return (yaml.load(handle, Loader=loader) or {}).get("stages", {})  # nosec: safe loader


def recorded_output(root: PathLike, output: PathLike) -> Optional[Dict[str, Any]]:
    """What ``dvc.lock`` records of an output (``path``, ``md5``, ``size``, ...), if any.

    A missing or unreadable ``dvc.lock``, or an output it does not record, gives None
    (logged): callers treat it as "no recorded version". The file is parsed once per
    version of it.
    """
    root = Path(root)
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        info = lock.stat()
        stages = _lock_stages(str(lock.resolve()), info.st_mtime_ns, info.st_size)
        relative = Path(output).resolve().relative_to(root.resolve()).as_posix()
    except (yaml.YAMLError, OSError, ValueError, AttributeError) as err:
        logger.info("dvc.lock not read: %s", err)
        return None
    for stage in stages.values() if isinstance(stages, dict) else ():
        for entry in (stage or {}).get("outs", None) or ():
            if isinstance(entry, dict) and entry.get("path") == relative:
                return dict(entry)
    return None
