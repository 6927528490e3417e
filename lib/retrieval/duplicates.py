"""Near-duplicate photos: pairs above a cosine threshold, grouped, found through the index.

Each photo's nearest neighbours come from the collection's index: the approximate one
proposes ``neighbours`` candidates per photo, re-scored by exact cosine; the exact scan
scores a block of rows against a block of columns at a time (never an N x N matrix,
and memory does not grow with N). Pairs at or above the threshold are joined into
groups (union-find), so a photo and its re-encoded, resized and cropped copies end in
one group even when some of them are not among each other's nearest neighbours.
"""
import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lib.artifacts import atomic_path, save_json
from lib.config import IndexConfig
from lib.errors import InputError, PathLike
from lib.photos import render_group
from lib.retrieval.index import space_rows, VectorIndex
from lib.retrieval.whitening import Whitening

logger = logging.getLogger(__name__)

_BLOCK_CELLS = 1 << 24     # scores held at once by the exact scan (64 MiB of float32)
_BATCH = 1024              # photos per step (index search, or exact block of rows)


@dataclasses.dataclass(frozen=True)
class Group:
    """Near-identical photos.

    Attributes:
        rows: (G,) collection rows, ascending.
        scores: (G,) each member's best cosine to another member.
    """

    rows: np.ndarray
    scores: np.ndarray


def find_pairs(vectors: np.ndarray, whitening: Optional[Whitening],
               index: Optional[VectorIndex], config: IndexConfig, threshold: float,
               neighbours: int) -> List[Tuple[int, int, float]]:
    """Pairs of rows whose cosine (in the search space) is at least ``threshold``.

    Args:
        vectors: (N, D) collection vectors (a memmap is fine).
        whitening: The whitening fit, or None.
        index: An approximate index, or None for the exact scan (which finds every
            pair; the index finds those among each photo's ``neighbours`` nearest).
        config: The index's search-time settings.
        threshold: Lowest cosine of a near-duplicate pair.
        neighbours: Candidates examined per photo through the index.

    Returns:
        (row a, row b, cosine) with a < b, each pair once, sorted by rows.
    """
    total = vectors.shape[0]
    found: Dict[Tuple[int, int], float] = {}
    if index is None or not index.approximate:
        width = _BLOCK_CELLS // _BATCH                      # columns scored per step
        for start in range(0, total, _BATCH):
            block = space_rows(vectors, whitening, np.arange(start, min(start + _BATCH, total)))
            for first in range(start, total, width):
                other = space_rows(vectors, whitening,
                                   np.arange(first, min(first + width, total)))  # (C, D')
                scores = block @ other.T                                         # (B, C)
                for i, j in zip(*np.nonzero(scores >= threshold)):
                    if start + i < first + j:
                        found[(int(start + i), int(first + j))] = float(scores[i, j])
    else:
        for start in range(0, total, _BATCH):
            queries = space_rows(vectors, whitening, np.arange(start, min(start + _BATCH, total)))
            candidates = index.candidates(queries, neighbours + 1, config)   # (B, K)
            for i, rows in enumerate(candidates):
                rows = np.unique(rows[(rows >= 0) & (rows != start + i)])    # (K',)
                scores = space_rows(vectors, whitening, rows) @ queries[i]   # (K',)
                for j, score in zip(rows[scores >= threshold], scores[scores >= threshold]):
                    pair = (min(start + i, int(j)), max(start + i, int(j)))
                    found[pair] = float(score)
    return sorted((a, b, score) for (a, b), score in found.items())


def group_pairs(pairs: Sequence[Tuple[int, int, float]]) -> List[Group]:
    """Joins pairs into groups (union-find), largest first, then by first row."""
    parent: Dict[int, int] = {}

    def root(row: int) -> int:
        parent.setdefault(row, row)
        while parent[row] != row:
            parent[row] = parent[parent[row]]
            row = parent[row]
        return row

    best: Dict[int, float] = {}
    for a, b, score in pairs:
        parent[root(a)] = root(b)
        best[a], best[b] = max(best.get(a, -1.0), score), max(best.get(b, -1.0), score)
    members: Dict[int, List[int]] = {}
    for row in sorted(parent):
        members.setdefault(root(row), []).append(row)
    groups = [Group(np.array(rows, dtype=np.int64),
                    np.array([best[row] for row in rows], dtype=np.float32))
              for rows in members.values()]
    return sorted(groups, key=lambda group: (-group.rows.shape[0], int(group.rows[0])))


def pair_set(groups: Sequence[Group]) -> set:
    """Every (a, b) row pair, a < b, that shares a group."""
    return {(int(a), int(b)) for group in groups for i, a in enumerate(group.rows)
            for b in group.rows[i + 1:]}


def write_report(folder: PathLike, groups: Sequence[Group], names: np.ndarray,
                 images: Optional[np.ndarray], settings: Dict[str, Any],
                 max_pictures: int) -> Path:
    """Writes ``duplicates.json``, ``duplicates.csv`` and one picture per group.

    The folder is replaced as a whole, atomically (only an earlier report's folder, or
    an empty one, is replaced). Pictures (``group-0001.png``, ...)
    are made for the first ``max_pictures`` groups (largest first), when the landing
    images are given.

    Returns:
        The folder.
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "duplicates.json").is_file():
        raise InputError(f"refusing to replace {folder}: it is not a duplicates report "
                         "folder; choose another --output")
    listed = [{"group": number, "size": int(group.rows.shape[0]),
               "images": [str(names[row]) for row in group.rows],
               "best_cosine": [round(float(score), 6) for score in group.scores]}
              for number, group in enumerate(groups, start=1)]
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_json(tmp / "duplicates.json", {**settings, "groups": listed,
                                            "photos_in_groups": sum(g["size"] for g in listed)})
        with open(tmp / "duplicates.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["group", "image", "best_cosine"])
            for entry in listed:
                writer.writerows((entry["group"], name, f"{score:.4f}")
                                 for name, score in zip(entry["images"], entry["best_cosine"]))
        if images is not None:
            for number, group in enumerate(groups[:max_pictures], start=1):
                tiles = [(np.asarray(images[row]), str(names[row]), float(score))
                         for row, score in zip(group.rows, group.scores)]
                render_group(tiles, tmp / f"group-{number:04d}.png")
    return folder
