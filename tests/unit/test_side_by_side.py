"""One query at two versions: the text (both rankings, what entered, left or moved) and
the picture (a row per version, each as tall as a result picture)."""
import cv2
import numpy as np

from lib.evaluation import changes_table, render_side_by_side, side_by_side, VersionAnswer
from lib.photos import render_results
from lib.retrieval import SearchControls


def tile(value: int) -> np.ndarray:
    """A plain (30, 20, 3) RGB image."""
    return np.full((30, 20, 3), value, dtype=np.uint8)


def answer(label: str, tag: str, names, images: int = 9) -> VersionAnswer:
    """A version's answer with made-up scores and pictures."""
    results = [(0.9 - 0.1 * rank, name) for rank, name in enumerate(names)]
    return VersionAnswer(label, tag, images, images, results, [tile(40 * i) for i in
                                                                range(len(names))])


def test_changes_name_entered_left_and_moved_with_their_ranks():
    text = changes_table(["a", "b", "c"], ["new", "a", "b"], "v1", "the workspace")
    assert text.splitlines() == [
        "from v1 to the workspace: 1 entered, 1 left, 2 moved",
        "  entered  #1          new",
        "  left     #3          c",
        "  moved    #1 -> #2    a",
        "  moved    #2 -> #3    b"]
    assert changes_table(["a", "b"], ["a", "b"], "v1", "the workspace") == \
        "from v1 to the workspace: the same results in the same order"
    odd = changes_table(["b\nc"], ["x", "b\nc"], "v1", "the workspace")   # one line each
    assert odd.splitlines()[-1] == "  moved    #1 -> #2    b\\nc"


def test_both_rankings_come_before_the_changes():
    old = answer("v1", "1a2b3c4d5e6f", ["a", "b", "c"], images=6)
    new = answer("the workspace", "workspace", ["new", "a", "b"])
    lines = side_by_side("query.jpg", old, new, SearchControls(folder="shoes")).splitlines()
    assert lines[:8] == [
        "v1: 3 most similar of 6 images to query.jpg (folder shoes/ (6 images)):",
        "  1  0.9000  a", "  2  0.8000  b", "  3  0.7000  c",
        "the workspace: 3 most similar of 9 images to query.jpg (folder shoes/ (9 images)):",
        "  1  0.9000  new", "  2  0.8000  a", "  3  0.7000  b"]
    assert lines[8] == "from v1 to the workspace: 1 entered, 1 left, 2 moved"


def test_the_picture_has_a_row_per_version(tmp_path):
    old = answer("v1", "1a2b3c4d5e6f", ["a", "b", "c"])
    new = answer("the workspace", "workspace", ["new", "a"])
    render_side_by_side(tile(200), [old, new], tmp_path / "compare.png", "query.jpg")
    render_results(tile(200), [(picture, name, score) for picture, (score, name)
                               in zip(old.pictures, old.results)], tmp_path / "one.png")
    picture = cv2.imread(str(tmp_path / "compare.png"))
    row = cv2.imread(str(tmp_path / "one.png"))
    assert picture.shape[0] == 2 * row.shape[0]
    assert picture.shape[1] == row.shape[1]             # the longer row: query and 3 results
    second = picture[row.shape[0]:]
    assert (second[:, row.shape[1] - 100:] == 255).all()   # the workspace's has 2 results
    assert (picture[:row.shape[0], row.shape[1] - 100:] != 255).any()   # v1's has 3
