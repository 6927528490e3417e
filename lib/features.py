"""Feature engineering: ResNet50's ``preprocess_input`` on RGB ``uint8`` batches.

The feature-engineering stage and the serving path both call :func:`preprocess`.
"""
import numpy as np


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
    # Imported here so that importing lib does not start TensorFlow.
    from keras.applications.resnet50 import preprocess_input  # pylint: disable=import-outside-toplevel

    if not isinstance(images, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected an (N, H, W, 3) batch, got shape {images.shape}")
    batch = images.astype(np.float32)                    # (N, H, W, 3) RGB float32
    return np.asarray(preprocess_input(batch), dtype=np.float32)  # (N, H, W, 3) BGR - mean
