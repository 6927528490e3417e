"""The inference model: the precision that embedded the collection, and its int8 model.

The modelling stage writes this artifact (``paths.inference_model``) beside the Keras
``vectorizer_model``, which stays the artifact of record. It is a folder holding
``precision.json`` (the precision, ``fp32``, ``bf16`` or ``int8``; for ``int8`` also
the calibration sample and tool versions) and, for ``int8``, the OpenVINO IR
(``model.xml`` + ``model.bin``) that NNCF's post-training quantisation made from the
Keras model, calibrated on an evenly spaced, deterministic sample of the feature store
(``modelling.calibration_size`` rows). The collection is embedded with exactly that
IR, and serving, evaluation and the service load the same one:
:func:`read_inference_model` refuses a collection whose precision is not the one the
configuration asks for, like any stale artifact.
"""
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from lib.artifacts import atomic_path, NpyRowReader, save_json
from lib.config import ModellingConfig, PRECISIONS
from lib.errors import ArtifactError, PathLike

logger = logging.getLogger(__name__)

RECORD = "precision.json"  # inside the inference_model folder
INT8_MODEL = "model.xml"   # the quantised OpenVINO IR (its weights in model.bin)


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

    features = NpyRowReader(features_path, dtype=np.float32, ndim=4,
                            trailing_shape=tuple(keras_model.input_shape[1:]))  # (N, S, S, 3)
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
    record: Dict[str, Any] = {"precision": modelling.precision}
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        if modelling.precision == "int8":
            from lib.embedding.resnet import load_keras_model  # pylint: disable=import-outside-toplevel
            record["calibration_size"] = modelling.calibration_size
            record.update(quantize_int8(load_keras_model(Path(model_file)), features_path,
                                        modelling.calibration_size, tmp / INT8_MODEL))
        save_json(tmp / RECORD, record)


def read_inference_model(directory: Optional[PathLike], precision: str) -> Optional[Path]:
    """Checks that the collection was embedded in ``precision``; the int8 IR to load.

    Args:
        directory: The ``paths.inference_model`` folder, or None where the build has
            none (a revision built before precisions existed: ``fp32``).
        precision: ``modelling.precision`` of the configuration that answers.

    Returns:
        The int8 ``model.xml`` for ``int8``, else None.

    Raises:
        ArtifactError: The folder is missing or unreadable, or records another
            precision than ``precision`` (queries would be embedded unlike the
            collection).
    """
    ModellingConfig(precision=precision)           # validated where it is declared
    if directory is None or not Path(directory).exists():
        if precision == "fp32":                    # built before this artifact: fp32
            return None
        raise ArtifactError(f"the inference model {directory} is missing, so nothing shows the "
                            f"collection was embedded in {precision}: run `dvc repro` (or "
                            "`dvc pull`)")
    directory = Path(directory)
    recorded = _recorded_precision(directory / RECORD)
    if recorded != precision:
        raise ArtifactError(f"the collection was embedded in {recorded} but modelling.precision "
                            f"is {precision}; queries must be embedded alike: run `dvc repro` "
                            f"(or set modelling.precision back to {recorded})")
    if precision != "int8":
        return None
    xml = directory / INT8_MODEL
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise ArtifactError(f"the int8 model {xml} (and its .bin) is missing: run `dvc repro` "
                            "(or `dvc pull`)")
    return xml


def _recorded_precision(path: Path) -> str:
    """The precision a ``precision.json`` records."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ArtifactError(f"the precision record {path} cannot be read ({err}): run "
                            "`dvc repro` (or `dvc pull`)") from None
    recorded = record.get("precision") if isinstance(record, dict) else None
    if not isinstance(recorded, str) or recorded not in PRECISIONS:
        raise ArtifactError(f"the precision record {path} names no precision: run `dvc repro`")
    return recorded
