"""What serving loads is what it verified: DVC's lock, private snapshots, content hashes.

:mod:`lib.pinning.verify` checks the served artifacts against ``dvc.lock``; this module makes
that check hold until the engine has loaded them:

- :func:`repository_lock` holds DVC's own repository lock (the one ``dvc repro``,
  ``dvc checkout`` and ``dvc pull`` take) while the artifacts are checked, so no DVC
  command changes them halfway through the check.
- :func:`snapshot` then hard-links the checked files into a private folder under
  ``.dvc/tmp/serve-pins/``, still under the lock. DVC replaces a file by a new one
  (it never writes into a checked-out file), so the snapshot keeps the very inodes
  that were checked whatever happens in the workspace next: the engine loads from it,
  and a ``dvc checkout`` during a slow load cannot mix versions. (Where hard links are
  impossible, e.g. across file systems, the files are copied instead.)
- :func:`check_content` is full verification: it hashes the snapshot's bytes with
  DVC's own hashing but without DVC's stat cache, which trusts a file whose inode,
  size and mtime it has seen before. A corrupted DVC cache object checked out into the
  workspace passes ``dvc status`` and the default check; full verification refuses it
  and names the corrupted cache object.
- :func:`refuse_hazards` finds what would make DVC hang or fail before DVC opens it
  (a FIFO in ``data/master``, a broken link, a link loop; see :mod:`lib.photos.files`).
"""
import contextlib
import copy
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from lib.errors import PinningError
from lib.photos import dvc_hazards, hazard_of, Skipped

if TYPE_CHECKING:
    from dvc.repo import Repo

logger = logging.getLogger(__name__)

# Private snapshots of verified artifacts, relative to the repository root (git-ignored
# by DVC's own .dvc/.gitignore).
SNAPSHOTS = Path(".dvc") / "tmp" / "serve-pins"
LOCK_WAIT_S = 30.0          # how long to wait for a running DVC command to finish


@contextlib.contextmanager
def repository_lock(repo: "Repo", wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Holds DVC's repository lock, waiting up to ``wait_s`` for another DVC command.

    Raises:
        PinningError: Another DVC command held the lock all that time.
    """
    # pylint: disable=import-outside-toplevel
    from dvc.lock import LockError
    from dvc.repo import lock_repo
    deadline = time.monotonic() + wait_s
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(lock_repo(repo))
                break
            except LockError as err:       # DVC itself retries for 3 seconds
                if time.monotonic() >= deadline:
                    raise PinningError(
                        f"another DVC command (dvc repro, checkout, pull, ...) has held the "
                        f"repository lock of {repo.root_dir} for over {wait_s:.0f} s, so the "
                        "artifacts may be changing: serve again when it has finished") from err
                logger.info("waiting for another DVC command to release the repository lock")
        yield


def refuse_hazards(root: Path, paths: Iterable[Path]) -> None:
    """Refuses, before DVC hashes them, paths holding what DVC would hang or fail on.

    Raises:
        PinningError: A FIFO, socket, device, broken link or link loop, named.
    """
    found = []
    for path in paths:
        reason = hazard_of(path)
        if reason:
            found.append(Skipped(path, reason))
        elif path.is_dir():
            found.extend(dvc_hazards(path))
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise PinningError(f"{found[0].reason}{more}: DVC would hang or fail hashing it, so "
                           f"the artifacts cannot be verified: remove it from "
                           f"{_rel(root, found[0].path.parent)} (see the README, special "
                           "files)")


def _rel(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` when it is inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def snapshot(root: Path, paths: Mapping[str, Path]) -> Tuple[Path, Dict[str, Path]]:
    """Hard-links (else copies) the given files and folders into a private folder.

    Call it with the repository lock held, right after checking ``paths``. Snapshots
    of processes that are gone are removed first.

    Returns:
        The snapshot folder (remove it with :func:`release` once loaded) and the
        snapshot path of each artifact, by key.
    """
    parent = root / SNAPSHOTS
    parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))
    copies: Dict[str, Path] = {}
    try:
        for key, path in paths.items():
            target = folder / key / path.name
            target.parent.mkdir()
            if path.is_dir():
                shutil.copytree(path, target, copy_function=_link_or_copy)
            else:
                _link_or_copy(path, target)
            copies[key] = target
    except BaseException:
        release(folder)
        raise
    return folder, copies


def _link_or_copy(source: str, target: str) -> None:
    """A hard link of ``source`` at ``target``, or a copy where links are impossible."""
    try:
        os.link(source, target)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                             errno.EACCES):
            raise
        logger.info("copying %s into the serving snapshot (no hard link: %s)", source,
                    err.strerror)
        shutil.copy2(source, target)


def release(folder: Optional[Path]) -> None:
    """Removes a snapshot folder (loaded arrays and models stay valid: they are mapped
    or in memory, and a mapped file lives on until it is unmapped)."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_orphans(parent: Path) -> None:
    """Removes the snapshots of processes that no longer run (killed while serving)."""
    for folder in parent.iterdir():
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            logger.info("removing %s, left by a serving process that is gone", folder)
            release(folder)


def _alive(pid: int) -> bool:
    """Whether a process with that id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def content_hash(repo: "Repo", path: Path, name: str = "md5") -> str:
    """DVC's hash of a file or folder, computed from its bytes, never from the stat cache."""
    # pylint: disable=import-outside-toplevel
    from dvc.fs import LocalFileSystem
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.state import StateNoop
    odb = copy.copy(repo.cache.local)
    odb.state = StateNoop()                  # no remembered hashes: read every byte
    _, _, obj = build(odb, str(path), LocalFileSystem(), name, dry_run=True)
    return str(obj.hash_info.value)


def check_content(repo: "Repo", label: str, path: Path, expected: str) -> None:
    """Full verification of one artifact: its bytes must hash to ``expected``.

    Args:
        repo: The DVC repository.
        label: The artifact in messages, e.g. ``data/model/x.npy (vectors)``.
        path: Its local copy (the snapshot).
        expected: The md5 ``dvc.lock`` records (``.dir`` for folders).

    Raises:
        PinningError: The content differs; names a corrupted DVC cache object if that
            is where it came from, and the repair.
    """
    actual = content_hash(repo, path)
    if actual == expected:
        return
    corrupted = corrupted_cache_objects(repo, expected)
    if corrupted:
        raise PinningError(
            f"{label} does not hold the content dvc.lock records (md5 {actual} read, "
            f"{expected} recorded) although DVC's stat cache says it does: it was checked "
            f"out from a corrupted DVC cache object, {corrupted[0]}"
            + (f" (and {len(corrupted) - 1} more)" if len(corrupted) > 1 else "")
            + f": delete that object and {label.split()[0]}, then run `dvc pull` (or "
            "`dvc repro`) to restore them")
    raise PinningError(f"{label} does not hold the content dvc.lock records (md5 {actual} "
                       f"read, {expected} recorded) although DVC's stat cache says it does "
                       f"(changed in place?): delete {label.split()[0]} and run `dvc "
                       "checkout` (or `dvc pull`) to restore it")


def corrupted_cache_objects(repo: "Repo", expected: str) -> List[str]:
    """The objects of DVC's local cache behind ``expected`` whose bytes do not match
    their name (for a folder, its listing and each file's object)."""
    odb = repo.cache.local
    oids = [expected]
    if expected.endswith(".dir"):
        listing = Path(odb.oid_to_path(expected))
        try:
            entries = json.loads(listing.read_text(encoding="utf-8"))
            oids = [str(entry["md5"]) for entry in entries]
        except (OSError, ValueError, KeyError, TypeError):
            return [str(listing)] if listing.exists() else []
    bad = []
    for oid in oids:
        path = Path(odb.oid_to_path(oid))
        if path.is_file() and _file_md5(path) != oid:
            bad.append(str(path))
    return bad


def _file_md5(path: Path) -> str:
    """md5 of a file's bytes (DVC's file hash), read in 1 MiB blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
