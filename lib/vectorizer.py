"""ResNet50 embedding model: building it, saving it, loading it, and running it.

The modelling stage builds the model with :class:`ResNet50Helper` and saves it; the
modelling stage and the serving path both embed through :class:`Vectorizer`, which
wraps the *saved* model.
"""
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from lib.artifacts import ArtifactError, atomic_path
from lib.params import get_choice, get_float, get_int

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

POOLINGS = ("avg", "max", "gem")
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


class Vectorizer:
    """Embeds preprocessed images with a Keras model, batch by batch.

    Args:
        model: A Keras model mapping (N, S, S, 3) ``float32`` to (N, D).
        batch_size: Images per forward pass.
    """

    def __init__(self, model, batch_size: int = 32):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self._forward = None

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
             expected_dim: Optional[int] = None) -> "Vectorizer":
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
        return cls(model, batch_size=batch_size)


def batch_size_from_params(modelling: Dict[str, Any]) -> int:
    """Reads ``modelling.batch_size``."""
    return get_int(modelling, "batch_size", 1)
