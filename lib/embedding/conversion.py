"""A cache of model conversions that can only give back what it was given for a model.

An entry is a folder of files (e.g. OpenVINO's ``model.xml`` and ``model.bin``) plus
``entry.json``, a manifest that records the SHA-256 of the source model bytes the
conversion was made from and the SHA-256 of every file. :func:`read_entry` returns an
entry's bytes only when the manifest names the very source digest asked for and every
file still has its recorded digest; the bytes returned are the bytes checked. So an
entry stored under the wrong name (a foreign or stale folder), half written, damaged,
or from an older layout without a manifest is never used: the caller converts again
and :func:`write_entry` replaces it atomically.
"""
import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from lib.artifacts import atomic_path

logger = logging.getLogger(__name__)

MANIFEST = "entry.json"


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data``, hexadecimal."""
    return hashlib.sha256(data).hexdigest()


def read_entry(folder: Path, source_sha256: str, names: tuple) -> Optional[Dict[str, bytes]]:
    """The files of a cache entry made from the source with ``source_sha256``, or None.

    Args:
        folder: The entry's folder.
        source_sha256: SHA-256 of the model bytes the caller loaded.
        names: The file names the entry must hold.

    Returns:
        Each file's bytes by name, or None (logged) when the entry is missing or
        cannot be trusted.
    """
    if not folder.is_dir():
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        recorded = manifest["files"]
        files = {name: (folder / name).read_bytes() for name in names}
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("converting again: cache entry %s is incomplete or unreadable (%s)",
                       folder, err)
        return None
    if manifest.get("source_sha256") != source_sha256:
        logger.warning("converting again: cache entry %s was made from another model "
                       "(sha256 %s, this one is %s)", folder, manifest.get("source_sha256"),
                       source_sha256)
        return None
    for name, data in files.items():
        if not isinstance(recorded, dict) or recorded.get(name) != sha256_hex(data):
            logger.warning("converting again: %s in cache entry %s is damaged (its sha256 "
                           "differs from the manifest's)", name, folder)
            return None
    return files


def write_entry(folder: Path, source_sha256: str, files: Mapping[str, Path],
                extra: Optional[Mapping[str, str]] = None) -> None:
    """Stores converted files (already written in a scratch folder) as an entry, atomically.

    Args:
        folder: The entry's folder (replaced whole if it exists).
        source_sha256: SHA-256 of the model bytes the conversion was made from.
        files: The converted files, by the name they take in the entry. They are
            moved, so they must be on the file system of ``folder``.
        extra: More fields for the manifest (e.g. the converter's version).

    Raises:
        OSError: The entry cannot be written (the caller decides whether it matters).
    """
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        digests = {}
        for name, path in files.items():
            target = tmp / name
            path.replace(target)
            digests[name] = sha256_hex(target.read_bytes())
        manifest = {"source_sha256": source_sha256, "files": digests, **dict(extra or {})}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                    encoding="utf-8")


# Compiled blobs kept (each about the model's size): a few models, precisions and hints.
COMPILED_KEPT = 8


def prune_compiled(folder: Path, keep: int = COMPILED_KEPT) -> List[Path]:
    """Removes all but the ``keep`` newest compiled blobs of OpenVINO's cache.

    OpenVINO writes a blob per model, device and setting and never removes one; a blob
    removed is compiled again when next needed. Call it when a blob was just written.
    Returns the blobs removed.
    """
    try:
        blobs = sorted(folder.glob("*.blob"), key=lambda path: path.stat().st_mtime,
                       reverse=True)
    except OSError:               # a blob removed by another process while listing
        return []
    removed = []
    for blob in blobs[keep:]:
        try:
            blob.unlink()
            removed.append(blob)
        except OSError as err:
            logger.info("compiled model %s not removed: %s", blob, err)
    return removed
