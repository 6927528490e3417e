"""The runtimes that run the vectorizer model: TensorFlow, or OpenVINO on a CPU.

:func:`choose_runtime` is the one rule the modelling stage, serving and evaluation
share (it looks for a GPU without starting TensorFlow where there is none).
``openvino`` runs the inference model's IR (:mod:`lib.embedding.inference_model`),
compiled for the CPU in fp32, bf16 or int8 with OpenVINO's own model cache; vectors
equal the Keras model's to cosine >= 0.99999, which the tests check. A Keras model is
converted only to make that IR, or to serve a build older than it: the conversion is
kept in a cache keyed by the SHA-256 of the ``model.keras`` bytes the Keras model was
loaded from (``$IMAGE_SEARCH_CACHE``, default ``~/.cache/image-search``; set it empty
to switch the caches off). Each entry records that digest and its files' digests
(:mod:`lib.embedding.conversion`), so a stale, foreign or damaged entry is never used.
"""
import functools
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from lib.cli import quiet_native_stderr
from lib.config import ModellingConfig
from lib.embedding.conversion import prune_compiled, read_entry, write_entry
from lib.errors import ConfigError

logger = logging.getLogger(__name__)

CACHE_ENV = "IMAGE_SEARCH_CACHE"
OPENVINO_FILES = ("model.xml", "model.bin")
# OpenVINO's INFERENCE_PRECISION_HINT per modelling.precision. int8 keeps f32 for the
# layers NNCF left unquantised, so its vectors do not depend on the CPU having bf16.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
BF16_MISSING = ("modelling.precision is bf16 but this CPU has no native bf16 (OpenVINO lists "
                "no BF16 capability; it needs AVX512_BF16 or AMX, e.g. Intel Xeon Cooper "
                "Lake, Sapphire Rapids or later): set the precision to fp32 or int8")


def tf_forward(model, input_shape: tuple):
    """A traced TensorFlow function of a Keras model (several times faster than predict)."""
    tf = _tensorflow()
    spec = tf.TensorSpec((None,) + tuple(input_shape), tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def openvino_available() -> bool:
    """Whether the OpenVINO runtime can be imported."""
    try:
        _openvino()
    except (ImportError, OSError) as err:
        logger.debug("OpenVINO cannot be imported: %s", err)
        return False
    return True


@functools.lru_cache(maxsize=None)
def _openvino():
    """Imports OpenVINO lazily (it is optional)."""
    with quiet_native_stderr():
        import openvino  # pylint: disable=import-outside-toplevel
    return openvino


@functools.lru_cache(maxsize=None)
def _tensorflow():
    """Imports TensorFlow lazily, without its native start-up lines in quiet runs."""
    with quiet_native_stderr():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf


# Where the NVIDIA driver shows its GPUs: without them TensorFlow cannot see one either,
# so a CPU machine decides ``auto`` without starting TensorFlow.
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU; TensorFlow is imported only where a GPU exists."""
    try:
        present = NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())
    except OSError:
        present = False
    if not present:
        return False
    tf = _tensorflow()
    return bool(tf.config.list_physical_devices("GPU"))


def choose_runtime(requested: str = "auto", precision: str = "fp32") -> str:
    """The runtime that embeds: the same rule for the modelling stage and serving.

    At ``fp32``, ``auto`` gives ``tensorflow`` when TensorFlow sees a GPU, else
    ``openvino`` when it is installed, else ``tensorflow``; ``openvino`` and
    ``tensorflow`` are taken as asked. ``bf16`` and ``int8`` run on OpenVINO (on the
    CPU, also where a GPU is present), and ``bf16`` only on a CPU that has it.

    Raises:
        ConfigError: An unknown runtime or precision, ``openvino`` asked for (or
            needed) but not installed, a precision other than ``fp32`` with the
            ``tensorflow`` runtime, or ``bf16`` on a CPU without bf16.
    """
    ModellingConfig(runtime=requested, precision=precision)  # validated where declared
    if precision != "fp32":
        if requested == "tensorflow":
            raise ConfigError(f"modelling.precision {precision} runs on OpenVINO but "
                              "modelling.runtime is 'tensorflow': set the runtime to auto or "
                              "openvino, or the precision to fp32")
        if not openvino_available():
            raise ConfigError(f"modelling.precision {precision} needs OpenVINO, which is not "
                              "installed (pip install openvino, or set the precision to fp32)")
        if precision == "bf16" and not cpu_has_bf16():
            raise ConfigError(BF16_MISSING)
        return "openvino"
    if requested == "tensorflow":
        return requested
    if requested == "openvino":
        if not openvino_available():
            raise ConfigError("modelling.runtime is 'openvino' but OpenVINO is not installed "
                             "(pip install openvino, or set the runtime to auto)")
        return requested
    if gpu_available():
        return "tensorflow"
    if openvino_available():
        return "openvino"
    logger.info("OpenVINO is not installed: embedding with TensorFlow")
    return "tensorflow"


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively (AVX512_BF16 or AMX).

    Without them OpenVINO would emulate bf16, several times slower than fp32.
    """
    core = _openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_cache_dir() -> Optional[Path]:
    """Where converted models are cached; None when ``$IMAGE_SEARCH_CACHE`` is empty."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return Path.home() / ".cache" / "image-search"
    return Path(value).expanduser() if value else None


def _openvino_model(core, load_model: Callable[[], Any], source_sha256: Optional[str]):
    """The OpenVINO model of a Keras model: from the cache, or converted (and cached).

    Args:
        core: The OpenVINO core.
        load_model: Gives the Keras model; called on a cache miss only, so a cached
            conversion needs no TensorFlow.
        source_sha256: SHA-256 of the ``.keras`` bytes the model was loaded from (the
            cache key); None converts without the cache.
    """
    openvino = _openvino()
    cache = openvino_cache_dir()
    if source_sha256 is None or cache is None:
        return openvino.convert_model(load_model())
    version = re.sub(r"[^\w.-]", "_", openvino.get_version())
    folder = cache / "openvino" / f"{source_sha256}-{version}"
    files = read_entry(folder, source_sha256, OPENVINO_FILES)
    if files is not None:
        try:                        # the bytes just checked against the manifest
            return core.read_model(files["model.xml"], files["model.bin"])
        except RuntimeError as err:
            logger.warning("converting again: cached %s is unreadable (%s)", folder, err)
    converted = openvino.convert_model(load_model())
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".scratch-", dir=folder.parent) as scratch:
            openvino.save_model(converted, Path(scratch) / "model.xml", compress_to_fp16=False)
            write_entry(folder, source_sha256,
                        {name: Path(scratch) / name for name in OPENVINO_FILES},
                        {"openvino": openvino.get_version()})
    except (OSError, RuntimeError) as err:
        logger.warning("cannot cache the converted model in %s: %s", folder, err)
    return converted


def save_converted(load_model: Callable[[], Any], source_sha256: str, xml_out: Path) -> str:
    """Writes the OpenVINO IR of a saved Keras model (``model.bin`` beside ``xml_out``).

    The conversion comes from the conversion cache when it holds one for these
    ``.keras`` bytes, else from the Keras model ``load_model`` gives.

    Returns:
        The OpenVINO version.
    """
    openvino = _openvino()
    converted = _openvino_model(openvino.Core(), load_model, source_sha256)
    openvino.save_model(converted, str(xml_out), compress_to_fp16=False)
    return openvino.get_version()


class OpenVinoForward:
    """An OpenVINO model (the inference model's IR, or a Keras model converted), compiled
    for the CPU.

    Large inputs are split into ``batch_size`` requests run in parallel (throughput
    mode); a few images run as one request in latency mode. Compiled models go to
    OpenVINO's own model cache (``compiled/`` in the conversion cache's folder), so a
    second start skips compilation.

    Args:
        model: The Keras model; None with ``ir_model``.
        batch_size: Images per request.
        source_sha256: SHA-256 of the saved ``model.keras`` bytes (keys the conversion
            cache), if any.
        precision: ``fp32``, ``bf16`` or ``int8`` (see :data:`PRECISION_HINTS`).
        ir_model: The IR (``model.xml``) to run instead of converting the Keras model;
            required for ``int8``.
    """

    def __init__(self, model, batch_size: int, source_sha256: Optional[str] = None,
                 precision: str = "fp32", ir_model: Optional[Path] = None):
        # pylint: disable=too-many-arguments
        if precision == "int8" and ir_model is None:
            raise ValueError("precision int8 runs the quantised IR: give ir_model")
        self._core = _openvino().Core()
        cache = openvino_cache_dir()
        if cache is not None:
            self._core.set_property({"CACHE_DIR": str(cache / "compiled")})
        self._batch_size = batch_size
        self._hint = PRECISION_HINTS[precision]
        self._compiled: Dict[str, Any] = {}
        # An IR is read now, while its (pinned) files are there, and compiled from the
        # model read: OpenVINO then keys its compiled cache by the model's content, not by
        # the path (a private copy has a new path every run: a miss, and a new blob).
        self._model = self._core.read_model(str(ir_model)) if ir_model is not None else \
            _openvino_model(self._core, lambda: model, source_sha256)
        blobs = set((cache / "compiled").glob("*.blob")) if cache is not None else set()
        self._compile("LATENCY")
        if cache is not None and set((cache / "compiled").glob("*.blob")) - blobs:
            prune_compiled(cache / "compiled")              # a new blob: keep the newest

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """Shape of one input image, (S, S, 3)."""
        shape = self._compile("LATENCY").input(0).get_partial_shape()
        return tuple(int(side.get_length()) for side in shape[1:])

    @property
    def dim(self) -> int:
        """Length of one embedding."""
        return int(self._compile("LATENCY").output(0).get_partial_shape()[-1].get_length())

    def streamed(self):
        """The model compiled for throughput, with its streams (the service's busy path)."""
        from lib.embedding.streams import StreamedForward  # pylint: disable=import-outside-toplevel
        if "STREAMED" not in self._compiled:
            self._compiled["STREAMED"] = StreamedForward(self._compile("THROUGHPUT"))
        return self._compiled["STREAMED"]

    def _compile(self, hint: str):
        if hint not in self._compiled:
            self._compiled[hint] = self._core.compile_model(
                self._model, "CPU",
                {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": self._hint})
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
