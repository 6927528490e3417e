"""The vectorizer: the saved model run batch by batch, offline and online alike.

The modelling stage embeds the collection with :func:`run_embedding`; serving embeds
each query with :meth:`Vectorizer.transform`. Both go through the same
:class:`Vectorizer`, loaded from the same saved artifact and run by the runtime that
:func:`lib.runtime.choose_runtime` picks.
"""
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from lib.artifacts import ArtifactError, NpyRowReader, atomic_path
from lib.errors import PathLike
from lib.resnet import load_keras_model
from lib.rowindex import RowPlan, apply_rows
from lib.runtime import OpenVinoForward, choose_runtime, tf_forward

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"  # inside the vectorizer_model directory


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
        self._openvino: Optional[OpenVinoForward] = None

    @property
    def input_shape(self) -> tuple:
        """Shape of one input image, (S, S, 3)."""
        return tuple(self.model.input_shape[1:])

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        return int(self.model.output_shape[-1])

    def _compiled(self):
        """The traced TensorFlow function of the model, made once."""
        if self._forward is None:
            self._forward = tf_forward(self.model, self.input_shape)
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
                self._openvino = OpenVinoForward(self.model, self.batch_size, self.source)
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
        model = load_keras_model(path)
        out_shape = tuple(model.output_shape)
        if expected_dim is not None and out_shape[1] != expected_dim:
            raise ArtifactError(f"vectorizer model {path} gives {out_shape[1]}-d vectors, "
                                f"the index holds {expected_dim}-d vectors")
        return cls(model, batch_size=batch_size, runtime=runtime, source=path)


def run_embedding(features_in: PathLike, vectors_out: PathLike, vectorizer: Vectorizer,
                  chunk_size: int = 256, plan: Optional[RowPlan] = None) -> int:
    """Embeds the feature store with ``vectorizer``, chunk by chunk.

    Args:
        features_in: The (N, S, S, 3) ``float32`` feature store.
        vectors_out: The (N, D) ``float32`` output.
        vectorizer: The model that embeds.
        chunk_size: Feature-store rows read per step.
        plan: ``plan.compute`` (sorted row indices) are embedded; every other row ``i``
            is copied from row ``plan.sources[i]`` of ``plan.previous`` (the previous
            vectors). None embeds every row.

    Returns:
        The number of vectors written.
    """
    features = NpyRowReader(features_in, dtype=np.float32, ndim=4,
                            trailing_shape=vectorizer.input_shape)  # (N, S, S, 3)
    return apply_rows(features, vectors_out, (vectorizer.dim,), np.float32,
                      vectorizer.transform, plan or RowPlan.full(len(features)), chunk_size,
                      "embedding")
