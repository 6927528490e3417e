"""Fast paths against the plain ones: OpenVINO vs Keras, streamed vs whole-array
artifacts, reduced vs full JPEG decode. Real photos and real weights."""
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from lib.artifacts import NpyRowReader, open_npy_writer
from lib.config import EtlConfig, ModellingConfig
from lib.embedding.conversion import COMPILED_KEPT
from lib.embedding.inference_model import write_inference_model
from lib.embedding.preprocessing import preprocess, run_feature_engineering
from lib.embedding.runtime import CACHE_ENV, choose_runtime, openvino_cache_dir
from lib.embedding.vectorizer import MODEL_FILE, run_embedding, Vectorizer
from lib.errors import ConfigError
from lib.photos.decoding import decode_image, imread_flag
from lib.photos.images import load_image
from lib.retrieval.similarity import get_cosine_similarity
from lib.service.batching import BatchingEmbedder
from tests.support.helpers import DATASET, REPO_ROOT, pick_per_class, tool_env

PHOTOS = [DATASET / path for path, _ in pick_per_class("validation", 1)]   # 10 classes
PARITY = 0.99999        # per-image cosine, OpenVINO vs Keras


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.diagonal(get_cosine_similarity(a, b))


@pytest.fixture(scope="module", name="features")
def features_fixture():
    """The 10 photos through ETL and feature engineering: (10, 224, 224, 3) float32."""
    return preprocess(np.stack([load_image(path, EtlConfig()) for path in PHOTOS]))


@pytest.fixture(scope="module", name="keras_vectors")
def keras_vectors_fixture(saved_model, features):
    """The reference: the saved Keras model's ``predict``."""
    model = Vectorizer.load(saved_model, runtime="tensorflow").model
    return model.predict(features, batch_size=4, verbose=0)


@pytest.fixture(scope="module", name="openvino_vectorizer")
def openvino_vectorizer_fixture(saved_model):
    """The saved model run by OpenVINO; batch_size 3 so that 10 photos run as 4 requests."""
    return Vectorizer.load(saved_model, batch_size=3, runtime="openvino")


@pytest.mark.slow
def test_openvino_vectors_equal_the_keras_model(openvino_vectorizer, saved_model, features,
                                                keras_vectors):
    vectorizer = openvino_vectorizer
    assert vectorizer.runtime == "openvino"
    vectors = vectorizer.transform(features)
    assert vectors.shape == (10, 2048) and vectors.dtype == np.float32
    assert cosines(vectors, keras_vectors).min() >= PARITY
    np.testing.assert_allclose(vectors, keras_vectors, rtol=1e-3, atol=1e-3)
    single = vectorizer.transform(features[4:5])
    assert cosines(single, keras_vectors[4:5]).min() >= PARITY
    # auto picks OpenVINO on this CPU machine (no GPU), as serving and the modelling stage do
    assert choose_runtime("auto") == "openvino"
    assert Vectorizer.load(saved_model, runtime="auto").runtime == "openvino"


@pytest.mark.slow
def test_streamed_embedding_stage_equals_whole_array_predict(openvino_vectorizer, features,
                                                             keras_vectors, tmp_path):
    np.save(tmp_path / "features.npy", features)
    assert run_embedding(tmp_path / "features.npy", tmp_path / "vectors.npy",
                         openvino_vectorizer, chunk_size=4) == 10
    vectors = np.load(tmp_path / "vectors.npy", allow_pickle=False)
    assert vectors.shape == (10, 2048) and vectors.dtype == np.float32
    assert cosines(vectors, keras_vectors).min() >= PARITY


@pytest.mark.slow
def test_openvino_conversion_is_cached_by_model_hash(openvino_vectorizer, saved_model,
                                                     features, keras_vectors, caplog):
    openvino_vectorizer.transform(features[:1])        # converted and cached on first use
    sha = hashlib.sha256((saved_model / "model.keras").read_bytes()).hexdigest()
    # The cache is shared by the test session: other saved models have entries too.
    folders = [folder for folder in (openvino_cache_dir() / "openvino").iterdir()
               if folder.name.split("-")[0] == sha]
    assert len(folders) == 1
    assert (folders[0] / "model.xml").is_file() and (folders[0] / "model.bin").is_file()
    cached = Vectorizer.load(saved_model, runtime="openvino").transform(features[:2])
    assert cosines(cached, keras_vectors[:2]).min() >= PARITY
    # a damaged cache entry is noticed, converted again and replaced
    (folders[0] / "model.xml").write_text("not a model")
    with caplog.at_level(logging.WARNING, logger="lib.embedding.runtime"):
        again = Vectorizer.load(saved_model, runtime="openvino").transform(features[:2])
    assert "converting again" in caplog.text
    assert cosines(again, keras_vectors[:2]).min() >= PARITY
    assert "not a model" not in (folders[0] / "model.xml").read_text(errors="replace")


FALLBACK = """
import sys
sys.modules["openvino"] = None          # as if OpenVINO were not installed
import numpy as np
from lib.embedding.runtime import choose_runtime
from lib.embedding.vectorizer import Vectorizer
assert choose_runtime("auto") == "tensorflow"
try:
    choose_runtime("openvino")
    raise SystemExit("no error")
except ValueError as err:
    print("ERROR", err)
features = np.load(sys.argv[2])
vectorizer = Vectorizer.load(sys.argv[1], batch_size=4)
print("RUNTIME", vectorizer.runtime)
np.save(sys.argv[3], vectorizer.transform(features))
"""


@pytest.mark.slow
def test_without_openvino_auto_falls_back_to_keras(saved_model, features, keras_vectors,
                                                   tmp_path):
    np.save(tmp_path / "features.npy", features[:3])
    proc = subprocess.run([sys.executable, "-c", FALLBACK, str(saved_model),
                           str(tmp_path / "features.npy"), str(tmp_path / "out.npy")],
                          cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "RUNTIME tensorflow" in proc.stdout
    assert "ERROR modelling.runtime is 'openvino' but OpenVINO is not installed" in proc.stdout
    vectors = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(vectors, keras_vectors[:3], rtol=1e-4, atol=1e-4)


def test_choose_runtime_rejects_unknown_names():
    with pytest.raises(ConfigError, match="modelling.runtime: .onnx. is not allowed: "
                                          "expected one of auto, openvino, tensorflow"):
        choose_runtime("onnx")
    assert choose_runtime("tensorflow") == "tensorflow"


def test_streamed_npy_files_are_byte_for_byte_numpy_save(tmp_path):
    data = np.random.default_rng(1).normal(size=(37, 5, 3)).astype(np.float32)
    np.save(tmp_path / "plain.npy", data)
    with open_npy_writer(tmp_path / "streamed.npy", data.shape, np.float32) as out:
        for start in range(0, 37, 8):
            out[start:start + 8] = data[start:start + 8]
    assert (tmp_path / "streamed.npy").read_bytes() == (tmp_path / "plain.npy").read_bytes()
    reader = NpyRowReader(tmp_path / "streamed.npy", dtype=np.float32, ndim=3)
    assert len(reader) == 37 and reader.shape == (37, 5, 3)
    chunks = list(reader.chunks(10))
    assert [start for start, _ in chunks] == [0, 10, 20, 30]
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in chunks]), data)
    np.testing.assert_array_equal(reader.read(35, 99), data[35:])
    with pytest.raises(TypeError, match="contiguous slice"):
        with open_npy_writer(tmp_path / "x.npy", (4,), np.int64) as out:
            out[::2] = 1


def test_feature_store_is_byte_for_byte_the_whole_array_result(tmp_path):
    images = np.stack([load_image(path, EtlConfig()) for path in PHOTOS[:5]])
    np.save(tmp_path / "rgb.npy", images)
    np.save(tmp_path / "plain.npy", preprocess(images))
    assert run_feature_engineering(tmp_path / "rgb.npy", tmp_path / "fe.npy", chunk_size=2) == 5
    assert (tmp_path / "fe.npy").read_bytes() == (tmp_path / "plain.npy").read_bytes()


def jpeg_bytes(rgb: np.ndarray, orientation: int = 1) -> bytes:
    """A JPEG of an RGB array, with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def test_reduced_decode_flag_choice():
    jpeg, png = b"\xff\xd8\xff\xe0", b"\x89PNG"
    assert imread_flag(jpeg, (3000, 4000), 448) == cv2.IMREAD_REDUCED_COLOR_4
    assert imread_flag(jpeg, (4000, 3600), 448) == cv2.IMREAD_REDUCED_COLOR_8
    assert imread_flag(jpeg, (900, 1200), 448) == cv2.IMREAD_REDUCED_COLOR_2
    assert imread_flag(jpeg, (400, 533), 448) == cv2.IMREAD_COLOR          # typical photo
    assert imread_flag(jpeg, (3000, 4000), 0) == cv2.IMREAD_COLOR          # switched off
    assert imread_flag(png, (3000, 4000), 448) == cv2.IMREAD_COLOR         # JPEG only
    assert imread_flag(jpeg, None, 448) == cv2.IMREAD_COLOR


def big_photos(tmp_path, count):
    """12-megapixel JPEGs made by upscaling real photos."""
    paths = []
    for path in PHOTOS[:count]:
        big = cv2.resize(cv2.imread(str(path)), (3000, 4000), interpolation=cv2.INTER_CUBIC)
        paths.append(tmp_path / path.name)
        assert cv2.imwrite(str(paths[-1]), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return paths


def test_reduced_decode_stays_within_tolerance_of_full_decode(tmp_path):
    for path in big_photos(tmp_path, 3):
        reduced = load_image(path, EtlConfig()).astype(int)
        full = load_image(path, EtlConfig(reduced_decode=False)).astype(int)
        assert reduced.shape == full.shape == (224, 224, 3)
        assert np.abs(reduced - full).max() <= 12
        assert np.abs(reduced - full).mean() <= 1.0


def test_reduced_decode_applies_exif_orientation_like_full_decode():
    rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(PHOTOS[0])), cv2.COLOR_BGR2RGB),
                     (1000, 1800), interpolation=cv2.INTER_CUBIC)       # 1000 wide, 1800 high
    data = jpeg_bytes(rgb, orientation=6)                              # rotate 90 clockwise
    assert imread_flag(data, (1000, 1800), 448) == cv2.IMREAD_REDUCED_COLOR_2
    full = decode_image(data, 10**8)
    reduced = decode_image(data, 10**8, min_side=448)
    assert full.shape == (1000, 1800, 3)                               # rotated
    assert reduced.shape == (500, 900, 3)                              # rotated too
    back = cv2.resize(full, (900, 500), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(back - reduced).mean() <= 2.0


@pytest.mark.slow
def test_reduced_decode_embeddings_match_full_decode(openvino_vectorizer, tmp_path):
    paths = big_photos(tmp_path, 3)
    vectorizer = openvino_vectorizer
    reduced = vectorizer.transform(preprocess(np.stack([load_image(p, EtlConfig())
                                                        for p in paths])))
    full = vectorizer.transform(preprocess(np.stack(
        [load_image(p, EtlConfig(reduced_decode=False)) for p in paths])))
    print("reduced vs full decode, embedding cosines:", cosines(reduced, full))
    assert cosines(reduced, full).min() >= 0.995


@pytest.mark.slow
def test_queued_queries_run_on_throughput_streams_with_the_same_vectors(openvino_vectorizer,
                                                                        features):
    embedder = BatchingEmbedder(0.0)
    try:
        embedder.warm(openvino_vectorizer).join()        # compiled before the burst
        futures = [embedder.submit(openvino_vectorizer, image) for image in features]
        vectors = np.stack([future.result(timeout=120) for future in futures])  # (10, D)
    finally:
        embedder.close()
    stats = embedder.stats()
    assert stats["queries"] == 10 and stats["streamed_batches"] >= 1, stats
    alone = np.concatenate([openvino_vectorizer.transform(image[np.newaxis])
                            for image in features])                            # (10, D)
    assert cosines(vectors, alone).min() >= PARITY


@pytest.mark.slow
def test_an_ir_at_a_new_path_compiles_from_the_cache_and_the_cache_stays_bounded(
        saved_model, features, tmp_path, monkeypatch):
    # Serving compiles the IR from a private copy, at a new path every run.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_inference_model(tmp_path / "ir", saved_model / MODEL_FILE, tmp_path / "unused.npy",
                          ModellingConfig())
    vectors = []
    for copy in ("run-1", "run-2", "run-3"):
        shutil.copytree(tmp_path / "ir", tmp_path / copy)
        vectorizer = Vectorizer(None, runtime="openvino", ir_model=tmp_path / copy / "model.xml")
        vectors.append(vectorizer.transform(features[:2]))                   # (2, D)
    compiled = tmp_path / "cache" / "compiled"
    assert len(list(compiled.glob("*.blob"))) == 1          # one blob, found again by content
    assert np.array_equal(vectors[0], vectors[2])
    for number in range(12):                                # blobs of other models, older
        (compiled / f"{number}.blob").write_bytes(b"x")
        os.utime(compiled / f"{number}.blob", (1e9 + number, 1e9 + number))
    for blob in compiled.glob("*.blob"):
        if blob.stat().st_size > 1:
            blob.unlink()                                   # compiled again: a new blob
    Vectorizer(None, runtime="openvino",
               ir_model=tmp_path / "run-1" / "model.xml").transform(features[:1])
    kept = sorted(blob.name for blob in compiled.glob("*.blob"))
    assert len(kept) == COMPILED_KEPT and f"{0}.blob" not in kept   # the oldest went
