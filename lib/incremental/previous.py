"""Incremental stages: their previous outputs, read from DVC's cache, and their plan.

``dvc repro`` removes a stage's outputs from the workspace before running the stage,
but ``dvc.lock`` still records their hashes from the last run, and DVC's cache holds
their contents (also on another machine after ``git clone`` + ``dvc pull``). An
incremental stage reads its previous outputs there, read-only: nothing is copied or
unprotected, and every file read belongs to one recorded run. When ``dvc.lock`` or
the cache lacks them (a first build, a ``dvc gc``), the stage builds in full.
"""
import argparse
import functools
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from lib.arrays import ArraySource
from lib.artifacts import recorded_output
from lib.errors import ArtifactError, PathLike
from lib.incremental.rows import plan_rows, recipe, RowIndex, RowPlan

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _local_cache(root: str) -> Any:
    """The project's DVC cache (its local object database), looked up once per process."""
    from dvc.repo import Repo  # pylint: disable=import-outside-toplevel
    with Repo(root) as repo:
        return repo.cache.local


def _object_paths(root: Path, md5s: Sequence[str]) -> List[Optional[Path]]:
    """Where DVC's local cache keeps objects, for those that are there."""
    from dvc.exceptions import DvcException  # pylint: disable=import-outside-toplevel
    try:
        cache = _local_cache(str(Path(root).resolve()))
        paths = [Path(cache.oid_to_path(md5)) for md5 in md5s]
    except DvcException as err:
        logger.info("no previous outputs: %s", err)
        return [None] * len(md5s)
    return [path if path.is_file() else None for path in paths]


def _object_path(root: Path, md5: str) -> Optional[Path]:
    """Where DVC's local cache keeps an object, if it is there."""
    return _object_paths(root, [md5])[0]


def _checked(cached: Optional[Path], entry: Dict[str, Any]) -> Optional[Path]:
    """The cached file, unless its size differs from what ``dvc.lock`` records.

    The cache is trusted as DVC trusts it (its files are read-only); a changed size
    means someone wrote into it, and nothing is reused from it then.
    """
    if cached is not None and entry.get("size") not in (None, cached.stat().st_size):
        logger.warning("DVC's cached %s is damaged (its size differs from dvc.lock): not "
                       "reusing it", entry.get("path"))
        return None
    return cached


def _listing(root: Path, md5: str, output: PathLike) -> List[Dict[str, Any]]:
    """The ``relpath``/``md5`` entries of a cached folder output (empty if not cached)."""
    listing = _object_path(root, md5)
    if listing is None:
        return []
    try:
        files = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.info("no previous %s: %s", output, err)
        return []
    return [item for item in (files if isinstance(files, list) else ())
            if isinstance(item, dict) and item.get("relpath") and item.get("md5")]


def previous_output(root: PathLike, output: PathLike, member: Optional[str] = None
                    ) -> Optional[Path]:
    """The cached file of an output as ``dvc.lock`` records it, or None.

    Args:
        root: The project root (where ``dvc.lock`` is).
        output: The output's path (absolute, or relative to the working directory).
        member: For a directory output, the file inside it wanted.

    Returns:
        The read-only file in DVC's cache, or None if not recorded or not cached.
    """
    root = Path(root)
    entry = recorded_output(root, output)
    if entry is None or entry.get("hash") != "md5" or not entry.get("md5"):
        return None
    md5 = str(entry["md5"])
    if member is None:
        return None if md5.endswith(".dir") else _checked(_object_path(root, md5), entry)
    if not md5.endswith(".dir"):
        return None
    for item in _listing(root, md5, output):
        if item["relpath"] == member:
            return _object_path(root, str(item["md5"]))
    return None


def previous_array(root: PathLike, output: PathLike) -> Optional[ArraySource]:
    """The cached array an output was last time: its file, or its shard files in order.

    Returns:
        The file, a tuple of shard files (a sharded array, :mod:`lib.arrays`), or None
        if not recorded or not wholly cached.
    """
    root = Path(root)
    entry = recorded_output(root, output)
    md5 = str((entry or {}).get("md5") or "")
    if not md5.endswith(".dir"):
        return previous_output(root, output)
    items = sorted((item for item in _listing(root, md5, output)
                    if str(item["relpath"]).endswith(".npy")), key=lambda item: item["relpath"])
    shards = tuple(_object_paths(root, [str(item["md5"]) for item in items]))
    if not shards or any(shard is None for shard in shards):
        logger.info("no previous %s: not wholly in DVC's cache", output)
        return None
    return shards


def previous_rows(root: PathLike, array: PathLike, index: PathLike
                  ) -> Tuple[Optional[RowIndex], Optional[ArraySource]]:
    """The row index and array a stage wrote last time, from DVC's cache.

    Returns:
        ``(index, array)``; both None unless both are recorded, cached and readable.
    """
    cached_index, cached_array = previous_output(root, index), previous_array(root, array)
    if cached_index is None or cached_array is None:
        logger.info("no previous %s in DVC's cache: building it in full", array)
        return None, None
    try:
        return RowIndex.load(cached_index), cached_array
    except ArtifactError as err:
        logger.warning("building %s in full: %s", array, err)
        return None, None


def plan_stage(root: PathLike, upstream_index: PathLike, array_out: PathLike,
               index_out: PathLike, script: PathLike, settings: Mapping[str, Any],
               **extra: Any) -> Tuple[RowIndex, RowPlan]:
    """The row index and plan of a stage that transforms its upstream's rows one by one.

    Args:
        root: The project root.
        upstream_index: The upstream stage's row index (its keys are this stage's).
        array_out: The stage's output array.
        index_out: The stage's output row index.
        script: The stage script (hashed with its ``lib`` imports).
        settings: The stage's row settings (:func:`lib.incremental.rows.row_settings`).
        **extra: Anything else the rows depend on (see :func:`lib.incremental.rows.recipe`).

    Returns:
        The new row index (to save once the array is written) and the plan.

    Raises:
        ArtifactError: The upstream row index is missing or malformed.
    """
    upstream = RowIndex.load(upstream_index)
    index = RowIndex.of(upstream.keys, recipe(script, settings, upstream.fingerprint, **extra))
    plan = plan_rows(upstream.keys, index, *previous_rows(root, array_out, index_out))
    logger.info("%s", plan.describe(Path(array_out).name))
    return index, plan


def add_row_index_args(parser: argparse.ArgumentParser) -> None:
    """``--upstream-rows`` and ``--rows``: the row indexes an incremental stage reads and writes."""
    parser.add_argument("--upstream-rows", type=Path, default=None,
                        help="row index (.npz) of the input array, written by the stage before")
    parser.add_argument("--rows", type=Path, default=None,
                        help="output row index (.npz): with --upstream-rows, only rows not "
                             "in the previous output are computed")


def linker(root: PathLike) -> Callable[[Path, Path], None]:
    """How to put a cached file at a new path as DVC would check it out (one look at the
    project's DVC config): a hard link to the read-only cached file where the project
    links outputs to the cache (``cache.type`` with ``hardlink`` or ``symlink``; DVC does
    not relink an output whose content it has already cached, so a copy would stay a
    second copy on disk), else, or where linking fails, a copy. Nothing writes into the
    file either way."""
    types = set(_local_cache(str(Path(root).resolve())).cache_types or ())

    def link(cached: Path, target: Path) -> None:
        if {"hardlink", "symlink"} & types:
            try:
                os.link(cached, target)
                return
            except OSError as err:
                logger.info("copying %s: cannot link it (%s)", cached, err)
        shutil.copyfile(cached, target)
    return link


def restore_file(root: PathLike, cached: Path, target: Path) -> None:
    """Puts a cached file at ``target`` (a new path) as DVC would check it out
    (:func:`linker`)."""
    linker(root)(cached, target)
