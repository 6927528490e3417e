"""Arrays as one file or as shards cut at content keys: same rows, O(k) changed shards."""
import hashlib
import os
from pathlib import Path
from typing import List

import numpy as np
import pytest

from lib.arrays import Layout, open_rows, open_rows_writer, read_array, row_view, shard_cuts
from lib.arrays.shards import MAX_FACTOR
from lib.artifacts import save_npy
from lib.errors import ArtifactError


def keys_of(count: int, seed: int = 0) -> List[str]:
    """Random 32-hex content keys."""
    rng = np.random.default_rng(seed)
    return [rng.bytes(16).hex() for _ in range(count)]


def write(path: Path, rows: np.ndarray, keys: List[str], shard_rows: int, **reuse) -> None:
    """Writes ``rows`` in a scrambled order of slices and single rows, as stages do."""
    link = reuse.pop("link", None)
    with open_rows_writer(path, rows.shape, rows.dtype, Layout(keys, shard_rows, link),
                          **reuse) as out:
        order = np.random.default_rng(1).permutation(len(rows))
        for row in order[: len(order) // 2]:
            out[int(row)] = rows[row]
        rest = np.sort(order[len(order) // 2:])
        for row in rest:
            out[int(row):int(row) + 1] = rows[row:row + 1]


def shard_digests(folder: Path) -> List[str]:
    """The md5 of each shard file (what DVC stores them by)."""
    return [hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.npy"))]


def test_cuts_are_a_partition_and_bounded():
    keys = keys_of(5000)
    cuts = shard_cuts(keys, 16)
    sizes = np.diff(np.concatenate([[0], cuts]))
    assert cuts[-1] == 5000 and np.all(sizes > 0) and sizes.max() <= MAX_FACTOR * 16
    assert 5000 / 16 * 0.8 < len(cuts) < 5000 / 16 * 1.2
    assert shard_cuts([], 16).tolist() == [0]
    assert shard_cuts(["same"] * 100, 7).max() == 100          # no key cut: bounded anyway
    with pytest.raises(ValueError):
        shard_cuts(keys, 0)


def test_rows_round_trip_through_shards_and_each_shard_is_a_plain_npy(tmp_path):
    rows = np.random.default_rng(0).random((300, 3, 2)).astype(np.float32)   # (N, 3, 2)
    keys = keys_of(300)
    write(tmp_path / "a.npy", rows, keys, shard_rows=8)
    assert (tmp_path / "a.npy").is_dir()
    whole = np.concatenate([np.load(p) for p in sorted((tmp_path / "a.npy").glob("*.npy"))])
    assert np.array_equal(whole, rows)
    assert np.array_equal(read_array(tmp_path / "a.npy", dtype=np.float32, ndim=3), rows)
    reader = open_rows(tmp_path / "a.npy", trailing_shape=(3, 2))
    assert reader.shape == rows.shape and np.array_equal(reader.read(5, 250), rows[5:250])
    assert [start for start, _ in reader.chunks(128)] == [0, 128, 256]
    view = row_view(tmp_path / "a.npy")
    assert np.array_equal(view[17], rows[17]) and np.array_equal(view[-1], rows[-1])
    assert np.array_equal(view[10:20], rows[10:20]) and np.array_equal(view[[3, 1]], rows[[3, 1]])
    shards = tuple(sorted((tmp_path / "a.npy").glob("*.npy")))
    assert np.array_equal(open_rows(shards).read(0, 300), rows)     # cached shard files
    write(tmp_path / "b.npy", rows, keys, shard_rows=0)              # the design: one file
    assert np.array_equal(np.load(tmp_path / "b.npy"), rows)


def test_k_inserted_and_removed_rows_change_about_k_shards(tmp_path):
    rng = np.random.default_rng(2)
    keys = keys_of(2000)
    rows = rng.integers(0, 255, (2000, 4), dtype=np.uint8)                     # (N, 4)
    write(tmp_path / "old", rows, keys, shard_rows=8)
    new_keys, new_rows = list(keys), rows.copy()
    for position, key in zip(rng.choice(1990, 10, replace=False), keys_of(10, seed=9)):
        new_keys.insert(int(position), key)
        new_rows = np.insert(new_rows, int(position), rng.integers(0, 255, 4), axis=0)
    del new_keys[100:105]
    new_rows = np.delete(new_rows, range(100, 105), axis=0)
    write(tmp_path / "new", new_rows, new_keys, shard_rows=8)
    old, new = shard_digests(tmp_path / "old"), shard_digests(tmp_path / "new")
    added = set(new) - set(old)
    assert len(new) > 200 and len(added) <= 2 * 15, (len(added), len(new))

    # Written again with the old version at hand: unchanged shards are linked, not written.
    lookup = {key: row for row, key in enumerate(keys)}
    sources = np.array([lookup.get(key, -1) for key in new_keys])             # (N,)
    before = {path: (path.stat().st_mtime_ns, path.read_bytes())
              for path in sorted((tmp_path / "old").glob("*.npy"))}
    linked: List[Path] = []

    def link(source: Path, target: Path) -> None:
        os.link(source, target)
        linked.append(source)

    write(tmp_path / "linked", new_rows, new_keys, shard_rows=8,
          previous=tmp_path / "old", sources=sources, link=link)
    assert shard_digests(tmp_path / "linked") == new                  # the same bytes
    assert len(new) - len(added) - 2 <= len(linked) <= len(new) - len(added)
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in before} == before


def test_a_file_becomes_shards_and_back_atomically(tmp_path):
    rows = np.arange(40, dtype=np.int64).reshape(20, 2)
    save_npy(tmp_path / "x.npy", rows)
    write(tmp_path / "x.npy", rows, keys_of(20), shard_rows=3)
    assert (tmp_path / "x.npy").is_dir()
    write(tmp_path / "x.npy", rows, keys_of(20), shard_rows=0)
    assert (tmp_path / "x.npy").is_file() and np.array_equal(np.load(tmp_path / "x.npy"), rows)
    with pytest.raises(RuntimeError):
        with open_rows_writer(tmp_path / "x.npy", rows.shape, rows.dtype, Layout(keys_of(20), 3)):
            raise RuntimeError("killed half way")
    assert (tmp_path / "x.npy").is_file()                                # the old one stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_bad_shards_are_one_line_artifact_errors(tmp_path):
    folder = tmp_path / "v.npy"
    folder.mkdir()
    with pytest.raises(ArtifactError, match="holds no .npy shard"):
        open_rows(folder)
    save_npy(folder / "000000.npy", np.zeros((2, 3), np.float32))
    save_npy(folder / "000001.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(ArtifactError, match="shard 000001.npy has shape"):
        read_array(folder)
    with pytest.raises(ArtifactError, match="dtype"):
        open_rows(folder, dtype=np.float64)
    with pytest.raises(ValueError, match="keys for"):
        with open_rows_writer(tmp_path / "y", (3, 2), np.float32, Layout(keys_of(2), 4)):
            pass


def test_an_empty_array_is_one_empty_shard(tmp_path):
    with open_rows_writer(tmp_path / "e", (0, 5), np.float32, Layout([], 4)):
        pass
    assert read_array(tmp_path / "e").shape == (0, 5)
