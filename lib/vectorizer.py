"""ResNet50 embedding model: building it, saving it, loading it, and running it.

The modelling stage builds the model with :class:`ResNet50Helper` and saves it; the
modelling stage and the serving path both embed through :class:`Vectorizer`, which
wraps the *saved* model and runs it with the runtime :func:`choose_runtime` picks:

* ``tensorflow``: a traced ``tf.function`` of the Keras model; on a GPU whenever
  TensorFlow sees one.
* ``openvino``: the same Keras model converted in memory by OpenVINO and compiled for
  the CPU in fp32 (about twice as fast on a CPU; vectors equal to the Keras model's
  to cosine >= 0.99999, which the tests check). The Keras ``.keras`` file stays the
  only artifact of record: the conversion happens at load time, and its result is
  kept in a cache keyed by the SHA-256 of ``model.keras`` (``$IMAGE_SEARCH_CACHE``,
  default ``~/.cache/image-search``; set it empty to switch the cache off), so a
  changed model can never meet a stale conversion.
"""
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from lib.artifacts import ArtifactError, NpyRowReader, atomic_path, open_npy_writer
from lib.params import get_choice, get_float, get_int

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

POOLINGS = ("avg", "max", "gem")
RUNTIMES = ("auto", "openvino", "tensorflow")
CACHE_ENV = "IMAGE_SEARCH_CACHE"
MODEL_FILE = "model.keras"  # inside the vectorizer_model directory


def _keras():
    """Imports Keras lazily: importing lib must not start TensorFlow."""
    import keras  # pylint: disable=import-outside-toplevel
    return keras


def _gem_layer_class():
    """Returns the registered GeM pooling layer class (defined once, lazily)."""
    keras = _keras()
    registered = keras.saving.get_registered_object("image_search>GeMPooling2D")
    if registered is not None:
        return registered

    @keras.saving.register_keras_serializable(package="image_search")
    class GeMPooling2D(keras.layers.Layer):  # pylint: disable=too-many-ancestors,abstract-method
        """Generalised-mean pooling: (mean(x ** p)) ** (1 / p) over height and width."""

        def __init__(self, p: float = 3.0, eps: float = 1e-6, **kwargs):
            super().__init__(**kwargs)
            self.p = float(p)
            self.eps = float(eps)

        def call(self, inputs):  # pylint: disable=arguments-differ
            ops = keras.ops
            clipped = ops.maximum(inputs, self.eps)                  # (N, h, w, C)
            pooled = ops.mean(ops.power(clipped, self.p), axis=(1, 2))  # (N, C)
            return ops.power(pooled, 1.0 / self.p)                   # (N, C)

        def compute_output_shape(self, input_shape):  # pylint: disable=arguments-differ
            return (input_shape[0], input_shape[3])

        def get_config(self):
            return {**super().get_config(), "p": self.p, "eps": self.eps}

    return GeMPooling2D


class ResNet50Helper:
    """Builds Keras ResNet50 cut at its global pooling layer (2048-d output).

    With the default ``pooling="avg"`` the output is exactly ResNet50's ``avg_pool``.

    Args:
        weights: ``"imagenet"`` (Keras downloads them) or the path of a local
            no-top ``.h5`` weights file.
        pooling: ``avg`` (design default), ``max`` or ``gem``.
        gem_p: Exponent of GeM pooling.
        image_size: Input side in pixels.
    """

    def __init__(self, weights: str = "imagenet", pooling: str = "avg", gem_p: float = 3.0,
                 image_size: int = 224):
        if not isinstance(weights, str) or not weights:
            raise TypeError(f"weights must be 'imagenet' or a file path, got {weights!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.weights = weights
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.image_size = int(image_size)

    @classmethod
    def from_params(cls, modelling: Dict[str, Any], image_size: int) -> "ResNet50Helper":
        """Builds the helper from the ``modelling`` section of ``params.yaml``."""
        return cls(weights=modelling.get("weights"),
                   pooling=get_choice(modelling, "pooling", POOLINGS),
                   gem_p=get_float(modelling, "gem_p", 1.0), image_size=image_size)

    def resolved_weights(self) -> str:
        """Returns ``"imagenet"`` or the checked local weights path.

        Raises:
            ValueError: A local path that does not exist or is not an ``.h5`` file.
        """
        if self.weights == "imagenet":
            return self.weights
        path = Path(self.weights).expanduser()
        if not path.is_file():
            raise ValueError(f"weights file {path} not found (set modelling.weights in "
                             "params.yaml to 'imagenet' or to a local .h5 file)")
        if path.suffix.lower() not in (".h5", ".hdf5"):
            raise ValueError(f"weights file {path} must be a Keras .h5 weights file")
        return str(path)

    def build(self):
        """Builds the Keras model: (N, S, S, 3) preprocessed input -> (N, 2048)."""
        keras = _keras()
        size = self.image_size
        backbone = keras.applications.ResNet50(include_top=False, pooling=None,
                                               weights=self.resolved_weights(),
                                               input_shape=(size, size, 3))
        features = backbone.output                                   # (N, 7, 7, 2048)
        if self.pooling == "avg":
            pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        elif self.pooling == "max":
            pooled = keras.layers.GlobalMaxPooling2D(name="max_pool")(features)
        else:
            pooled = _gem_layer_class()(p=self.gem_p, name="gem_pool")(features)
        return keras.Model(backbone.input, pooled, name="resnet50_vectorizer")  # (N, 2048)


def openvino_available() -> bool:
    """Whether the OpenVINO runtime can be imported."""
    try:
        _openvino()
    except (ImportError, OSError) as err:
        logger.debug("OpenVINO cannot be imported: %s", err)
        return False
    return True


def _openvino():
    """Imports OpenVINO lazily (it is optional)."""
    import openvino  # pylint: disable=import-outside-toplevel
    return openvino


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return bool(tf.config.list_physical_devices("GPU"))


def choose_runtime(requested: str = "auto") -> str:
    """The runtime that embeds: the same rule for the modelling stage and serving.

    ``auto`` gives ``tensorflow`` when TensorFlow sees a GPU, else ``openvino`` when
    it is installed, else ``tensorflow``. ``openvino`` and ``tensorflow`` are taken
    as asked.

    Raises:
        ValueError: An unknown runtime, or ``openvino`` asked for but not installed.
    """
    if requested not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {requested!r}")
    if requested == "tensorflow":
        return requested
    if requested == "openvino":
        if not openvino_available():
            raise ValueError("modelling.runtime is 'openvino' but OpenVINO is not installed "
                             "(pip install openvino, or set the runtime to auto)")
        return requested
    if gpu_available():
        return "tensorflow"
    if openvino_available():
        return "openvino"
    logger.info("OpenVINO is not installed: embedding with TensorFlow")
    return "tensorflow"


def openvino_cache_dir() -> Optional[Path]:
    """Where converted models are cached; None when ``$IMAGE_SEARCH_CACHE`` is empty."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return Path.home() / ".cache" / "image-search"
    return Path(value).expanduser() if value else None


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _openvino_model(core, model, source: Optional[Path]):
    """The OpenVINO model of a Keras model: from the cache, or converted (and cached)."""
    openvino = _openvino()
    cache = openvino_cache_dir()
    if source is None or cache is None:
        return openvino.convert_model(model)
    version = re.sub(r"[^\w.-]", "_", openvino.get_version())
    folder = cache / "openvino" / f"{_file_sha256(source)}-{version}"
    xml = folder / "model.xml"
    if xml.is_file():
        try:
            return core.read_model(xml)
        except RuntimeError as err:
            logger.warning("converting again: cached %s is unreadable (%s)", xml, err)
    converted = openvino.convert_model(model)
    try:
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            openvino.save_model(converted, tmp / "model.xml", compress_to_fp16=False)
    except (OSError, RuntimeError) as err:
        logger.warning("cannot cache the converted model in %s: %s", folder, err)
    return converted


class _OpenVinoForward:
    """The Keras model converted by OpenVINO, compiled for the CPU in fp32.

    Large inputs are split into ``batch_size`` requests run in parallel (throughput
    mode); a few images run as one request in latency mode.
    """

    def __init__(self, model, batch_size: int, source: Optional[Path] = None):
        self._core = _openvino().Core()
        self._model = _openvino_model(self._core, model, source)
        self._batch_size = batch_size
        self._compiled: Dict[str, Any] = {}

    def _compile(self, hint: str):
        if hint not in self._compiled:
            self._compiled[hint] = self._core.compile_model(
                self._model, "CPU",
                {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"})
        return self._compiled[hint]

    def __call__(self, images: np.ndarray, out: np.ndarray) -> None:
        """Embeds (N, S, S, 3) ``images`` into ``out`` (N, D)."""
        if images.shape[0] <= self._batch_size:
            out[:] = self._compile("LATENCY")(images)[0]
            return
        compiled = self._compile("THROUGHPUT")
        count = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        requests = [compiled.create_infer_request() for _ in range(count)]
        pending: List[Optional[int]] = [None] * count      # first row each request holds
        try:
            for step, start in enumerate(range(0, images.shape[0], self._batch_size)):
                slot = step % count
                self._collect(requests[slot], pending[slot], out)
                requests[slot].start_async({0: images[start:start + self._batch_size]})
                pending[slot] = start
        finally:                  # also on Ctrl-C: requests in flight finish before unwinding
            for request in requests:
                request.wait()
        for request, first in zip(requests, pending):
            self._collect(request, first, out)

    @staticmethod
    def _collect(request, first: Optional[int], out: np.ndarray) -> None:
        """Waits for a request and copies its (B, D) result into ``out`` from row ``first``."""
        if first is None:
            return
        request.wait()
        result = request.get_output_tensor(0).data                     # (B, D)
        out[first:first + result.shape[0]] = result


class Vectorizer:
    """Embeds preprocessed images with a Keras model, batch by batch.

    Args:
        model: A Keras model mapping (N, S, S, 3) ``float32`` to (N, D).
        batch_size: Images per forward pass.
        runtime: ``auto``, ``openvino`` or ``tensorflow`` (see :func:`choose_runtime`).
        source: The saved ``model.keras`` the model was loaded from, if any (keys the
            cache of its OpenVINO conversion).
    """

    def __init__(self, model, batch_size: int = 32, runtime: str = "auto",
                 source: Optional[Path] = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self.runtime = choose_runtime(runtime)
        self.source = source
        self._forward = None
        self._openvino: Optional[_OpenVinoForward] = None

    @property
    def input_shape(self) -> tuple:
        """Shape of one input image, (S, S, 3)."""
        return tuple(self.model.input_shape[1:])

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        return int(self.model.output_shape[-1])

    def _compiled(self):
        """A traced TensorFlow function of the model (several times faster than predict)."""
        if self._forward is None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
            spec = tf.TensorSpec((None,) + self.input_shape, tf.float32)
            model = self.model
            self._forward = tf.function(lambda x: model(x, training=False),
                                        input_signature=[spec])
        return self._forward

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Embeds a batch of preprocessed images.

        Args:
            images: (N, S, S, 3) ``float32``, the output of ``lib.features.preprocess``.

        Returns:
            (N, D) ``float32`` embeddings.

        Raises:
            TypeError: Not a float array.
            ValueError: Wrong image shape.
        """
        if not isinstance(images, np.ndarray) or images.dtype.kind != "f":
            raise TypeError("expected a float32 numpy array of preprocessed images")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            shape = ", ".join(map(str, self.input_shape))
            raise ValueError(f"expected images of shape (N, {shape}), got {images.shape}")
        out = np.empty((images.shape[0], self.dim), dtype=np.float32)  # (N, D)
        if self.runtime == "openvino":
            if self._openvino is None:
                self._openvino = _OpenVinoForward(self.model, self.batch_size, self.source)
            self._openvino(np.ascontiguousarray(images, dtype=np.float32), out)
            return out
        forward = self._compiled()
        for start in range(0, images.shape[0], self.batch_size):
            batch = np.asarray(images[start:start + self.batch_size], dtype=np.float32)
            out[start:start + batch.shape[0]] = forward(batch).numpy()  # (B, D)
        return out

    def save(self, directory: PathLike) -> None:
        """Saves the model with Keras ``Model.save()`` defaults into ``directory``.

        Keras 3's default format is the ``.keras`` archive, so the artifact is a
        directory holding ``model.keras``. The write is atomic.
        """
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            self.model.save(tmp / MODEL_FILE)

    @classmethod
    def load(cls, directory: PathLike, batch_size: int = 32,
             expected_dim: Optional[int] = None, runtime: str = "auto") -> "Vectorizer":
        """Loads a saved vectorizer model with Keras safe mode (no code from the file).

        Raises:
            ArtifactError: Missing, unreadable, or not an image-to-vector model.
        """
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise ArtifactError(f"vectorizer model {path} is missing")
        keras = _keras()
        _gem_layer_class()  # registered before loading so GeM models deserialise safely
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as err:  # pylint: disable=broad-exception-caught
            raise ArtifactError(f"vectorizer model {path} cannot be loaded: {err}") from err
        in_shape, out_shape = tuple(model.input_shape), tuple(model.output_shape)
        if len(in_shape) != 4 or in_shape[3] != 3 or len(out_shape) != 2:
            raise ArtifactError(f"vectorizer model {path} maps {in_shape} to {out_shape}, "
                                "expected (N, S, S, 3) to (N, D)")
        if expected_dim is not None and out_shape[1] != expected_dim:
            raise ArtifactError(f"vectorizer model {path} gives {out_shape[1]}-d vectors, "
                                f"the index holds {expected_dim}-d vectors")
        return cls(model, batch_size=batch_size, runtime=runtime, source=path)


def runtime_from_params(modelling: Dict[str, Any]) -> str:
    """Reads ``modelling.runtime`` (``auto`` when absent)."""
    if "runtime" not in modelling:
        return "auto"
    return get_choice(modelling, "runtime", RUNTIMES)


def batch_size_from_params(modelling: Dict[str, Any]) -> int:
    """Reads ``modelling.batch_size``."""
    return get_int(modelling, "batch_size", 1)


def run_embedding(features_in: PathLike, vectors_out: PathLike, vectorizer: Vectorizer,
                  chunk_size: int = 256) -> int:
    """Embeds the feature store with ``vectorizer``, chunk by chunk.

    Returns:
        The number of vectors written.
    """
    features = NpyRowReader(features_in, dtype=np.float32, ndim=4,
                            trailing_shape=vectorizer.input_shape)  # (N, S, S, 3)
    total = len(features)
    with open_npy_writer(vectors_out, (total, vectorizer.dim), np.float32) as out:
        for start, chunk in features.chunks(chunk_size):
            out[start:start + chunk.shape[0]] = vectorizer.transform(chunk)   # (C, D)
            logger.info("embedding: %d/%d images", start + chunk.shape[0], total)
    return int(total)
