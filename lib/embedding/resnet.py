"""The ResNet50 vectorizer model: building it, its GeM pooling layer, loading it safely.

:class:`ResNet50Helper` builds Keras ResNet50 cut at its global pooling layer (the
design's ``avg_pool``, or max / GeM pooling as options); :func:`load_keras_model`
loads the saved artifact with Keras safe mode. Keras is imported lazily: importing
``lib`` never starts TensorFlow.
"""
import functools
import re
from pathlib import Path
from typing import Optional

from lib.cli import quiet_native_stderr
from lib.config import EtlConfig, ModellingConfig
from lib.embedding.weights import resolve_weights
from lib.errors import ArtifactError, one_line, WeightsError

_REASON_CHARS = 300      # longest reason quoted from Keras


@functools.lru_cache(maxsize=None)
def _keras():
    """Imports Keras lazily: importing lib must not start TensorFlow."""
    with quiet_native_stderr():
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
        # The same validation as params.yaml's, from the one place it is declared.
        ModellingConfig(weights=weights, pooling=pooling, gem_p=gem_p)
        EtlConfig(image_size=image_size)
        self.weights = weights
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.image_size = int(image_size)

    @classmethod
    def from_config(cls, modelling: ModellingConfig, etl: EtlConfig) -> "ResNet50Helper":
        """Builds the helper from the ``modelling`` and ``etl`` settings."""
        return cls(weights=modelling.weights, pooling=modelling.pooling,
                   gem_p=modelling.gem_p, image_size=etl.image_size)

    def resolved_weights(self) -> str:
        """Returns the checked local file of the weights (``imagenet``: Keras' cached file).

        Raises:
            WeightsError: The ImageNet weights cannot be downloaded, or the file is
                missing or does not hold ResNet50 no-top weights (one line naming
                ``modelling.weights`` and how to set it; see :mod:`lib.embedding.weights`).
        """
        return str(resolve_weights(self.weights))

    def build(self):
        """Builds the Keras model: (N, S, S, 3) preprocessed input -> (N, 2048).

        Raises:
            WeightsError: As :meth:`resolved_weights`, or a file whose weights do not
                fit the model.
        """
        keras = _keras()
        size = self.image_size
        weights = self.resolved_weights()
        try:
            backbone = keras.applications.ResNet50(include_top=False, pooling=None,
                                                   weights=weights, input_shape=(size, size, 3))
        except ValueError as err:      # the arguments are validated: the file does not fit
            raise WeightsError(f"modelling.weights: {weights} does not fit ResNet50 no-top: "
                               f"{one_line(err)}") from err
        features = backbone.output                                   # (N, 7, 7, 2048)
        if self.pooling == "avg":
            pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        elif self.pooling == "max":
            pooled = keras.layers.GlobalMaxPooling2D(name="max_pool")(features)
        else:
            pooled = _gem_layer_class()(p=self.gem_p, name="gem_pool")(features)
        return keras.Model(backbone.input, pooled, name="resnet50_vectorizer")  # (N, 2048)


def load_keras_model(path: Path, shown_as: Optional[Path] = None):
    """Loads a saved ``.keras`` vectorizer with Keras safe mode (no code from the file).

    Args:
        path: The ``.keras`` file.
        shown_as: The path to name in errors (when ``path`` is a private copy).

    Raises:
        ArtifactError: Unreadable, or not an (N, S, S, 3) -> (N, D) model.
    """
    keras = _keras()
    shown = shown_as if shown_as is not None else path
    _gem_layer_class()  # registered before loading so GeM models deserialise safely
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # pylint: disable=broad-exception-caught
        # Keras raises many types for a bad archive; all mean the artifact is unusable.
        raise ArtifactError(f"vectorizer model {shown} cannot be loaded: "
                            f"{_short_reason(err)}") from err
    in_shape, out_shape = tuple(model.input_shape), tuple(model.output_shape)
    if len(in_shape) != 4 or in_shape[3] != 3 or len(out_shape) != 2:
        raise ArtifactError(f"vectorizer model {shown} maps {in_shape} to {out_shape}, "
                            "expected (N, S, S, 3) to (N, D)")
    return model


def _short_reason(err: Exception) -> str:
    """Keras's reason in a few words: its messages run to a thousand characters."""
    text = one_line(err)
    if "safe_mode" in text or "unsafe_deserialization" in text:
        found = re.search(r"deserialization of a `?(\w+)`? layer", text)
        layer = f"a {found.group(1)} layer" if found else "Python code"
        return (f"it holds {layer} (code that safe mode refuses to run): rebuild it with "
                "`dvc repro` rather than loading code from the file")
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."
