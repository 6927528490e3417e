"""Every kind of query input gets a correct answer or one clean error line.

A real project (12 photos, one stored sideways with an EXIF tag, one duplicated under
another name) is built once with ``dvc repro`` and the real weights; the query cases
run through ``ImageSearchEngine.most_similar`` in-process and through
``stages/serve.py`` as a user runs it.
"""
import io
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from lib.config import EtlConfig
from lib.embedding.vectorizer import Vectorizer
from lib.errors import ArtifactError
from lib.retrieval.engine import ImageSearchEngine
from lib.retrieval.similarity import l2_normalize
from tests.support.badfiles import (
    bad_files, encode, exif_rotated_jpeg, photo_bgr, pillow_bytes, rgb_pil)
from tests.support.helpers import DATASET, run
from tests.support.query_project import COLLECTION, DUPLICATE_NAME, EXIF_B_NAME, N_IMAGES, \
    UPRIGHT_A, UPRIGHT_B, name_of

pytestmark = pytest.mark.slow


def serve(project, *args):
    """Runs ``stages/serve.py`` in the project; returns the completed process."""
    return run(["python", "stages/serve.py", *map(str, args)], project, check=False)


def assert_clean_error(proc, expected: str, status: int = 1) -> None:
    """A refused query: one line on stderr naming the problem, nothing on stdout."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == status, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("serve.py: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def assert_ranking(results, n: int) -> None:
    """A well-formed answer: ``n`` distinct names, finite cosines, best first."""
    assert len(results) == n
    scores = [score for score, _ in results]
    assert all(np.isfinite(scores)) and all(-1.0001 <= s <= 1.0001 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert len({name for _, name in results}) == n


# --- files that are not images, and bad counts: one line, exit 1 (2 for usage) -------

BAD_CASES = sorted(bad_files(photo_bgr(COLLECTION[1][0])))
BAD_REASONS = {"empty file": "empty file", "text named .jpg": "not an image",
               "truncated JPEG": "damaged or truncated", "JPEG header, random body":
               "not an image", "pixel bomb PNG": "30000x30000 pixels exceeds the limit",
               "pixel bomb HDR": "20000x20000 pixels exceeds the limit"}


@pytest.mark.parametrize("case", BAD_CASES)
def test_cli_refuses_a_bad_file_in_one_line(query_project, tmp_path, case):
    path = bad_files(photo_bgr(COLLECTION[1][0]))[case](tmp_path)
    assert_clean_error(serve(query_project, path), BAD_REASONS[case])


def test_cli_refuses_missing_paths_and_directories(query_project, tmp_path):
    assert_clean_error(serve(query_project, tmp_path / "nowhere.jpg"), "no such file")
    assert_clean_error(serve(query_project, tmp_path), "not a file")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "gone.jpg")
    assert_clean_error(serve(query_project, tmp_path / "link.jpg"), "broken link")


@pytest.mark.parametrize("value,expected", [("0", "got 0"), ("-3", "got -3"),
                                            ("two", "got 'two'"), ("2.5", "got '2.5'")])
def test_cli_refuses_bad_counts(query_project, value, expected):
    query = DATASET / COLLECTION[0][0]
    assert_clean_error(serve(query_project, query, "-n", value), f"argument -n: expected a "
                       f"positive integer, {expected}", status=2)


def test_pixel_limit_is_configurable(query_project):
    params = yaml.safe_load((query_project / "params.yaml").read_text())
    params["etl"]["max_pixels"] = 100_000
    small = query_project / "small-limit.yaml"
    small.write_text(yaml.safe_dump(params))
    # --no-verify: a params file whose etl settings differ from those the artifacts were
    # built with is refused when verifying (tests/test_integrity.py, case 4).
    proc = serve(query_project, DATASET / COLLECTION[0][0], "--params", small, "--no-verify")
    assert_clean_error(proc, "exceeds the limit of 100000 (etl.max_pixels)")
    assert_clean_error(serve(query_project, DATASET / COLLECTION[0][0], "--params", small),
                       "the serving params set etl.max_pixels to 100000, but the artifacts "
                       "were built with 100000000")


# --- unusual but valid images: answered, and answered correctly -----------------------

def variants(bgr: np.ndarray, other: np.ndarray):
    """(name, file bytes, what a reference decoder makes of it as BGR) per valid case."""
    rgb = rgb_pil(bgr)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    alpha = np.linspace(0, 255, bgr.shape[1], dtype=np.uint8)[np.newaxis].repeat(
        bgr.shape[0], axis=0)
    deep = (bgr.astype(np.uint16) << 8) | 0x80            # 16-bit, the high byte is bgr
    frames = [rgb, rgb_pil(cv2.resize(other, bgr.shape[1::-1])), rgb.rotate(90)]
    wide = cv2.resize(bgr, (10000, 10), interpolation=cv2.INTER_AREA)
    tiny = bgr[200:201, 200:201]
    cmyk = rgb.convert("CMYK")
    return [
        ("greyscale JPEG", encode(".jpg", grey), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)),
        ("PNG with alpha", encode(".png", np.dstack([bgr, alpha])), bgr),
        ("16-bit PNG", encode(".png", deep), bgr),
        ("CMYK JPEG", pillow_bytes(cmyk, "JPEG", quality=95),
         np.asarray(cmyk.convert("RGB"))[:, :, ::-1]),
        ("multi-frame TIFF", pillow_bytes(frames[0], "TIFF", save_all=True,
                                          append_images=frames[1:]), bgr),
        ("multi-frame GIF", pillow_bytes(frames[0], "GIF", save_all=True,
                                         append_images=frames[1:]),
         np.asarray(Image.open(io.BytesIO(pillow_bytes(frames[0], "GIF"))).convert("RGB"))
         [:, :, ::-1]),
        ("1x1 PNG", encode(".png", tiny), tiny),
        ("10000x10 PNG", encode(".png", wide), wide),
    ]


def test_unusual_valid_images_are_answered_correctly(query_engine, tmp_path):
    """Each gives the ranking a reference decoder's pixels give (Pillow decodes them)."""
    bgr = photo_bgr(COLLECTION[4][0])
    for case, data, reference in variants(bgr, photo_bgr(COLLECTION[5][0])):
        path = tmp_path / f"{case}.img"
        path.write_bytes(data)
        results = query_engine.most_similar(path, 3)
        assert_ranking(results, 3)
        expected = query_engine.most_similar(np.ascontiguousarray(reference), 3)
        assert [name for _, name in results] == [name for _, name in expected], case
        np.testing.assert_allclose([s for s, _ in results], [s for s, _ in expected],
                                   atol=0.02, err_msg=case)
        if case in ("PNG with alpha", "16-bit PNG", "multi-frame TIFF"):
            # Lossless copies of a collection photo: alpha dropped, 16 bits scaled to 8,
            # the first frame taken, so the photo itself comes back with cosine 1.
            assert results[0][1] == name_of(COLLECTION[4]) and results[0][0] >= 0.9999, case


def test_count_larger_than_the_collection_returns_all(query_engine):
    results = query_engine.most_similar(DATASET / COLLECTION[2][0], 1000)
    assert_ranking(results, N_IMAGES)
    with pytest.raises(ValueError, match="positive"):
        query_engine.most_similar(DATASET / COLLECTION[2][0], -1)


def test_duplicate_content_under_two_names_both_answer(query_project, query_engine):
    report = json.loads((query_project / "data/landing/etl_report.json").read_text())
    assert report["images_kept"] == N_IMAGES and report["files_skipped"] == 0
    top = query_engine.most_similar(DATASET / COLLECTION[0][0], 2)
    assert {name for _, name in top} == {name_of(COLLECTION[0]), DUPLICATE_NAME}
    assert min(score for score, _ in top) >= 0.9999


# --- EXIF orientation, in the pipeline and at query time ------------------------------

def test_exif_rotated_query_matches_its_upright_original(query_project, query_engine, tmp_path):
    """Run as a user runs it: odd name, more results than images, real saved model."""
    upright = photo_bgr(UPRIGHT_A[0])
    data = exif_rotated_jpeg(upright)
    viewed = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))[:, :, ::-1]
    assert viewed.shape == upright.shape                  # the tag does undo the rotation
    # Spaces, non-ASCII letters, and a byte that is not UTF-8 at all.
    query = tmp_path / os.fsdecode("rotated photo of a café, ñandú ".encode() + b"\xff.jpg")
    query.write_bytes(data)
    # Without applying the tag the sideways pixels are a poor match: the test can fail.
    stored = cv2.imdecode(np.frombuffer(data, np.uint8),
                          cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    row = query_engine.names.tolist().index(name_of(UPRIGHT_A))
    unrotated = float(l2_normalize(query_engine.embed(stored)) @ l2_normalize(
        np.asarray(query_engine.vectors[row])))
    assert unrotated < 0.95
    proc = serve(query_project, query, "-n", "50", "--output", tmp_path / "out.png")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"note: asked for 50 results, the collection holds {N_IMAGES}" in proc.stderr
    rows = [line.split(None, 2) for line in proc.stdout.splitlines()
            if re.match(r"\s*\d+\s+-?\d\.\d{4}\s", line)]
    assert len(rows) == N_IMAGES
    assert rows[0][2] == name_of(UPRIGHT_A) and float(rows[0][1]) >= 0.99
    assert cv2.imread(str(tmp_path / "out.png")) is not None


def test_exif_rotated_collection_photo_is_stored_upright(query_engine):
    score, name = query_engine.most_similar(DATASET / UPRIGHT_B[0], 1)[0]
    assert name == EXIF_B_NAME and score >= 0.99


# --- tampered artifacts and a model carrying code -------------------------------------

def test_non_finite_vectors_are_refused(query_engine):
    vectors = np.array(query_engine.vectors)
    vectors[3, 7] = np.nan
    with pytest.raises(ArtifactError, match="NaN"):
        ImageSearchEngine(vectors, query_engine.names, query_engine.vectorizer, EtlConfig())


def test_model_with_code_is_refused_unrun(tmp_path):
    """A Lambda layer carries Python bytecode: safe mode refuses it, and it never runs."""
    import keras  # pylint: disable=import-outside-toplevel
    marker = tmp_path / "code-ran"
    inputs = keras.Input((32, 32, 3))
    touched = keras.layers.Lambda(
        lambda x, m=str(marker): (Path(m).touch(), x)[1])(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(touched))
    Vectorizer(model).save(tmp_path / "model")
    marker.unlink()                                       # building the model ran it once
    with pytest.raises(ArtifactError, match="cannot be loaded") as err:
        Vectorizer.load(tmp_path / "model")
    assert not marker.exists()
    # One short line naming the layer and the fix, not Keras's thousand characters.
    assert "it holds a Lambda layer" in str(err.value) and "dvc repro" in str(err.value)
    assert len(str(err.value)) < 300 and str(tmp_path / "model") in str(err.value)
