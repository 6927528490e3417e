"""The serving snapshot's private copies: a reflink or a real copy, hashed as DVC hashes.

The reflink case needs a file system that has them (Btrfs, XFS with reflink=1):
set ``$IMAGE_SEARCH_REFLINK_DIR`` to a folder on one, e.g. an XFS image mounted on a
loop device (``mkfs.xfs -m reflink=1``); it is skipped otherwise.
"""
import hashlib
import os
from pathlib import Path

import pytest
from dvc_data.hashfile.hash_info import HashInfo
from dvc_data.hashfile.meta import Meta
from dvc_data.hashfile.tree import Tree

from lib.pinning.copies import CopyStats, dir_md5, private_copy

REFLINK_DIR = os.environ.get("IMAGE_SEARCH_REFLINK_DIR")
ODD_NAMES = ["plain.bin", "sub/deeper/x.npy", "with space.txt", "café/ü.bin", "new\nline",
             "hash#query?.bin", "per%cent"]


def make_tree(root: Path) -> dict:
    """Files with odd names under ``root``; their md5 by relative path."""
    md5s = {}
    for number, name in enumerate(ODD_NAMES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(1000 + number) * (number + 1)
        path.write_bytes(data)
        md5s[name] = hashlib.md5(data).hexdigest()
    return md5s


def test_a_file_is_copied_read_only_and_hashed_as_it_is_copied(tmp_path):
    source = tmp_path / "vectors.npy"
    source.write_bytes(os.urandom(3 << 20) + b"tail")          # over one copy block
    stats = CopyStats()
    manifest = private_copy(source, tmp_path / "copy.npy", stats)
    copy = tmp_path / "copy.npy"
    assert manifest.md5 == hashlib.md5(source.read_bytes()).hexdigest()
    assert manifest.files == {"": manifest.md5} and manifest.size == source.stat().st_size
    assert copy.read_bytes() == source.read_bytes() and not copy.samefile(source)
    assert copy.stat().st_mode & 0o222 == 0
    assert stats.reflinked + stats.copied == 1 and stats.size == manifest.size
    # A write into the source's own bytes does not reach the copy.
    with open(source, "r+b") as handle:
        handle.write(b"XXXX")
    assert hashlib.md5(copy.read_bytes()).hexdigest() == manifest.md5


def test_a_folder_gets_dvc_s_dir_hash_whatever_its_names(tmp_path):
    md5s = make_tree(tmp_path / "model")
    (tmp_path / "model" / "empty").mkdir()                   # DVC lists files only
    manifest = private_copy(tmp_path / "model", tmp_path / "copy")
    assert manifest.files == md5s
    tree = Tree()
    for name, md5 in md5s.items():
        tree.add(tuple(name.split("/")), Meta(), HashInfo("md5", md5))
    tree.digest()
    assert manifest.md5 == dir_md5(md5s) == tree.hash_info.value
    for name in ODD_NAMES:
        assert (tmp_path / "copy" / name).read_bytes() == (tmp_path / "model" / name).read_bytes()


def test_without_reflinks_the_bytes_are_copied(tmp_path):
    make_tree(tmp_path / "src")
    stats = CopyStats()
    private_copy(tmp_path / "src", tmp_path / "copy", stats)
    if stats.reflinked:
        pytest.skip(f"{tmp_path} is on a file system with reflinks")
    assert stats.copied == len(ODD_NAMES) and not stats.reflink_possible


@pytest.mark.skipif(not REFLINK_DIR, reason="set IMAGE_SEARCH_REFLINK_DIR to a folder on a "
                                            "file system with reflinks (Btrfs, XFS)")
def test_on_a_reflink_file_system_the_copies_are_clones_and_stay_private(tmp_path):
    root = Path(REFLINK_DIR) / tmp_path.name
    root.mkdir()
    try:
        md5s = make_tree(root / "src")
        stats = CopyStats()
        manifest = private_copy(root / "src", root / "copy", stats)
        assert stats.reflinked == len(ODD_NAMES) and stats.copied == 0
        assert manifest.files == md5s
        with open(root / "src" / "plain.bin", "r+b") as handle:    # copy-on-write
            handle.write(b"changed")
        assert hashlib.md5((root / "copy" / "plain.bin").read_bytes()).hexdigest() == \
            md5s["plain.bin"]
    finally:
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        root.rmdir()
