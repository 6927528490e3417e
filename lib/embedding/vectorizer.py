"""The vectorizer: the saved model run batch by batch, offline and online alike.

The modelling stage embeds the collection with :func:`run_embedding`; serving embeds
each query with :meth:`Vectorizer.transform`. Both go through the same
:class:`Vectorizer`, loaded from the same saved artifact and run by the runtime that
:func:`lib.embedding.runtime.choose_runtime` picks.
"""
import json
import logging
import tempfile
import re
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from lib.arrays import Layout, open_rows
from lib.artifacts import atomic_path
from lib.config import positive_int
from lib.embedding.conversion import sha256_hex
from lib.embedding.inference_model import read_inference_model
from lib.embedding.resnet import load_keras_model
from lib.embedding.runtime import choose_runtime, OpenVinoForward, tf_forward
from lib.errors import ArtifactError, ConfigError, PathLike
from lib.incremental import apply_rows, RowPlan

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"  # inside the vectorizer_model directory
METADATA_FILE = "metadata.json"  # inside the .keras archive
CONFIG_FILE = "config.json"      # inside the .keras archive
_SHARED_ID = re.compile(rb'"shared_object_id": (\d+)')


class Vectorizer:
    """Embeds preprocessed images with the saved model, batch by batch.

    Args:
        model: A Keras model mapping (N, S, S, 3) ``float32`` to (N, D); None to run
            ``ir_model`` alone (OpenVINO, no TensorFlow).
        batch_size: Images per forward pass.
        runtime: ``auto``, ``openvino`` or ``tensorflow`` (see :func:`choose_runtime`).
        source_sha256: SHA-256 of the saved ``model.keras`` bytes the model was loaded
            from, if any (keys the cache of its OpenVINO conversion).
        precision: ``fp32``, ``bf16`` or ``int8`` (``modelling.precision``); ``bf16``
            and ``int8`` run on OpenVINO.
        ir_model: The inference model's OpenVINO IR (``model.xml``) of ``model``, run
            instead of converting it; required for ``int8`` and without ``model`` (see
            :mod:`lib.embedding.inference_model`).
        source: The saved ``model.keras`` it was loaded from (the ``ray`` engine ships
            its bytes, checked against ``source_sha256``).
    """

    def __init__(self, model, batch_size: int = 32, runtime: str = "auto",
                 source_sha256: Optional[str] = None, precision: str = "fp32",
                 ir_model: Optional[Path] = None,
                 source: Optional[Path] = None):  # pylint: disable=too-many-arguments
        positive_int(batch_size, "batch_size")
        if ir_model is None and (model is None or precision == "int8"):
            raise ValueError("give the IR model: precision int8, or no Keras model")
        self.model = model
        self.batch_size = batch_size
        self.runtime = choose_runtime(runtime, precision)
        if model is None and self.runtime != "openvino":
            raise ValueError(f"the {self.runtime} runtime needs the Keras model")
        self.source_sha256 = source_sha256
        self.source = source
        self.precision = precision
        self.ir_model = ir_model
        self._forward = None
        self._openvino: Optional[OpenVinoForward] = None

    def _openvino_forward(self) -> OpenVinoForward:
        """The OpenVINO model, made once (an IR is read when the vectorizer loads, while
        the pinned files it comes from are still there)."""
        if self._openvino is None:
            self._openvino = OpenVinoForward(self.model, self.batch_size, self.source_sha256,
                                             self.precision, self.ir_model)
        return self._openvino

    @property
    def input_shape(self) -> tuple:
        """Shape of one input image, (S, S, 3)."""
        if self.model is None:
            return self._openvino_forward().input_shape
        return tuple(self.model.input_shape[1:])

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        if self.model is None:
            return self._openvino_forward().dim
        return int(self.model.output_shape[-1])

    def streamed(self):
        """Batches in flight on OpenVINO's throughput streams (a
        :class:`lib.embedding.streams.StreamedForward`), or None on TensorFlow."""
        return self._openvino_forward().streamed() if self.runtime == "openvino" else None

    def _compiled(self):
        """The traced TensorFlow function of the model, made once."""
        if self._forward is None:
            self._forward = tf_forward(self.model, self.input_shape)
        return self._forward

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Embeds a batch of preprocessed images.

        Args:
            images: (N, S, S, 3) ``float32``, the output of
                ``lib.embedding.preprocessing.preprocess``.

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
            self._openvino_forward()(np.ascontiguousarray(images, dtype=np.float32), out)
            return out
        forward = self._compiled()
        for start in range(0, images.shape[0], self.batch_size):
            batch = np.asarray(images[start:start + self.batch_size], dtype=np.float32)
            out[start:start + batch.shape[0]] = forward(batch).numpy()  # (B, D)
        return out

    def save(self, directory: PathLike) -> None:
        """Saves the model with Keras ``Model.save()`` defaults into ``directory``.

        Keras 3's default format is the ``.keras`` archive, so the artifact is a
        directory holding ``model.keras``. The write is atomic, and reproducible: the
        same model gives the same bytes (see :func:`_reproducible_archive`), so a
        rebuild on another machine or clone leaves ``dvc.lock`` as it was.
        """
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            self.model.save(tmp / MODEL_FILE)
            _reproducible_archive(tmp / MODEL_FILE)

    @classmethod
    def load(cls, directory: PathLike, batch_size: int = 32,  # pylint: disable=too-many-arguments
             expected_dim: Optional[int] = None, runtime: str = "auto",
             precision: str = "fp32",
             inference_model: Optional[PathLike] = None) -> "Vectorizer":
        """Loads the saved vectorizer: the inference model's IR, or the Keras model.

        On OpenVINO the inference model's IR is read as it is (no TensorFlow, no
        conversion). Otherwise (the ``tensorflow`` runtime, or a build older than the
        IR) ``model.keras`` is loaded with Keras safe mode (no code from the file): it
        is read once, its bytes are hashed (the key of the OpenVINO conversion cache)
        and the model is loaded from a private copy of those very bytes, so whatever
        replaces the file meanwhile, the key names what was loaded.

        Args:
            directory: The ``vectorizer_model`` folder.
            batch_size: Images per forward pass.
            expected_dim: The index's vector length, if any.
            runtime: ``modelling.runtime``.
            precision: ``modelling.precision``: the collection must have been embedded
                in it (see :func:`lib.embedding.inference_model.read_inference_model`).
            inference_model: The ``inference_model`` folder built with the model (None:
                a build older than it, which is ``fp32``).

        Raises:
            ArtifactError: Missing, unreadable, or not an image-to-vector model; or an
                inference model of another precision.
        """
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise ArtifactError(f"vectorizer model {path} is missing")
        inference = read_inference_model(inference_model, precision)
        if inference.xml is not None and choose_runtime(runtime, precision) == "openvino":
            vectorizer = cls(None, batch_size=batch_size, runtime=runtime,
                             source_sha256=inference.keras_sha256, precision=precision,
                             ir_model=inference.xml, source=path)
            _check_dim(vectorizer, expected_dim, inference.xml)
            return vectorizer
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ArtifactError(f"vectorizer model {path} cannot be read: "
                                f"{err.strerror}") from err
        with tempfile.TemporaryDirectory(prefix="image-search-model-") as private:
            copy = Path(private) / MODEL_FILE
            copy.write_bytes(data)
            model = load_keras_model(copy, shown_as=path)
        vectorizer = cls(model, batch_size=batch_size, runtime=runtime,
                         source_sha256=sha256_hex(data), precision=precision,
                         ir_model=inference.xml if precision == "int8" else None, source=path)
        _check_dim(vectorizer, expected_dim, path)
        return vectorizer


def loads_keras_model(inference_model: Optional[PathLike], runtime: str,
                      precision: str) -> bool:
    """Whether :meth:`Vectorizer.load` reads ``model.keras`` (else only the IR).

    Serving copies only what it loads; a problem here is :meth:`Vectorizer.load`'s to
    name, so it counts as reading the Keras model.
    """
    try:
        inference = read_inference_model(inference_model, precision)
        return inference.xml is None or choose_runtime(runtime, precision) != "openvino"
    except (ArtifactError, ConfigError):
        return True


def _check_dim(vectorizer: Vectorizer, expected_dim: Optional[int], path: Path) -> None:
    """Refuses a model whose vectors are not the index's length (reads an IR now)."""
    dim = vectorizer.dim
    if expected_dim is not None and dim != expected_dim:
        raise ArtifactError(f"vectorizer model {path} gives {dim}-d vectors, the index holds "
                            f"{expected_dim}-d vectors")


def _renumber_shared_ids(config: bytes) -> bytes:
    """``config.json`` with its ``shared_object_id`` values renumbered 1, 2, ... in order."""
    numbers: Dict[bytes, bytes] = {}

    def number(match: "re.Match[bytes]") -> bytes:
        new = numbers.setdefault(match.group(1), str(len(numbers) + 1).encode())
        return b'"shared_object_id": ' + new

    return _SHARED_ID.sub(number, config)


def _reproducible_archive(path: Path) -> None:
    """Rewrites a saved ``.keras`` archive so that the same model gives the same bytes.

    Keras stamps the archive's entries and ``metadata.json`` (``date_saved``, never
    read back) with the save time, and ``config.json`` links shared objects by their
    Python ``id()`` (``shared_object_id``), a memory address. The stamps are dropped
    and the ids renumbered 1, 2, ... in order of first appearance (equal ids stay
    equal, so loading links the same objects). Everything else is kept: names, order,
    contents and compression of the entries.
    """
    rewritten = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == METADATA_FILE:
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif entry.filename == CONFIG_FILE:
                data = _renumber_shared_ids(data)
            target.writestr(zipfile.ZipInfo(entry.filename, date_time=(1980, 1, 1, 0, 0, 0)),
                            data, compress_type=entry.compress_type)
    rewritten.replace(path)


def run_embedding(features_in: PathLike, vectors_out: PathLike, vectorizer: Vectorizer,
                  chunk_size: int = 256, plan: Optional[RowPlan] = None,
                  storage: Optional[Layout] = None) -> int:
    """Embeds the feature store with ``vectorizer``, chunk by chunk.

    Args:
        features_in: The (N, S, S, 3) ``float32`` feature store.
        vectors_out: The (N, D) ``float32`` output.
        vectorizer: The model that embeds.
        chunk_size: Feature-store rows read per step.
        plan: ``plan.compute`` (sorted row indices) are embedded; every other row ``i``
            is copied from row ``plan.sources[i]`` of ``plan.previous`` (the previous
            vectors). None embeds every row.
        storage: How the output is stored (:class:`lib.arrays.Layout`); None: one
            ``.npy`` file.

    Returns:
        The number of vectors written.
    """
    features = open_rows(features_in, dtype=np.float32, ndim=4,
                         trailing_shape=vectorizer.input_shape)     # (N, S, S, 3)
    return apply_rows(features, vectors_out, (vectorizer.dim,), np.float32,
                      vectorizer.transform, plan or RowPlan.full(len(features)), chunk_size,
                      "embedding", storage)
