"""The conversion cache can only give back the conversion of the model that was loaded.

Real saved ResNet50 (the session's ``saved_model``), real OpenVINO, real photos: the
cache used to be keyed by whatever ``model.keras`` was on disk at the first query, so
a warm server whose artifacts were replaced underneath it stored the old model's
conversion under the new model's key, and every later fresh load used it.
"""
import hashlib
import logging
import shutil

import numpy as np
import pytest

from lib.config import EtlConfig
from lib.embedding.conversion import read_entry, write_entry
from lib.embedding.preprocessing import preprocess
from lib.embedding.runtime import CACHE_ENV, openvino_available, OPENVINO_FILES
from lib.embedding.vectorizer import MODEL_FILE, Vectorizer
from lib.photos.images import load_image
from lib.retrieval.similarity import get_cosine_similarity
from tests.support.helpers import DATASET, pick_per_class

PARITY = 0.99999        # per-image cosine, OpenVINO vs Keras
PHOTOS = [DATASET / path for path, _ in pick_per_class("validation", 1)[:2]]


def poisoned_conversion(folder) -> None:
    """Writes the OpenVINO conversion of another model (a tiny one) into ``folder``, in
    the layout the cache used before entries had a manifest."""
    import keras  # pylint: disable=import-outside-toplevel
    import openvino  # pylint: disable=import-outside-toplevel
    inputs = keras.Input((224, 224, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)                # (N, 3)
    other = keras.Model(inputs, keras.layers.Dense(2048)(pooled))        # (N, 2048)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    openvino.save_model(openvino.convert_model(other), folder / "model.xml",
                        compress_to_fp16=False)


@pytest.mark.slow
@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")
def test_2_conversion_cache_keys_the_loaded_bytes_and_never_uses_a_stale_entry(
        saved_model, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    served = shutil.copytree(saved_model, tmp_path / "served")
    loaded = hashlib.sha256((served / MODEL_FILE).read_bytes()).hexdigest()
    features = preprocess(np.stack([load_image(path, EtlConfig()) for path in PHOTOS]))
    warm = Vectorizer.load(served, runtime="openvino")                    # a warm server
    reference = warm.model.predict(features, verbose=0)                   # Keras, (2, D)
    # The artifacts are replaced underneath it before its first query.
    (served / MODEL_FILE).write_bytes(b"a newer model.keras")
    vectors = warm.transform(features)
    assert np.diagonal(get_cosine_similarity(vectors, reference)).min() >= PARITY
    entries = sorted(path.name for path in (cache / "openvino").iterdir()
                     if not path.name.startswith("."))
    assert [name.split("-")[0] for name in entries] == [loaded]      # not the new file's

    # A poisoned entry under the loaded model's key (another model's conversion, as
    # the old cache wrote them) is never used: converted again, the answer is right.
    folder = cache / "openvino" / entries[0]
    poisoned_conversion(folder)
    with caplog.at_level(logging.WARNING):
        fresh = Vectorizer.load(saved_model, runtime="openvino").transform(features)
    assert "converting again" in caplog.text
    assert np.diagonal(get_cosine_similarity(fresh, reference)).min() >= PARITY
    assert read_entry(folder, loaded, OPENVINO_FILES) is not None    # replaced, trusted


def test_2_a_foreign_or_damaged_cache_entry_is_refused(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in OPENVINO_FILES:
        (scratch / name).write_bytes(name.encode() * 100)
    folder = tmp_path / "entry"
    write_entry(folder, "a" * 64, {name: scratch / name for name in OPENVINO_FILES})
    assert read_entry(folder, "a" * 64, OPENVINO_FILES)["model.bin"] == b"model.bin" * 100
    assert read_entry(folder, "b" * 64, OPENVINO_FILES) is None        # made from another
    (folder / "model.bin").write_bytes(b"model.bin" * 99 + b"model.bix")
    assert read_entry(folder, "a" * 64, OPENVINO_FILES) is None        # damaged
    (folder / "entry.json").unlink()
    assert read_entry(folder, "a" * 64, OPENVINO_FILES) is None        # no manifest
