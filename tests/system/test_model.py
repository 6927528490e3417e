"""Feature engineering, the ResNet50 vectorizer and the search engine, on real weights."""
import numpy as np
import pytest

from lib.config import EtlConfig
from lib.embedding.preprocessing import preprocess
from lib.embedding.resnet import ResNet50Helper
from lib.embedding.vectorizer import Vectorizer
from lib.errors import ArtifactError
from lib.photos.images import load_image
from lib.retrieval.engine import ImageSearchEngine
from tests.support.helpers import DATASET, pick_per_class


@pytest.fixture(scope="module", name="vectorizer")
def vectorizer_fixture(saved_model):
    """The saved model, loaded as serving loads it."""
    return Vectorizer.load(saved_model, batch_size=4)


def test_preprocess_equals_keras_preprocess_input_bit_for_bit():
    from keras.applications.resnet50 import preprocess_input  # pylint: disable=import-outside-toplevel
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    photos = np.stack([load_image(DATASET / path, EtlConfig())
                       for path, _ in pick_per_class("train", 1)[:4]])
    every = np.arange(256, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 1, 3), np.uint8)
    for batch in (images, photos, every):          # random, real photos, every value
        got = preprocess(batch)
        assert got.shape == batch.shape and got.dtype == np.float32
        expected = np.asarray(preprocess_input(batch.astype(np.float32)), dtype=np.float32)
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))   # the bits
    got = preprocess(images)
    # caffe mode: RGB -> BGR and the ImageNet mean subtracted
    np.testing.assert_allclose(got[0, 0, 0], images[0, 0, 0, ::-1] - [103.939, 116.779, 123.68],
                               rtol=1e-6)


def test_preprocess_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        preprocess(np.zeros((1, 224, 224, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="batch"):
        preprocess(np.zeros((224, 224, 3), dtype=np.uint8))


def test_model_is_resnet50_avg_pool(vectorizer):
    model = vectorizer.model
    assert model.layers[-1].name == "avg_pool"
    assert tuple(model.input_shape) == (None, 224, 224, 3)
    assert tuple(model.output_shape) == (None, 2048)
    assert model.count_params() == 23_587_712


def test_transform_shapes_batches_and_matches_keras_predict(vectorizer):
    rows = pick_per_class("train", 1)[:5]
    rgb = np.stack([load_image(DATASET / path, EtlConfig()) for path, _ in rows])
    features = preprocess(rgb)
    vectors = vectorizer.transform(features)            # batch size 4: two batches
    assert vectors.shape == (5, 2048) and vectors.dtype == np.float32
    reference = vectorizer.model.predict(features, verbose=0)
    np.testing.assert_allclose(vectors, reference, rtol=1e-4, atol=1e-4)
    assert (vectors >= 0).all()                           # avg_pool follows a ReLU
    one = vectorizer.transform(features[2:3])
    np.testing.assert_allclose(one[0], vectors[2], rtol=1e-4, atol=1e-4)


def test_transform_rejects_bad_input(vectorizer):
    with pytest.raises(TypeError):
        vectorizer.transform(np.zeros((1, 224, 224, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        vectorizer.transform(np.zeros((1, 100, 100, 3), dtype=np.float32))


def test_local_weights_must_exist(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        ResNet50Helper(weights=str(tmp_path / "none.h5")).build()
    with pytest.raises(ValueError, match="pooling"):
        ResNet50Helper(pooling="median")


def test_load_refuses_missing_or_broken_model(tmp_path):
    with pytest.raises(ArtifactError, match="missing"):
        Vectorizer.load(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        Vectorizer.load(tmp_path)


def test_engine_ranks_itself_first_and_validates(vectorizer):
    rows = pick_per_class("train", 1)[:6]
    rgb = np.stack([load_image(DATASET / path, EtlConfig()) for path, _ in rows])
    vectors = vectorizer.transform(preprocess(rgb))
    names = np.array([path for path, _ in rows])
    engine = ImageSearchEngine(vectors, names, vectorizer, EtlConfig(), images=rgb)
    results = engine.most_similar(DATASET / rows[3][0], 3)
    assert len(results) == 3
    assert results[0][1] == rows[3][0] and results[0][0] >= 0.9999
    assert [s for s, _ in results] == sorted((s for s, _ in results), reverse=True)
    assert all(isinstance(s, float) and isinstance(n, str) for s, n in results)
    assert len(engine.most_similar(DATASET / rows[0][0], 50)) == 6
    with pytest.raises(ValueError, match="positive"):
        engine.most_similar(DATASET / rows[0][0], 0)
    with pytest.raises(ValueError, match="positive"):
        engine.most_similar(DATASET / rows[0][0], 2.5)
    with pytest.raises(ArtifactError, match="out of step"):
        ImageSearchEngine(vectors, names[:5], vectorizer, EtlConfig())
