"""Near-duplicates on real photos with planted copies, embedded by the real model."""
import csv
import json

import numpy as np
import pytest

from bench.duplicates import KINDS, plant_all
from bench.real_vectors import embed_photos
from lib.config import DuplicatesConfig, IndexConfig
from lib.embedding.vectorizer import Vectorizer
from lib.errors import InputError
from lib.retrieval.duplicates import find_pairs, group_pairs, pair_set, write_report
from lib.retrieval.index_store import build_index
from tests.support.helpers import DATASET, pick_per_class

LIBRARY = pick_per_class("train", 2, skip=20)        # 20 real photos, 2 per class
SOURCES = 12                                        # the first 12 get a planted copy each


@pytest.fixture(scope="module", name="library")
def library_fixture(saved_model, tmp_path_factory):
    """The photos, their planted copies (3 of each kind), all embedded in-process."""
    photos = [DATASET / path for path, _ in LIBRARY]
    planted = plant_all(photos[:SOURCES], tmp_path_factory.mktemp("planted"))
    files = photos + [path for _, path, _ in planted]
    vectors = embed_photos(files, Vectorizer.load(saved_model))          # (32, 2048)
    truth = {(source, len(photos) + n): kind for n, (source, _, kind) in enumerate(planted)}
    names = np.array([path.name if i < len(photos) else f"planted/{path.name}"
                      for i, path in enumerate(files)])
    return vectors, names, truth


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_planted_copies_are_grouped_with_their_originals(library, kind):
    vectors, _, truth = library
    default = DuplicatesConfig()
    index = None if kind == "exact" else build_index(vectors, None, IndexConfig(kind=kind))[0]
    pairs = find_pairs(vectors, None, index, IndexConfig(), default.threshold,
                       default.neighbours)
    groups = group_pairs(pairs)
    found = pair_set(groups)
    recall = {name: np.mean([pair in found for pair, value in truth.items() if value == name])
              for name in KINDS}
    precision = len(found & set(truth)) / len(found)
    print(f"{kind}: recall {recall}, precision {precision:.3f}, {len(groups)} groups")
    assert recall["copy"] == recall["jpeg60"] == recall["resized"] == 1.0
    assert np.mean([pair in found for pair in truth]) >= 0.75     # slight crops: some
    assert precision >= 0.9
    for a, b, score in pairs:
        assert a < b and score >= default.threshold


def test_the_report_lists_groups_with_a_picture_each(library, tmp_path):
    vectors, names, _ = library
    groups = group_pairs(find_pairs(vectors, None, None, IndexConfig(), 0.94, 10))
    images = np.zeros((vectors.shape[0], 32, 32, 3), np.uint8)
    folder = write_report(tmp_path / "report", groups, names, images, {"threshold": 0.94},
                          max_pictures=3)
    report = json.loads((folder / "duplicates.json").read_text())
    assert [group["size"] for group in report["groups"]] == [g.rows.shape[0] for g in groups]
    assert report["groups"][0]["images"] == [str(names[row]) for row in groups[0].rows]
    with open(folder / "duplicates.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == report["photos_in_groups"] == sum(g.rows.shape[0] for g in groups)
    assert sorted(p.name for p in folder.glob("*.png")) == [
        f"group-{i:04d}.png" for i in range(1, min(3, len(groups)) + 1)]
    # An earlier report is replaced; a folder that is not a report is refused.
    write_report(folder, groups[:1], names, None, {}, 0)
    assert not list(folder.glob("*.png"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a duplicates report"):
        write_report(tmp_path / "mine", groups, names, None, {}, 0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
