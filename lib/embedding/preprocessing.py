"""Feature engineering: ResNet50's ``preprocess_input`` on RGB ``uint8`` batches.

The feature-engineering stage (:func:`run_feature_engineering`) and the serving path
both call :func:`preprocess`. It is Keras' ``caffe`` mode written in NumPy, bit for bit
(float32 RGB to BGR, then the float32 ImageNet channel means subtracted, as Keras does
in place), so neither path imports TensorFlow for it.
"""
from typing import Optional

import numpy as np

from lib.arrays import Layout, open_rows
from lib.errors import PathLike
from lib.incremental import apply_rows, RowPlan

# ImageNet channel means in BGR order, as keras.applications.imagenet_utils subtracts
# them (a Python float against a float32 array: a float32 subtraction).
MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def preprocess(images: np.ndarray) -> np.ndarray:
    """ResNet50's ``preprocess_input`` (RGB to BGR, ImageNet mean removed), in NumPy.

    Args:
        images: (N, H, W, 3) ``uint8`` RGB batch, as the ETL stage writes it.

    Returns:
        (N, H, W, 3) ``float32`` model input.

    Raises:
        TypeError: Not a ``uint8`` array.
        ValueError: Not an (N, H, W, 3) batch.
    """
    if not isinstance(images, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected an (N, H, W, 3) batch, got shape {images.shape}")
    batch = images[..., ::-1].astype(np.float32)         # (N, H, W, 3) BGR float32
    batch -= MEAN_BGR                                     # (N, H, W, 3) BGR - mean
    return batch


def run_feature_engineering(images_in: PathLike, features_out: PathLike,
                            chunk_size: int = 128, plan: Optional[RowPlan] = None,
                            storage: Optional[Layout] = None) -> int:
    """Applies ``preprocess`` to the ETL output chunk by chunk.

    Args:
        images_in: The ETL's (N, S, S, 3) ``uint8`` array.
        features_out: The (N, S, S, 3) ``float32`` output.
        chunk_size: Rows per step.
        plan: The rows to compute and where the others are copied from
            (:func:`lib.incremental.rows.plan_rows`); None computes every row.
        storage: How the output is stored (:class:`lib.arrays.Layout`); None: one
            ``.npy`` file.

    Returns:
        The number of rows written.
    """
    images = open_rows(images_in, dtype=np.uint8, ndim=4)             # (N, S, S, 3)
    return apply_rows(images, features_out, images.shape[1:], np.float32, preprocess,
                      plan or RowPlan.full(len(images)), chunk_size, "features", storage)
