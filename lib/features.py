"""Feature engineering: ResNet50's ``preprocess_input`` on RGB ``uint8`` batches.

The feature-engineering stage (:func:`run_feature_engineering`) and the serving path
both call :func:`preprocess`.
"""
import functools

import numpy as np

from lib.artifacts import NpyRowReader, open_npy_writer
from lib.cli import quiet_native_stderr
from lib.errors import PathLike


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
                            chunk_size: int = 128) -> int:
    """Applies ``preprocess`` to the ETL output chunk by chunk.

    Returns:
        The number of rows written.
    """
    images = NpyRowReader(images_in, dtype=np.uint8, ndim=4)          # (N, S, S, 3)
    with open_npy_writer(features_out, images.shape, np.float32) as out:
        for start, chunk in images.chunks(chunk_size):
            out[start:start + chunk.shape[0]] = preprocess(chunk)     # (C, S, S, 3)
    return len(images)
