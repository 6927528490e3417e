"""Fuzzing the query path with mutated image files: a result or a clean error, nothing else.

Seeds are one real photo (downscaled) encoded in every format OpenCV decodes here;
Hypothesis mutates them (bit flips, truncation, overwritten or inserted bytes, header
size fields set to extremes, random bodies behind valid headers). The examples are
derandomised, so CI runs the same inputs every time; ``FUZZ_SCALE=10`` runs ten
times as many.

- decoding and the ETL transform (``decode_image`` + ``etl_transform``): thousands of
  inputs, a few milliseconds each;
- the whole query path (``ImageSearchEngine.most_similar`` on the real index with the
  real saved model): a few hundred inputs, each accepted one costs an embedding;
- ``stages/serve.py`` as a subprocess on a sample of refused inputs: one line, no
  traceback.

A crash in native code would kill the test process, which fails the run too.
"""
import datetime
import os
from typing import Dict, List

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.config import EtlConfig
from lib.errors import ImageReadError
from lib.photos.decoding import decode_image
from lib.photos.images import etl_transform
from tests.support.badfiles import encode, exif_rotated_jpeg, photo_bgr, pillow_bytes, rgb_pil
from tests.support.helpers import run
from tests.support.query_project import COLLECTION

pytestmark = pytest.mark.slow

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
MAX_PIXELS = 1_000_000        # mutated headers above this are refused before decoding
FUZZ = {"derandomize": True, "database": None, "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                  HealthCheck.function_scoped_fixture,
                                  HealthCheck.large_base_example]}


def make_seeds() -> Dict[str, bytes]:
    """One small real photo in every format the decoder handles."""
    bgr = cv2.resize(photo_bgr(COLLECTION[6][0]), (48, 64), interpolation=cv2.INTER_AREA)
    rgb = rgb_pil(bgr)
    return {
        "jpeg": encode(".jpg", bgr),
        "progressive jpeg": pillow_bytes(rgb, "JPEG", progressive=True),
        "exif jpeg": exif_rotated_jpeg(bgr),
        "cmyk jpeg": pillow_bytes(rgb.convert("CMYK"), "JPEG"),
        "png": encode(".png", bgr),
        "16-bit png": encode(".png", bgr.astype(np.uint16) << 8),
        "alpha png": encode(".png", np.dstack([bgr, bgr[:, :, 0]])),
        "gif": pillow_bytes(rgb, "GIF", save_all=True, append_images=[rgb.rotate(90)]),
        "tiff": pillow_bytes(rgb, "TIFF", save_all=True, append_images=[rgb.rotate(90)]),
        "webp": encode(".webp", bgr),
        "avif": pillow_bytes(rgb, "AVIF"),
        "bmp": encode(".bmp", bgr),
        "jp2": encode(".jp2", bgr),
        "hdr": encode(".hdr", bgr.astype(np.float32) / 255),
        "pam": encode(".pam", bgr),
        "pfm": encode(".pfm", bgr.astype(np.float32) / 255),
        "ppm": encode(".ppm", bgr),
        "sun raster": encode(".ras", bgr),
    }


SEEDS = make_seeds()


@st.composite
def mutated_files(draw) -> bytes:
    """A seed file with one to four mutations applied."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "overwrite", "insert", "extreme",
                                     "random body"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "extreme":                    # size fields live in the first bytes
            at = draw(st.integers(0, min(len(data), 64)))
            data[at:at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                                    b"\x7f\xff\xff\xff", b"9999"]))
        else:
            keep = draw(st.integers(0, min(len(data), 128)))
            data[keep:] = draw(st.binary(min_size=0, max_size=2048))
    return bytes(data)


def check_decode(data: bytes) -> bool:
    """Asserts the decode + ETL contract on one input; True if it was accepted."""
    try:
        bgr = decode_image(data, MAX_PIXELS, source="fuzzed.img")
    except ImageReadError as err:
        message = str(err)
        assert message.startswith("fuzzed.img: ") and "\n" not in message
        return False
    assert bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3
    assert bgr.shape[0] * bgr.shape[1] <= MAX_PIXELS
    rgb = etl_transform(bgr, EtlConfig())
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8
    return True


def test_seeds_are_all_valid_images():
    for name, data in SEEDS.items():
        assert check_decode(data), name


def test_fuzz_decode_and_etl(capfd):
    """Thousands of mutated files through decoding and the ETL transform."""
    outcomes: List[bool] = []

    @settings(max_examples=3000 * SCALE, deadline=datetime.timedelta(seconds=10), **FUZZ)
    @given(mutated_files())
    def one(data):
        outcomes.append(check_decode(data))

    one()  # pylint: disable=no-value-for-parameter
    # What libjpeg and OpenCV print was captured and logged, never left on stderr.
    assert capfd.readouterr().err == ""
    accepted = sum(outcomes)
    with capfd.disabled():
        print(f"\ndecode fuzz: {len(outcomes)} inputs, {accepted} accepted, "
              f"{len(outcomes) - accepted} refused cleanly")
    assert 0 < accepted < len(outcomes)           # both outcomes were exercised


def test_fuzz_whole_query_path(query_engine, tmp_path):
    """Mutated files through ``most_similar`` with the real model and index."""
    names = set(query_engine.names.tolist())
    outcomes: List[bool] = []

    @settings(max_examples=400 * SCALE, deadline=None, **FUZZ)
    @given(mutated_files())
    def one(data):
        path = tmp_path / "query.img"
        path.write_bytes(data)
        try:
            results = query_engine.most_similar(path, 3)
        except ImageReadError as err:
            assert "\n" not in str(err)
            outcomes.append(False)
            return
        scores = [score for score, _ in results]
        assert len(results) == 3 and {name for _, name in results} <= names
        assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
        outcomes.append(True)

    one()  # pylint: disable=no-value-for-parameter
    print(f"query fuzz: {len(outcomes)} inputs, {sum(outcomes)} embedded and ranked")
    assert 0 < sum(outcomes) < len(outcomes)


def test_fuzzed_files_through_the_command_line(query_project, tmp_path):
    """A sample of refused mutants through ``serve.py``: one line, exit 1, no traceback."""
    rng = np.random.default_rng(7)
    sample = []
    for name in sorted(SEEDS):
        data = bytearray(SEEDS[name])
        for at in rng.integers(0, len(data), size=8):
            data[at] ^= 0xFF
        data = data[:int(len(data) * rng.uniform(0.2, 0.9))]
        try:
            decode_image(bytes(data), MAX_PIXELS)
        except ImageReadError:
            sample.append((name, bytes(data)))
    assert len(sample) >= 8
    for name, data in sample[:8]:
        path = tmp_path / f"{name}.img"
        path.write_bytes(data)
        proc = run(["python", "stages/serve.py", str(path)], query_project, check=False)
        assert proc.returncode == 1, (name, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, name
        assert proc.stderr.startswith("serve.py: error: ") and proc.stdout == ""
