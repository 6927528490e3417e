"""Saving and loading artifacts: atomic writes and safe, validated loads.

Writes go to a temporary file beside the target and are renamed into place, so an
interrupted stage never leaves a half-written file that looks complete. Loads never
unpickle: NumPy arrays are read with ``allow_pickle=False``.
"""
import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


class ArtifactError(ValueError):
    """An artifact is missing, unreadable, or not of the expected shape or type."""


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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Atomically saves ``array`` as a plain ``.npy`` file (no pickle)."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"refusing to save an object array to {path}: it would need pickle")
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


@contextlib.contextmanager
def open_npy_writer(path: PathLike, shape: Tuple[int, ...],
                    dtype: Union[str, np.dtype]) -> Iterator[np.memmap]:
    """Creates a memory-mapped ``.npy`` file to fill chunk by chunk, then commits it.

    The file is a normal ``.npy`` (``numpy.load`` reads it). It only appears at
    ``path`` once the ``with`` block finishes without an exception.

    Args:
        path: Final location.
        shape: Array shape.
        dtype: Array dtype.

    Yields:
        A writable memmap of the given shape and dtype.
    """
    with atomic_path(path, suffix=".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype),
                                          shape=tuple(shape))
        try:
            yield array
            array.flush()
        finally:
            del array


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
