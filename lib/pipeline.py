"""The ETL phase over files: every photo under a folder into one streamed ``.npy``.

Like the other phases (``lib.features.run_feature_engineering`` and
``lib.vectorizer.run_embedding``) it writes chunk by chunk, with plain file reads and
writes into preallocated ``.npy`` files (``lib.artifacts.NpyRowReader`` and
``open_npy_writer``), so peak memory is a few chunks, whatever the collection size.
Each phase lives beside the code it runs, so a stage depends only on what it imports.
"""
import concurrent.futures
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from lib.artifacts import NpyRowReader, clean_leftovers, open_npy_writer, save_json, save_npy
from lib.config import EtlConfig
from lib.errors import InputError, PathLike, printable
from lib.images import ImageReadError, load_image, scan_images

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


def run_etl(master: PathLike, images_out: PathLike, names_out: PathLike,
            report_out: PathLike, config: EtlConfig) -> Dict[str, Any]:
    """Reads every image under ``master`` and writes the resized RGB array and names.

    Unreadable files are logged, skipped and listed with their reason in the report;
    one bad file never stops the stage. So are the entries the special-files policy
    leaves out (:mod:`lib.files`: symbolic links, FIFOs, sockets, devices). Names are
    kept raw in the artifacts; the log shows them escaped (:func:`printable`).

    Args:
        master: Folder of photos, searched recursively.
        images_out: ``.npy`` for the (N, S, S, 3) ``uint8`` RGB array.
        names_out: ``.npy`` for the (N,) unicode names: paths relative to ``master``,
            in the same row order.
        report_out: JSON report of counts and skipped files.
        config: The ETL settings: the transform, decoding threads and chunk size.

    Returns:
        The report.

    Raises:
        InputError: ``master`` is missing, or holds no readable image.
    """
    master = Path(master)
    files, skipped, found = _collection(master)
    workers, chunk_size = config.workers, config.chunk_size
    side = config.image_size
    names: List[str] = []
    # Named like lib.artifacts.atomic_path's temporaries, so that the next run of the
    # stage removes it if this one is killed (lib.artifacts.clean_leftovers).
    tmp_rows = Path(images_out).with_name(f".{Path(images_out).name}.rows.tmp.npy")
    clean_leftovers(tmp_rows)
    with open_npy_writer(tmp_rows, (len(files), side, side, 3), np.uint8) as rows:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(files), chunk_size):
                chunk = files[start:start + chunk_size]
                for path, result in pool.map(lambda p: _load_one(p, config), chunk):
                    name = path.relative_to(master).as_posix()
                    if isinstance(result, str):
                        logger.warning("skipping %s", printable(result))
                        skipped.append({"name": name, "reason": result})
                        continue
                    rows[len(names)] = result                      # (S, S, 3) RGB
                    names.append(name)
                logger.info("ETL: %d/%d files", min(start + chunk_size, len(files)), len(files))
    try:
        if not names:
            raise InputError(f"none of the {found} image files under {master} is "
                             f"readable; first: {skipped[0]['reason']}")
        if len(names) == len(files):       # nothing skipped: the rows file is the output
            os.replace(tmp_rows, images_out)
        else:
            source = NpyRowReader(tmp_rows)
            with open_npy_writer(images_out, (len(names), side, side, 3), np.uint8) as out:
                for start in range(0, len(names), chunk_size):
                    out[start:start + chunk_size] = source.read(
                        start, min(start + chunk_size, len(names)))
    finally:
        tmp_rows.unlink(missing_ok=True)
    save_npy(names_out, np.array(names, dtype=np.str_))
    skipped.sort(key=lambda item: item["name"])
    report = {"files_found": found, "images_kept": len(names),
              "files_skipped": len(skipped), "skipped": skipped}
    save_json(report_out, report)
    logger.info("ETL: kept %d images, skipped %d", len(names), len(skipped))
    return report
