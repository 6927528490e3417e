"""Search controls on the command line: ``serve.py QUERY --folder F --min-score S --offset K``,
alone and in warm mode, on the real query project (real model, real processes).

The answers equal the library's (:func:`lib.retrieval.search_page` on the same engine),
the header names the controls given, a folder without images is one line (exit 1,
before the model loads), a bad value is a usage error (exit 2, one line), and the
picture draws each match from its original photo, in its own proportions.
"""
import re
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import pytest

from lib.retrieval import search_page, SearchControls
from tests.support.helpers import DATASET, pick_per_class, run
from tests.support.query_project import COLLECTION, name_of

pytestmark = pytest.mark.slow

LINE = re.compile(r"^\s*(\d+)\s+(-?\d+\.\d{4})\s+(.+)$")
TILE, GAP = 224, 8
FOLDER = "outwear"                                  # two photos of the query project


def ranking(lines: List[str]) -> List[Tuple[int, float, str]]:
    """(rank, score, name) of each result line."""
    found = []
    for line in lines:
        match = LINE.match(line)
        if match:
            found.append((int(match.group(1)), float(match.group(2)), match.group(3)))
    return found


def expected(engine, query: Path, n: int, controls: SearchControls) -> List[Tuple[int, float, str]]:
    """What the library answers for the same query and controls."""
    page = search_page(engine, engine.embed(query), n, controls)
    return [(controls.offset + rank, round(score, 4), str(engine.names[row]))
            for rank, (score, row) in enumerate(page.hits, start=1)]


def same(printed, wanted) -> None:
    """Same ranks and names, scores to the printed 4 decimals."""
    assert [(rank, name) for rank, _, name in printed] == \
        [(rank, name) for rank, _, name in wanted]
    for (_, score, _), (_, truth, _) in zip(printed, wanted):
        assert abs(score - truth) <= 1.01e-4


def test_one_shot_and_warm_mode_take_the_controls(query_project, query_engine, tmp_path):
    queries = [DATASET / path for path, _ in pick_per_class("test", 1)[:2]]
    args = ["--folder", FOLDER, "--min-score", "-1", "--offset", "1", "-n", "3"]
    controls = SearchControls(FOLDER, -1.0, 1)
    proc = run(["python", "stages/serve.py", str(queries[0]), *args, "--output",
                str(tmp_path / "one.png")], query_project)
    version, header, *rest = proc.stdout.splitlines()
    assert version.startswith("version: ")
    assert header == (f"1 most similar of 13 images to {queries[0]} (folder {FOLDER}/ "
                      "(2 images), cosine >= -1, from rank 2):")
    printed = ranking(rest)
    same(printed, expected(query_engine, queries[0], 3, controls))
    assert len(printed) == 1 and printed[0][0] == 2 and printed[0][2].startswith(FOLDER + "/")
    # Warm mode: every query with the same controls; a cutoff above every score: none.
    proc = run(["python", "stages/serve.py", "-", *args], query_project,
               stdin="".join(f"{query}\n" for query in queries))
    blocks = [block.splitlines() for block in proc.stdout.split("\n\n") if block.strip()]
    blocks[0] = blocks[0][1:]                                       # the version line
    assert len(blocks) == 2
    for query, block in zip(queries, blocks):
        assert block[0].endswith(f"to {query} (folder {FOLDER}/ (2 images), cosine >= -1, "
                                 "from rank 2):")
        same(ranking(block), expected(query_engine, query, 3, controls))
    proc = run(["python", "stages/serve.py", str(queries[0]), "--min-score", "0.999",
                "--output", str(tmp_path / "none.png")], query_project)
    assert proc.stdout.splitlines()[1] == f"0 most similar of 13 images to {queries[0]} " \
                                          "(cosine >= 0.999):"
    # Pages: offsets 0, 4, 8 of 4 results are the first 12 results.
    pages = []
    for offset in (0, 4, 8):
        proc = run(["python", "stages/serve.py", str(queries[1]), "-n", "4", "--offset",
                    str(offset), "--output", str(tmp_path / "page.png")], query_project)
        pages += ranking(proc.stdout.splitlines())
    whole = run(["python", "stages/serve.py", str(queries[1]), "-n", "12", "--output",
                 str(tmp_path / "all.png")], query_project)
    assert pages == ranking(whole.stdout.splitlines()) and [rank for rank, _, _ in pages] == \
        list(range(1, 13))


def test_a_folder_without_images_is_one_line_before_the_model_loads(query_project):
    query = str(DATASET / COLLECTION[0][0])
    for args, stdin in (([query], None), (["-"], f"{query}\n")):
        proc = run(["python", "stages/serve.py", *args, "--folder", "bags/"], query_project,
                   check=False, stdin=stdin)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr == ("serve.py: error: no image in the folder 'bags/' of the "
                               "collection: a folder is the start of the image names, e.g. "
                               "shoes for shoes/a.jpg\n")
        assert proc.stdout == ""


@pytest.mark.parametrize("args, words", [
    (["--min-score", "2"], "argument --min-score: expected a finite number from -1 to 1"),
    (["--min-score", "nan"], "argument --min-score: expected a finite number"),
    (["--min-score", "abc"], "argument --min-score: expected a finite number"),
    (["--offset", "-1"], "argument --offset: expected an integer >= 0"),
    (["--offset", "1.5"], "argument --offset: expected an integer >= 0"),
    (["--folder", ""], "argument --folder: expected a folder of the collection"),
    (["--http", "--folder", "shoes"], "--folder, --min-score and --offset do not apply to "
                                      "--http")])
def test_bad_control_values_are_usage_errors(query_project, args, words):
    query = [] if "--http" in args else ["q.jpg"]
    proc = run(["python", "stages/serve.py", *query, *args], query_project, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
    assert proc.stderr.startswith("serve.py: error: ") and proc.stdout == ""


def test_the_picture_draws_a_match_from_its_original_in_its_proportions(query_project,
                                                                        tmp_path):
    name = name_of(COLLECTION[2])                            # 400 x 533, portrait
    original = cv2.imread(str(query_project / "data" / "master" / name))    # (H, W, 3) BGR
    run(["python", "stages/serve.py", str(query_project / "data" / "master" / name), "-n",
         "1", "--output", str(tmp_path / "result.png")], query_project)
    picture = cv2.imread(str(tmp_path / "result.png"))                     # BGR
    left = GAP + TILE + GAP + 2 * GAP                 # the first match, after the divider
    tile = picture[GAP:GAP + TILE, left:left + TILE].astype(int)
    height, width = original.shape[:2]
    side = round(width * TILE / height)                       # 168 of 224: 400:533 kept
    fitted = cv2.resize(original, (side, TILE), interpolation=cv2.INTER_AREA)
    bands = (TILE - side) // 2
    assert np.abs(tile[:, bands:bands + side] - fitted).mean() < 3
    assert (tile[:, :bands - 1] == 255).all() and (tile[:, bands + side + 1:] == 255).all()
    # Not the stretched square thumbnail it used to be.
    names = np.load(query_project / "data/landing/image_names.npy").tolist()
    landing = np.load(query_project / "data/landing/resized_rgb.npy", mmap_mode="r")
    stretched = np.asarray(landing[names.index(name)])[:, :, ::-1].astype(int)   # (S, S, 3)
    assert np.abs(tile - stretched).mean() > 20
