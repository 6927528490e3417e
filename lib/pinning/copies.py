"""Private copies of served artifacts, hashed as they are made, and re-hashed on demand.

Serving loads from a copy that only it holds, never from a hard link: with DVC's
``hardlink`` or ``symlink`` cache types a workspace artifact *is* the DVC cache object,
and a hard link of it shares every later in-place write (a script that opens the file
``r+``, ``np.save`` over it, an editor), so the bytes a server answers from could change
after they were verified. Each file is therefore

- cloned with a reflink (``ioctl FICLONE``: Btrfs, XFS, bcachefs, ZFS 2.2+), which costs
  no data copy and no space until either side is written, and is private all the same
  (copy-on-write), or, where the file system cannot,
- copied byte by byte;

and the md5 of the bytes in the copy is recorded (:class:`Manifest`, DVC's hash: a
file's md5, a folder's ``.dir`` md5), so the caller can compare them with ``dvc.lock``
and :func:`recheck` can prove later that the copy still holds them. Copies are made
read-only. Never ``os.link``.
"""
import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, Mapping, Optional, Tuple

from lib.errors import PinningError

logger = logging.getLogger(__name__)

FICLONE = 0x40049409            # linux/fs.h: _IOW(0x94, 9, int); fcntl has it from 3.12
BLOCK = 8 << 20                 # bytes per read while copying or hashing
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
# errno of a FICLONE the file system or the pair of files cannot do: copy instead.
NO_REFLINK = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL,
                        errno.ENOTTY, errno.ENOSYS, errno.EPERM, errno.EBADF})


@dataclass(frozen=True)
class Manifest:
    """The md5 of every file of one copied artifact.

    Attributes:
        files: md5 by path relative to the artifact (POSIX); a single-file artifact has
            one entry, ``""``.
        size: Bytes in all.
    """

    files: Dict[str, str]
    size: int

    @property
    def md5(self) -> str:
        """DVC's hash of the artifact: the file's md5, or the folder's ``.dir`` md5."""
        if set(self.files) == {""}:
            return self.files[""]
        return dir_md5(self.files)


def dir_md5(files: Mapping[str, str]) -> str:
    """DVC's hash of a folder from its files' md5s (``dvc_data``'s ``Tree.digest``).

    The md5 of the JSON list ``[{"md5": ..., "relpath": ...}, ...]`` sorted by path,
    keys sorted, plus ``.dir``; ``tests/system/test_pinning.py`` holds it equal to the
    hash DVC records.
    """
    listing = [{"md5": md5, "relpath": relpath} for relpath, md5 in sorted(files.items())]
    text = json.dumps(listing, sort_keys=True).encode("utf-8")
    return hashlib.md5(text, usedforsecurity=False).hexdigest() + ".dir"


@dataclass
class CopyStats:
    """How the copies of one snapshot were made (for the log and the benchmark)."""

    reflinked: int = 0
    copied: int = 0
    size: int = 0
    started: float = field(default_factory=time.perf_counter)
    reflink_possible: bool = True

    def describe(self) -> str:
        """``3 files, 103.2 MB (2 reflinked, 1 copied) in 0.41 s``."""
        return (f"{self.reflinked + self.copied} files, {self.size / 1e6:.1f} MB "
                f"({self.reflinked} reflinked, {self.copied} copied) in "
                f"{time.perf_counter() - self.started:.2f} s")


def private_copy(source: Path, target: Path, stats: Optional[CopyStats] = None) -> Manifest:
    """Copies a file or folder to ``target`` (which must not exist), hashing every byte.

    Links inside a folder are followed, as DVC hashes them. Files end read-only.

    Returns:
        The md5 of each file in the copy.

    Raises:
        OSError: Reading or writing failed (a full disk, say).
    """
    stats = stats if stats is not None else CopyStats()
    if not source.is_dir():
        md5, size = _copy_file(source, target, stats)
        return Manifest({"": md5}, size)
    files: Dict[str, str] = {}
    total = 0
    for relpath in _files_under(source):
        (target / relpath).parent.mkdir(parents=True, exist_ok=True)
        files[relpath], size = _copy_file(source / relpath, target / relpath, stats)
        total += size
    target.mkdir(exist_ok=True)                   # an empty folder is an artifact too
    return Manifest(files, total)


def _files_under(folder: Path) -> Iterator[str]:
    """Relative POSIX paths of the files under ``folder``, sorted."""
    found: List[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        base = Path(dirpath).relative_to(folder)
        found.extend((base / name).as_posix() for name in filenames)
    return iter(sorted(found))


def _copy_file(source: Path, target: Path, stats: CopyStats) -> Tuple[str, int]:
    """A reflink of ``source`` at ``target``, else a copy; the md5 and size of the copy.

    The copy is made by the kernel (``copy_file_range``) and then hashed: the md5 is of
    the bytes in the copy, whatever happened to the source meanwhile.
    """
    with open(source, "rb") as src, open(target, "xb") as dst:
        if stats.reflink_possible and _reflink(src.fileno(), dst.fileno(), source, stats):
            stats.reflinked += 1
        else:
            _kernel_copy(src, dst)
            stats.copied += 1
    md5, size = file_md5(target)
    os.chmod(target, READ_ONLY)
    stats.size += size
    return md5, size


def _kernel_copy(src: BinaryIO, dst: BinaryIO) -> None:
    """Copies every byte of ``src`` into ``dst`` in the kernel where it can, else by
    reads and writes."""
    try:
        while os.copy_file_range(src.fileno(), dst.fileno(), BLOCK * 8):
            pass
        return
    except OSError as err:
        if err.errno not in NO_REFLINK or dst.tell() or os.fstat(dst.fileno()).st_size:
            raise
    buffer = bytearray(BLOCK)                    # no copy_file_range here: read, write
    while True:
        count = src.readinto(buffer)
        if not count:
            return
        dst.write(memoryview(buffer)[:count])


def _reflink(src: int, dst: int, source: Path, stats: CopyStats) -> bool:
    """Clones ``src`` into ``dst`` (``ioctl FICLONE``); False where it cannot."""
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError as err:
        if err.errno not in NO_REFLINK:
            raise
        stats.reflink_possible = False           # the same for the other files: copy them
        logger.debug("no reflink for %s (%s): copying", source, err.strerror)
        return False
    return True


def file_md5(path: Path) -> Tuple[str, int]:
    """md5 and size of a file's bytes, read in blocks."""
    digest, size = hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def recheck(paths: Mapping[str, Path], manifests: Mapping[str, Manifest],
            labels: Mapping[str, str]) -> Tuple[int, int]:
    """Re-hashes the copies: each must still hold the bytes hashed when it was made.

    Args:
        paths: The copy of each artifact, by key.
        manifests: What :func:`private_copy` recorded for it.
        labels: How each artifact is named in messages.

    Returns:
        Files and bytes re-hashed.

    Raises:
        PinningError: One line naming the first file whose bytes changed or that is gone.
    """
    files = size = 0
    for key, manifest in manifests.items():
        for relpath, recorded in manifest.files.items():
            path = paths[key] / relpath if relpath else paths[key]
            try:
                md5, length = file_md5(path)
            except OSError as err:
                raise PinningError(f"{labels.get(key, key)}: the served copy {path} cannot "
                                   f"be read ({err.strerror}): restart the service or "
                                   "POST /reload") from err
            if md5 != recorded:
                raise PinningError(f"{labels.get(key, key)}: the served copy {path} no "
                                   f"longer holds the bytes verified when it was loaded "
                                   f"(md5 {md5} now, {recorded} then): restart the service "
                                   "or POST /reload, and check the disk")
            files, size = files + 1, size + length
    return files, size
