"""The evaluate stage's query vectors: embedded once per model, reused across updates."""
from pathlib import Path
from typing import List

import numpy as np
import pytest

from lib.config import Config
from lib.evaluation.query_vectors import CACHE, fingerprint, query_vectors


class Embedder:
    """Counts the photos it embeds; a photo's vector is its bytes' length."""

    def __init__(self):
        self.embedded: List[str] = []

    def __call__(self, path: Path) -> np.ndarray:
        self.embedded.append(path.name)
        return np.full(4, len(path.read_bytes()), np.float32)


def photos(folder: Path, count: int) -> List[Path]:
    """``count`` small files of different lengths."""
    folder.mkdir(exist_ok=True)
    paths = [folder / f"q{number}.jpg" for number in range(count)]
    for number, path in enumerate(paths):
        path.write_bytes(b"x" * (number + 1))
    return paths


def test_vectors_are_reused_for_the_same_fingerprint_and_photos(tmp_path):
    paths, embed = photos(tmp_path / "queries", 3), Embedder()
    first = query_vectors(tmp_path, paths, "model-a", embed)
    assert embed.embedded == ["q0.jpg", "q1.jpg", "q2.jpg"] and (tmp_path / CACHE).is_file()
    again = query_vectors(tmp_path, paths, "model-a", embed)
    assert embed.embedded == ["q0.jpg", "q1.jpg", "q2.jpg"]             # nothing embedded
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    paths[1].write_bytes(b"changed photo")                              # one photo replaced
    changed = query_vectors(tmp_path, paths, "model-a", embed)
    assert embed.embedded[3:] == ["q1.jpg"] and changed[1][0] == len(b"changed photo")
    query_vectors(tmp_path, paths, "model-b", embed)                    # another model
    assert embed.embedded[4:] == ["q0.jpg", "q1.jpg", "q2.jpg"]


def test_no_fingerprint_keeps_nothing_and_a_bad_cache_is_embedded_again(tmp_path):
    paths, embed = photos(tmp_path / "queries", 2), Embedder()
    query_vectors(tmp_path, paths, None, embed)
    assert not (tmp_path / CACHE).exists() and len(embed.embedded) == 2
    (tmp_path / CACHE).parent.mkdir(parents=True)
    (tmp_path / CACHE).write_bytes(b"not an npz")
    query_vectors(tmp_path, paths, "model-a", embed)
    assert len(embed.embedded) == 4


def test_an_unreadable_query_reaches_the_embedder_which_says_why(tmp_path):
    missing = tmp_path / "queries" / "gone.jpg"

    def embed(path: Path) -> np.ndarray:
        raise FileNotFoundError(f"{path}: not found")

    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        query_vectors(tmp_path, [missing], "model-a", embed)


def test_without_a_row_index_there_is_no_fingerprint(tmp_path):
    assert fingerprint(tmp_path, Config(), Path("stages/evaluate.py")) is None
