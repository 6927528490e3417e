"""The last successful workspace check, so that an unchanged workspace skips DVC.

DVC's own status trusts a file whose inode, size and modification time are those it
hashed before (its state database). This stamp does the same one level up: after a
check passes, it records ``dvc.yaml`` and ``dvc.lock`` (their bytes), the settings
serving uses, and the inode, size and mtime of every file the checked stages depend on
or output (folders file by file, so an added, removed or special file differs). The
next pin whose every record still matches skips DVC (its import, its YAML parsing and
its status) and goes straight to copying the served files, whose bytes are still
hashed and compared with ``dvc.lock`` as they are copied: a served file edited in place
with its mtime kept is refused as before. Anything else that differs is checked by DVC
again. The stamp lives in ``.dvc/tmp`` (DVC's scratch folder, not versioned).
"""
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from lib.artifacts import atomic_path
from lib.config import Config

logger = logging.getLogger(__name__)

STAMP = Path(".dvc") / "tmp" / "serve-verified.json"
FORMAT = 1


def _key(root: Path, config: Config) -> str:
    """What the check depended on besides files: the pipeline, the lock, the settings."""
    digest = hashlib.sha256(f"{FORMAT}".encode())
    head = root / ".git" / "HEAD"                 # the commit the version is named by
    names = ["dvc.yaml", "dvc.lock", ".git/HEAD", ".git/packed-refs"]
    try:
        ref = head.read_text(encoding="utf-8").strip()
        if ref.startswith("ref: "):
            names.append(f".git/{ref[5:]}")
    except OSError:
        pass
    for name in names:
        try:
            digest.update((root / name).read_bytes())
        except OSError:
            digest.update(b"\0missing")
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def _files(root: Path, paths: Iterable[str]) -> List[List[Any]]:
    """(path, inode, size, mtime_ns, mode) of each path, folders walked file by file."""
    found = []
    for rel in sorted(set(paths)):
        path = root / rel
        todo = [path]
        while todo:
            current = todo.pop()
            try:
                info = os.lstat(current)
            except OSError:
                found.append([str(current.relative_to(root)), None])
                continue
            found.append([str(current.relative_to(root)), info.st_ino, info.st_size,
                          info.st_mtime_ns, info.st_mode])
            if current.is_dir() and not current.is_symlink():
                todo.extend(sorted(current.iterdir(), reverse=True))
    return found


def record(root: Path, config: Config, paths: Iterable[str], checked: Dict[str, Any]) -> None:
    """Writes the stamp of a check that passed (failing to write it is only logged).

    Args:
        root: The repository root.
        config: The settings the check compared.
        paths: Every file or folder the checked stages depend on or output.
        checked: What the check found (JSON-ready), given back by :func:`matching`.
    """
    paths = list(paths)
    stamp = {"key": _key(root, config), "paths": paths, "files": _files(root, paths),
             "checked": checked}
    try:
        (root / STAMP).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(root / STAMP, suffix=".json") as tmp:
            tmp.write_text(json.dumps(stamp), encoding="utf-8")
    except OSError as err:
        logger.info("the check is not remembered: %s", err)


def matching(root: Path, config: Config) -> Optional[Dict[str, Any]]:
    """What the last check found, if nothing it depended on has changed since; else None."""
    try:
        stamp = json.loads((root / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("key") != _key(root, config):
        return None
    if _files(root, stamp.get("paths", [])) != stamp.get("files"):
        return None
    logger.debug("nothing changed since the last check: DVC is not asked again")
    return stamp.get("checked")
