"""Feature engineering: ResNet50's ``preprocess_input`` on RGB ``uint8`` batches.

The feature-engineering stage (:func:`run_feature_engineering`) and the serving path
both call :func:`preprocess`.
"""
import functools
from typing import Optional

import numpy as np

from lib.artifacts import NpyRowReader
from lib.cli import quiet_native_stderr
from lib.errors import PathLike
from lib.incremental import apply_rows, RowPlan


@functools.lru_cache(maxsize=None)
def _preprocess_input():
    """Keras' ResNet50 ``preprocess_input``, imported on first use (not with lib)."""
    with quiet_native_stderr():
        from keras.applications.resnet50 import preprocess_input  # pylint: disable=import-outside-toplevel
    return preprocess_input


def preprocess(images: np.ndarray) -> np.ndarray:
    """Applies Keras' ResNet50 ``preprocess_input`` (RGB to BGR, ImageNet mean removed).

    Args:
        images: (N, H, W, 3) ``uint8`` RGB batch, as the ETL stage writes it.

    Returns:
        (N, H, W, 3) ``float32`` model input.

    Raises:
        TypeError: Not a ``uint8`` array.
        ValueError: Not an (N, H, W, 3) batch.
    """
    preprocess_input = _preprocess_input()
    if not isinstance(images, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected an (N, H, W, 3) batch, got shape {images.shape}")
    batch = images.astype(np.float32)                    # (N, H, W, 3) RGB float32
    return np.asarray(preprocess_input(batch), dtype=np.float32)  # (N, H, W, 3) BGR - mean


def run_feature_engineering(images_in: PathLike, features_out: PathLike,
                            chunk_size: int = 128, plan: Optional[RowPlan] = None) -> int:
    """Applies ``preprocess`` to the ETL output chunk by chunk.

    Args:
        images_in: The ETL's (N, S, S, 3) ``uint8`` array.
        features_out: The (N, S, S, 3) ``float32`` output.
        chunk_size: Rows per step.
        plan: The rows to compute and where the others are copied from
            (:func:`lib.incremental.rows.plan_rows`); None computes every row.

    Returns:
        The number of rows written.
    """
    images = NpyRowReader(images_in, dtype=np.uint8, ndim=4)          # (N, S, S, 3)
    return apply_rows(images, features_out, images.shape[1:], np.float32, preprocess,
                      plan or RowPlan.full(len(images)), chunk_size, "features")
