"""What counts as a file of the collection: the special-files policy of ``data/master``.

The collection is the regular files under its folder. Everything else is left out and
named with a one-line reason, never followed and never opened:

- symbolic links, to files or folders, inside or outside the collection, broken or
  looping: not followed. DVC hashes a linked file's target but not a linked folder's
  contents, so no rule that follows links could index exactly what ``dvc.lock``
  records; skipping every link does (a link's target never reaches the index).
- FIFOs, sockets and devices: refused. Opening a FIFO blocks until a writer appears,
  so they are found by their type from the directory listing, without opening them.

Hidden entries (a name starting with ``.``) are not part of the collection either; a
hidden image file, and a hidden folder (once, not its contents), are listed with that
reason, so a photo left out is never left out silently (``.DS_Store`` and other hidden
files that are not images are not listed, as no other non-image file is).
:func:`scan_collection` is the ETL's listing; :func:`dvc_hazards` lists what would make
DVC itself hang or fail when it hashes the folder (``dvc status``, ``dvc repro``, the
serving pin check), hidden entries included.
"""
import errno
import os
import stat
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Tuple

from lib.errors import InputError, PathLike


class Skipped(NamedTuple):
    """An entry left out of the collection, and why (one line)."""

    path: Path
    reason: str


def _kind(mode: int) -> str:
    """The name of a special file type."""
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _link_reason(path: Path) -> str:
    """Why a symbolic link is skipped, naming what it points at."""
    try:
        target = os.stat(path)                          # follows the link, opens nothing
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{path}: symbolic link loop, not followed: remove the link"
        return f"{path}: broken link, not followed: remove the link"
    what = "folder" if stat.S_ISDIR(target.st_mode) else (
        "file" if stat.S_ISREG(target.st_mode) else _kind(target.st_mode))
    return (f"{path}: symbolic link to a {what}, not followed: copy the {what} into the "
            "collection instead")


def _walk(root: Path, hidden: bool) -> Iterator[Tuple[Path, os.DirEntry]]:
    """Every entry under ``root``, depth first, in sorted order, links never followed.

    Without ``hidden``, a hidden entry is yielded but a hidden folder not entered.
    """
    with os.scandir(root) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        path = root / entry.name
        yield path, entry
        if entry.is_dir(follow_symlinks=False) and (hidden or not entry.name.startswith(".")):
            yield from _walk(path, hidden)


def _hidden_reason(path: Path, entry: os.DirEntry, image: bool) -> Optional[str]:
    """Why a hidden entry is left out, for a hidden folder or image file; else None."""
    if entry.is_dir(follow_symlinks=False):
        return (f"{path}: hidden folder (its name starts with '.'), its files are not part "
                "of the collection: rename it to include them")
    if image:
        return (f"{path}: hidden file (its name starts with '.'), not part of the "
                "collection: rename it to include it")
    return None


def scan_collection(root: PathLike, extensions: frozenset) -> Tuple[List[Path], List[Skipped]]:
    """The collection's files and what is left out, in sorted order of relative path.

    Args:
        root: The collection folder.
        extensions: Lower-case suffixes (``.jpg``) of the files that are images.

    Returns:
        The regular files with an image suffix, and the skipped entries: every
        symbolic link to a folder, every other link with an image suffix, every
        FIFO, socket or device whatever its name (DVC would block on it), and every
        hidden folder and hidden image file.

    Raises:
        InputError: ``root`` is missing or not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a directory")
    files: List[Path] = []
    skipped: List[Skipped] = []
    for path, entry in _walk(root, hidden=False):
        image = path.suffix.lower() in extensions
        if entry.name.startswith("."):
            reason = _hidden_reason(path, entry, image)
            if reason:
                skipped.append(Skipped(path, reason))
        elif entry.is_symlink():
            if image or entry.is_dir():
                skipped.append(Skipped(path, _link_reason(path)))
        elif entry.is_file(follow_symlinks=False):
            if image:
                files.append(path)
        elif not entry.is_dir(follow_symlinks=False):
            skipped.append(Skipped(path, f"{path}: not a file ({_special_kind(path)}), "
                                         "refused: remove it from the collection"))
    # _walk yields in sorted order of each folder's names, which is not quite sorted
    # relative paths ("a b/x" < "a/x" as text, not as a walk): sort as the names sort.
    files.sort(key=lambda item: item.relative_to(root).as_posix())
    skipped.sort(key=lambda item: item.path.relative_to(root).as_posix())
    return files, skipped


def _special_kind(path: Path) -> str:
    """The type of a special file, from ``lstat`` (which never opens it)."""
    try:
        return _kind(os.lstat(path).st_mode)
    except OSError:
        return "special file"


def dvc_hazards(root: PathLike) -> List[Skipped]:
    """Entries under ``root`` that DVC would block on or fail to hash, hidden ones too.

    DVC opens every file of a folder dependency to hash it: a FIFO (or a link to one)
    blocks it forever, and a broken link or a link loop stops it with an error.
    Found from the directory listing and ``stat``, without opening anything.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    hazards = []
    for path, entry in _walk(root, hidden=True):
        if entry.is_symlink() or not (entry.is_file(follow_symlinks=False)
                                      or entry.is_dir(follow_symlinks=False)):
            reason = hazard_of(path)
            if reason:
                hazards.append(Skipped(path, reason))
    return hazards


def hazard_of(path: PathLike) -> Optional[str]:
    """Why DVC would block on or fail to hash one path, or None (also if it is absent)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return _link_reason(path)
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            return None
        return f"{path}: symbolic link to a {_kind(mode)}"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return f"{path}: {_kind(mode)}"
