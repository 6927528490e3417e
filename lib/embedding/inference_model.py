"""The inference model: the OpenVINO IR that embeds, and the precision it embeds in.

The modelling stage writes this artifact (``paths.inference_model``) beside the Keras
``vectorizer_model``, which stays the artifact of record. It is a folder holding
``precision.json`` (the precision, ``fp32``, ``bf16`` or ``int8``; the SHA-256 of the
``model.keras`` it was made from; the OpenVINO version; for ``int8`` also the
calibration sample and NNCF's version) and the OpenVINO IR (``model.xml`` +
``model.bin``): for ``fp32`` and ``bf16`` the Keras model converted as it is (bf16 is a
compile-time hint), for ``int8`` the model NNCF's post-training quantisation made,
calibrated on an evenly spaced, deterministic sample of the feature store
(``modelling.calibration_size`` rows). The collection is embedded with exactly that
IR, and serving, evaluation and the service load the same one with no conversion and
no TensorFlow: :func:`read_inference_model` refuses a collection whose precision is not
the one the configuration asks for, like any stale artifact. A build older than the IR
(a ``precision.json`` alone) is still served, through the Keras model.
"""
import json
import shutil
import logging
import time
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

import numpy as np

from lib.arrays import open_rows
from lib.artifacts import atomic_path, save_json
from lib.config import ModellingConfig, PRECISIONS
from lib.errors import ArtifactError, PathLike
from lib.incremental import file_sha256

logger = logging.getLogger(__name__)

RECORD = "precision.json"  # inside the inference_model folder
IR_FILE = "model.xml"      # the OpenVINO IR
IR_BIN = "model.bin"       # its weights
INFERENCE_FILES = (RECORD, IR_FILE, IR_BIN)


class InferenceModel(NamedTuple):
    """What :func:`read_inference_model` found: the IR to run, and its source's digest."""

    xml: Optional[Path]              # None: a build older than the IR (fp32 or bf16)
    keras_sha256: Optional[str]      # SHA-256 of the model.keras it was made from


def calibration_rows(total: int, size: int) -> np.ndarray:
    """The feature-store rows that calibrate ``int8``: ``size`` rows evenly spaced.

    Deterministic (the same store gives the same rows) and spread over the whole
    store, which the ETL sorts by file name, so every label folder is sampled.

    Args:
        total: Rows in the feature store (> 0).
        size: Rows wanted; all of them when the store has fewer.

    Returns:
        (K,) sorted, distinct ``int64`` row indices, ``K = min(size, total)``.
    """
    if total < 1 or size < 1:
        raise ValueError(f"need a non-empty store and sample, got {total} rows, size {size}")
    count = min(size, total)
    # Spacing (total - 1) / (count - 1) >= 1, so the rounded rows are distinct.
    return np.linspace(0, total - 1, count).round().astype(np.int64)   # (K,)


def quantize_int8(keras_model, features_path: PathLike, size: int,
                  xml_out: PathLike) -> Dict[str, Any]:
    """Quantises a Keras model to int8 with NNCF, calibrated on the feature store.

    The model is converted by OpenVINO, NNCF's default post-training quantisation
    (min/max statistics and fast bias correction, one image per calibration sample)
    runs on :func:`calibration_rows`, and the result is saved as OpenVINO IR.

    Args:
        keras_model: The vectorizer model, (N, S, S, 3) ``float32`` to (N, D).
        features_path: The feature store, (N, S, S, 3) ``float32``.
        size: ``modelling.calibration_size``.
        xml_out: Where the IR goes (``model.bin`` beside it).

    Returns:
        What the quantisation used: calibration rows, store rows, tool versions.
    """
    # pylint: disable=import-outside-toplevel
    import nncf
    import openvino

    features = open_rows(features_path, dtype=np.float32, ndim=4,
                         trailing_shape=tuple(keras_model.input_shape[1:]))   # (N, S, S, 3)
    if len(features) == 0:
        raise ArtifactError(f"feature store {features_path} is empty: nothing to calibrate "
                            "int8 on")
    rows = calibration_rows(len(features), size)                       # (K,)
    started = time.perf_counter()
    converted = openvino.convert_model(keras_model)
    dataset = nncf.Dataset(rows.tolist(), lambda row: features.read(row, row + 1))  # (1, S, S, 3)
    quantized = nncf.quantize(converted, dataset, subset_size=len(rows))
    openvino.save_model(quantized, str(xml_out), compress_to_fp16=False)
    logger.info("int8: quantised on %d of %d rows in %.1f s", len(rows), len(features),
                time.perf_counter() - started)
    return {"calibration_rows": int(len(rows)), "feature_rows": int(len(features)),
            "nncf": nncf.__version__, "openvino": openvino.get_version()}


def write_inference_model(directory: PathLike, model_file: PathLike, features_path: PathLike,
                          modelling: ModellingConfig) -> None:
    """Writes the inference-model folder for ``modelling.precision``, atomically.

    Args:
        directory: The ``paths.inference_model`` folder.
        model_file: The saved Keras ``model.keras`` (the artifact of record).
        features_path: The feature store (calibrates ``int8``).
        modelling: The modelling settings (precision, calibration size).
    """
    # pylint: disable=import-outside-toplevel
    from lib.embedding.resnet import load_keras_model
    from lib.embedding.runtime import save_converted
    model_file = Path(model_file)
    keras_sha256 = file_sha256(model_file)
    record: Dict[str, Any] = {"precision": modelling.precision, "keras_sha256": keras_sha256}
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        if modelling.precision == "int8":
            record["calibration_size"] = modelling.calibration_size
            record.update(quantize_int8(load_keras_model(model_file), features_path,
                                        modelling.calibration_size, tmp / IR_FILE))
        else:
            record["openvino"] = save_converted(lambda: load_keras_model(model_file),
                                                keras_sha256, tmp / IR_FILE)
        save_json(tmp / RECORD, record)


def keep_inference_model(directory: PathLike, previous: Dict[str, Path],
                         modelling: ModellingConfig) -> bool:
    """Writes the previous run's inference model as this run's, where it can serve.

    It can when it holds the IR and was made in ``modelling.precision`` other than
    ``int8`` (an int8 model is calibrated anew on the grown collection).

    Args:
        directory: The ``paths.inference_model`` folder.
        previous: The previous run's files of it, by name (from DVC's cache).
        modelling: The modelling settings.

    Returns:
        Whether it was kept (else write it with :func:`write_inference_model`).
    """
    if modelling.precision == "int8" or set(previous) != set(INFERENCE_FILES):
        return False
    try:
        record = _record(previous[RECORD])
    except ArtifactError:
        return False
    if record["precision"] != modelling.precision or "keras_sha256" not in record:
        return False
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        for name, cached in previous.items():
            shutil.copyfile(cached, tmp / name)
    logger.info("keeping the previous inference model (%s IR)", modelling.precision)
    return True


def read_inference_model(directory: Optional[PathLike], precision: str) -> InferenceModel:
    """Checks that the collection was embedded in ``precision``; the IR to load.

    Args:
        directory: The ``paths.inference_model`` folder, or None where the build has
            none (a revision built before precisions existed: ``fp32``).
        precision: ``modelling.precision`` of the configuration that answers.

    Returns:
        The IR's ``model.xml`` and the digest of the ``model.keras`` it was made from;
        no IR for a build older than it (``fp32`` or ``bf16`` only).

    Raises:
        ArtifactError: The folder is missing or unreadable, or records another
            precision than ``precision`` (queries would be embedded unlike the
            collection).
    """
    ModellingConfig(precision=precision)           # validated where it is declared
    if directory is None or not Path(directory).exists():
        if precision == "fp32":                    # built before this artifact: fp32
            return InferenceModel(None, None)
        raise ArtifactError(f"the inference model {directory} is missing, so nothing shows the "
                            f"collection was embedded in {precision}: run `dvc repro` (or "
                            "`dvc pull`)")
    directory = Path(directory)
    record = _record(directory / RECORD)
    recorded = record["precision"]
    if recorded != precision:
        raise ArtifactError(f"the collection was embedded in {recorded} but modelling.precision "
                            f"is {precision}; queries must be embedded alike: run `dvc repro` "
                            f"(or set modelling.precision back to {recorded})")
    xml = directory / IR_FILE
    if "keras_sha256" not in record and precision != "int8":    # built before the IR
        return InferenceModel(None, None)
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise ArtifactError(f"the {precision} model {xml} (and its .bin) is missing: run "
                            "`dvc repro` (or `dvc pull`)")
    return InferenceModel(xml, record.get("keras_sha256"))


def _record(path: Path) -> Dict[str, Any]:
    """What a ``precision.json`` records (its precision checked)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ArtifactError(f"the precision record {path} cannot be read ({err}): run "
                            "`dvc repro` (or `dvc pull`)") from None
    recorded = record.get("precision") if isinstance(record, dict) else None
    if not isinstance(recorded, str) or recorded not in PRECISIONS:
        raise ArtifactError(f"the precision record {path} names no precision: run `dvc repro`")
    return record
