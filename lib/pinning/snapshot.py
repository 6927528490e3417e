"""What serving loads is what it verified: DVC's lock, private snapshots, content hashes.

:mod:`lib.pinning.verify` checks the served artifacts against ``dvc.lock``; this module makes
that check hold for as long as the engine answers:

- :func:`repository_lock` holds DVC's own repository lock (the one ``dvc repro``,
  ``dvc checkout`` and ``dvc pull`` take) while the artifacts are checked, so no DVC
  command changes them halfway through the check. It is held for the check only:
  never while the files are copied or the model loads.
- :func:`snapshot` then makes private copies of the checked files in a folder under
  ``.dvc/tmp/serve-pins/`` (a reflink, else a real copy; never a hard link, which would
  share an in-place write into the workspace file or, with DVC's link cache types, the
  DVC cache object: :mod:`lib.pinning.copies`), hashing every byte it copies. The
  engine loads from the copies; the caller compares their md5 with ``dvc.lock``, so a
  ``dvc checkout`` that lands while they are copied, or bytes that changed without
  DVC's stat cache noticing, are caught, and a version is served whole or not at all.
- :func:`content_hash` and :func:`content_mismatch`: DVC's hash of a file or folder
  read from its bytes (never from DVC's stat cache), and the one-line refusal of bytes
  that are not the recorded version, naming a corrupted DVC cache object when that is
  where they came from.
- :func:`refuse_hazards` finds what would make DVC hang or fail before DVC opens it
  (a FIFO in ``data/master``, a broken link, a link loop; see :mod:`lib.photos.files`).
"""
import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from lib.errors import PinningError
from lib.pinning.copies import CopyStats, file_md5, Manifest, private_copy
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


def snapshot(root: Path, paths: Mapping[str, Path], parent: Optional[Path] = None
             ) -> Tuple[Path, Dict[str, Path], Dict[str, Manifest]]:
    """Private copies of the given files and folders, each byte hashed as it is copied.

    Snapshots of processes that are gone are removed first. The copies are reflinks
    where the file system has them, else real copies (:mod:`lib.pinning.copies`), so no
    later write into the sources, in place or not, reaches them.

    Args:
        root: The repository root.
        paths: The file or folder to copy, by key.
        parent: Where the snapshot folder goes (default ``root/.dvc/tmp/serve-pins``).

    Returns:
        The snapshot folder (remove it with :func:`release` when the version is no
        longer served), the copy of each artifact by key, and the md5s of its bytes.

    Raises:
        PinningError: A source vanished while it was copied, or the copy failed (a
            full disk, say); one line naming it.
    """
    parent = root / SNAPSHOTS if parent is None else parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))
    copies: Dict[str, Path] = {}
    manifests: Dict[str, Manifest] = {}
    stats = CopyStats()
    try:
        for key, path in paths.items():
            target = folder / key / path.name
            target.parent.mkdir()
            try:
                manifests[key] = private_copy(path, target, stats)
            except OSError as err:
                raise PinningError(f"cannot copy {_rel(root, path)} ({key}) into the serving "
                                   f"snapshot {_rel(root, folder)}: {err.strerror or err}"
                                   ) from err
            copies[key] = target
    except BaseException:
        release(folder)
        raise
    logger.debug("serving snapshot %s: %s", _rel(root, folder), stats.describe())
    return folder, copies, manifests


def release(folder: Optional[Path]) -> None:
    """Removes a snapshot folder (loaded arrays and models stay valid: they are mapped
    or in memory, and a mapped file lives on, private, until it is unmapped)."""
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
        PinningError: The content differs (:func:`content_mismatch`).
    """
    actual = content_hash(repo, path)
    if actual != expected:
        raise content_mismatch(repo, label, actual, expected)


def content_mismatch(repo: "Repo", label: str, actual: str, expected: str) -> PinningError:
    """The refusal of bytes that hash to ``actual`` where ``dvc.lock`` records ``expected``.

    Names a corrupted DVC cache object if that is where the bytes came from, and the
    repair.
    """
    corrupted = corrupted_cache_objects(repo, expected)
    if corrupted:
        return PinningError(
            f"{label} does not hold the content dvc.lock records (md5 {actual} read, "
            f"{expected} recorded) although DVC's stat cache says it does: it was checked "
            f"out from a corrupted DVC cache object, {corrupted[0]}"
            + (f" (and {len(corrupted) - 1} more)" if len(corrupted) > 1 else "")
            + f": delete that object and {label.split()[0]}, then run `dvc pull` (or "
            "`dvc repro`) to restore them")
    return PinningError(f"{label} does not hold the content dvc.lock records (md5 {actual} "
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
        if path.is_file() and file_md5(path)[0] != oid:
            bad.append(str(path))
    return bad


def linked_cache_objects(out) -> List[str]:
    """The DVC cache objects of an output's recorded version that its workspace files
    are links of (hard or symbolic) and whose bytes no longer match their name: what
    an in-place write into a linked workspace file did to the cache."""
    odb = out.repo.cache.local
    workspace = Path(out.fs_path)
    expected = str(out.hash_info.value)
    pairs = [(workspace, expected)]
    if expected.endswith(".dir"):
        try:
            entries = json.loads(Path(odb.oid_to_path(expected)).read_text(encoding="utf-8"))
            pairs = [(workspace / str(entry["relpath"]), str(entry["md5"]))
                     for entry in entries]
        except (OSError, ValueError, KeyError, TypeError):
            return []
    shared = []
    for path, oid in pairs:
        cached = Path(odb.oid_to_path(oid))
        try:
            if path.samefile(cached) and file_md5(cached)[0] != oid:
                shared.append(str(cached))
        except OSError:
            continue                             # absent on either side: not linked
    return shared
