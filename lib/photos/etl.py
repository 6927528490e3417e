"""The ETL phase over files: every photo under a folder into one streamed ``.npy``.

Like the other phases (``lib.embedding.preprocessing.run_feature_engineering`` and
``lib.embedding.vectorizer.run_embedding``) it writes chunk by chunk, with plain file reads and
writes into preallocated ``.npy`` files (``lib.artifacts.NpyRowReader`` and
``open_npy_writer``), so peak memory is a few chunks, whatever the collection size.
Each phase lives beside the code it runs, so a stage depends only on what it imports.
"""
import concurrent.futures
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from lib.arrays import ArraySource, Layout, open_rows, open_rows_writer
from lib.artifacts import clean_leftovers, NpyRowReader, open_npy_writer, save_json, save_npy
from lib.config import EtlConfig
from lib.errors import ImageReadError, InputError, PathLike, printable
from lib.incremental import content_key, copy_rows, plan_rows, RowIndex, RowPlan
from lib.photos.images import load_image, scan_images
from lib.progress import progress

logger = logging.getLogger(__name__)


def _load_one(path: Path, config: EtlConfig) -> Tuple[Path, Any]:
    """ETL of one file; returns the array, or the reason it is unusable.

    Whatever goes wrong with one file (unreadable, corrupt, too large, out of memory,
    a decoder error) is that file's problem only: the stage goes on without it. Any
    other exception is a bug in the code and stops the stage with its traceback.
    """
    try:
        return path, load_image(path, config)
    except ImageReadError as err:
        return path, str(err)
    except (OSError, MemoryError, cv2.error) as err:
        return path, f"{path}: {type(err).__name__}: {' '.join(str(err).split())}"


def _name_of(path: Path, master: Path) -> Tuple[str, str]:
    """The image name (path relative to ``master``) and, if unusable, why.

    Names are stored and printed as text, so a name that is not valid UTF-8 (a file
    copied from an old archive, say) is refused; the report shows it escaped.
    """
    name = path.relative_to(master).as_posix()
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        return shown, f"{master / shown}: file name is not valid UTF-8; rename the file"
    return name, ""


def _collection(master: Path) -> Tuple[List[Path], List[Dict[str, str]], int]:
    """The files to read, the entries skipped (logged) with reasons, and the count of both.

    Raises:
        InputError: ``master`` is missing or holds no image file.
    """
    found, refused = scan_images(master)
    if not found:
        raise InputError(f"no image files found under {master}"
                         + (f"; skipped: {refused[0].reason}" if refused else ""))
    skipped = [{"name": _name_of(entry.path, master)[0], "reason": entry.reason}
               for entry in refused]
    files = []
    for path in found:
        name, problem = _name_of(path, master)
        if problem:
            skipped.append({"name": name, "reason": problem})
        else:
            files.append(path)
    for item in skipped:
        logger.warning("skipping %s", printable(item["reason"]))
    return files, skipped, len(found) + len(refused)


def _content_keys(files: List[Path], workers: int, chunk_size: int) -> List[Optional[str]]:
    """The content key of each file (None if it cannot be read), hashed in threads."""
    def key_of(path: Path) -> Optional[str]:
        try:
            return content_key(path)
        except OSError:
            return None                         # the decode step reports why
    keys: List[Optional[str]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool, \
            progress(len(files), "hashing", "files") as meter:
        for start in range(0, len(files), chunk_size):
            keys.extend(pool.map(key_of, files[start:start + chunk_size]))
            meter.update(len(files[start:start + chunk_size]))
    return keys


def _decode(files: List[Path], rows_out: Path, config: EtlConfig
            ) -> Tuple[List[int], Dict[int, str]]:
    """Decodes ``files`` into ``rows_out`` (one row each, in order).

    Returns:
        The indices of the files decoded, and the reason of each file that was not.
    """
    side, decoded, failed = config.image_size, [], {}
    with open_npy_writer(rows_out, (len(files), side, side, 3), np.uint8) as rows, \
            concurrent.futures.ThreadPoolExecutor(max_workers=config.workers) as pool, \
            progress(len(files), "ETL", "images") as meter:
        for start in range(0, len(files), config.chunk_size):
            chunk = files[start:start + config.chunk_size]
            for index, (_, result) in enumerate(pool.map(lambda p: _load_one(p, config),
                                                         chunk), start=start):
                if isinstance(result, str):
                    logger.warning("skipping %s", printable(result))
                    failed[index] = result
                else:
                    rows[index] = result                                  # (S, S, 3) RGB
                    decoded.append(index)
            meter.update(len(chunk))
    return decoded, failed


def _plan(files: List[Path], config: EtlConfig, made_by: Optional[Dict[str, Any]],
          previous: Tuple[Optional[RowIndex], Optional[Path]]) -> Tuple[RowIndex, RowPlan]:
    """The content keys of the files and which of them to decode (unreadable ones too)."""
    keys = _content_keys(files, config.workers, config.chunk_size)
    index = RowIndex.of([key or "" for key in keys], made_by or {})
    plan = plan_rows(index.keys, index, *previous)
    plan.sources[[row for row, key in enumerate(keys) if key is None]] = -1   # (F,)
    plan = plan._replace(compute=np.flatnonzero(plan.sources < 0))     # (K,) to decode
    logger.info("%s", plan.describe("ETL"))
    return index, plan


def _write_images(images_out: PathLike, plan: RowPlan, decoded_rows: Path,
                  from_decoded: np.ndarray, kept: np.ndarray, config: EtlConfig,
                  storage: Layout) -> None:
    """Writes the kept files' rows: from the previous output or from the decoded rows.

    Args:
        images_out: The output array.
        plan: The plan (its ``sources`` index the previous output, per file).
        decoded_rows: The rows decoded this run, one per planned file.
        from_decoded: (N,) row in ``decoded_rows`` of each kept file, -1 if reused.
        kept: (N,) the files kept, in order.
        config: The ETL settings (image size, chunk size).
        storage: How the output is stored, with the kept rows' keys (:mod:`lib.arrays`).
    """
    side, chunk_size = config.image_size, config.chunk_size
    if len(kept) == len(plan.sources) == np.count_nonzero(from_decoded >= 0) \
            and not storage.shard_rows:
        os.replace(decoded_rows, images_out)     # all decoded: the rows file is the output
        return
    with open_rows_writer(images_out, (len(kept), side, side, 3), np.uint8, storage,
                          plan.previous, plan.sources[kept]) as out:
        if plan.previous is not None:
            copy_rows(open_rows(plan.previous), out, plan.sources[kept], chunk_size)
        copy_rows(NpyRowReader(decoded_rows), out, from_decoded, chunk_size)


def run_etl(master: PathLike, images_out: PathLike, names_out: PathLike,
            report_out: PathLike, config: EtlConfig,
            made_by: Optional[Dict[str, Any]] = None, index_out: Optional[PathLike] = None,
            previous: Tuple[Optional[RowIndex], Optional[ArraySource]] = (None, None),
            storage: Optional[Layout] = None) -> Dict[str, Any]:
    # pylint: disable=too-many-arguments,too-many-positional-arguments
    """Reads every image under ``master`` and writes the resized RGB array and names.

    Unreadable files are logged, skipped and listed with their reason in the report;
    one bad file never stops the stage. So are the entries the special-files policy
    leaves out (:mod:`lib.photos.files`: symbolic links, FIFOs, sockets, devices). Names are
    kept raw in the artifacts; the log shows them escaped (:func:`printable`).
    With a previous output made the same way
    (equal fingerprints), a photo whose content key it holds is copied from it, not
    decoded again: k new photos cost k decodes (see :mod:`lib.incremental.rows`).

    Args:
        master: Folder of photos, searched recursively.
        images_out: ``.npy`` for the (N, S, S, 3) ``uint8`` RGB array.
        names_out: ``.npy`` for the (N,) unicode names: paths relative to ``master``,
            in the same row order.
        report_out: JSON report of counts and skipped files.
        config: The ETL settings: the transform, decoding threads and chunk size.
        made_by: The :func:`lib.incremental.rows.recipe` of the rows (None: an empty one).
        index_out: Where to write the :class:`RowIndex` of the rows, if anywhere.
        previous: The previous output's row index and ``images`` array, or Nones.
        storage: How the images are stored (:class:`lib.arrays.Layout`; its keys are
            the photos' own); None: one ``.npy`` file.

    Returns:
        The report.

    Raises:
        InputError: ``master`` is missing, or holds no readable image.
    """
    master = Path(master)
    files, skipped, found = _collection(master)
    index, plan = _plan(files, config, made_by, previous)
    # Named like lib.artifacts.atomic_path's temporaries, so that the next run of the
    # stage removes it if this one is killed (lib.artifacts.clean_leftovers).
    tmp_rows = Path(images_out).with_name(f".{Path(images_out).name}.rows.tmp.npy")
    clean_leftovers(tmp_rows)
    try:
        decoded, failed = _decode([files[i] for i in plan.compute], tmp_rows, config)
        for position, reason in sorted(failed.items()):
            skipped.append({"name": files[plan.compute[position]].relative_to(master)
                            .as_posix(), "reason": reason})
        from_new = np.full(len(files), -1, np.int64)                      # (F,)
        from_new[plan.compute[decoded]] = decoded
        kept = np.flatnonzero((plan.sources >= 0) | (from_new >= 0))      # (N,)
        if kept.size == 0:
            raise InputError(f"none of the {found} image files under {master} is "
                             f"readable; first: {skipped[0]['reason']}")
        _write_images(images_out, plan, tmp_rows, from_new[kept], kept, config,
                      dataclasses.replace(storage or Layout(), keys=index.keys[kept]))
    finally:
        tmp_rows.unlink(missing_ok=True)
    names = [files[i].relative_to(master).as_posix() for i in kept]
    save_npy(names_out, np.array(names, dtype=np.str_))
    if index_out is not None:
        RowIndex(index.keys[kept], index.fingerprint, index.recipe).save(index_out)
    skipped.sort(key=lambda item: item["name"])
    report = {"files_found": found, "images_kept": len(names),
              "files_skipped": len(skipped), "skipped": skipped,
              "images_decoded": len(decoded), "images_reused": len(kept) - len(decoded)}
    save_json(report_out, report)
    logger.info("ETL: kept %d images (%d decoded, %d reused), skipped %d", len(names),
                len(decoded), len(kept) - len(decoded), len(skipped))
    return report
