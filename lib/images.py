"""Image IO and the ETL transform: OpenCV BGR in, 224x224 RGB uint8 out.

The pipeline's ETL stage and the serving path both call :func:`etl_transform` (and
:func:`load_image` for files), so a query is resized exactly as the collection was.
Decoding the bytes (header checks, reduced JPEG decode) is :mod:`lib.decoding`'s.
"""
import logging
from pathlib import Path
from typing import List

import cv2
import numpy as np

from lib import DEFAULT_MAX_PIXELS
from lib.config import EtlConfig
from lib.decoding import ImageReadError, decode_image
from lib.errors import InputError, PathLike

logger = logging.getLogger(__name__)

# File extensions OpenCV's imdecode reads (JPEG, PNG, WebP, TIFF, BMP, PNM, ...).
IMAGE_EXTENSIONS = frozenset({
    ".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif",
    ".pbm", ".pgm", ".ppm", ".pxm", ".pnm", ".sr", ".ras", ".tiff", ".tif",
    ".exr", ".hdr", ".pic", ".gif",
})
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR,
                  "cubic": cv2.INTER_CUBIC}


def list_images(root: PathLike) -> List[Path]:
    """Finds image files under ``root`` recursively, in sorted order of relative path.

    Hidden files and folders (names starting with ``.``) are left out. Anything else
    with an image extension is listed, even a broken link or a special file, so the
    ETL reports it instead of silently ignoring it.

    Raises:
        InputError: ``root`` is missing or not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a directory")
    found = [p for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_image_bgr(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
                   min_side: int = 0) -> np.ndarray:
    """Reads an image file as OpenCV does: 8-bit BGR, shape (H, W, 3).

    ``min_side`` > 0 allows a reduced JPEG decode (see :func:`imread_flag`).

    Raises:
        ImageReadError: The path is missing, a directory, empty or not an image.
    """
    return decode_image(read_file(path), max_pixels, source=str(path), min_side=min_side)


def read_file(path: PathLike) -> bytes:
    """The bytes of an image file, as one-line errors for the usual mistakes.

    Raises:
        ImageReadError: The path is missing, a broken link, not a regular file, or
            unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: " + ("broken link" if path.is_symlink() else "no such file"))
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror})") from err


def _to_square(rgb: np.ndarray, config: EtlConfig) -> np.ndarray:
    """Crops (H, W, 3) to a square, or for ``pad`` fits it into the output square.

    ``pad`` scales the image to fit first, so that a 100000x1 image does not become a
    100000x100000 canvas; ``stretch`` returns the image unchanged.
    """
    height, width = rgb.shape[:2]
    if config.resize_mode == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return rgb[top:top + side, left:left + side]
    if config.resize_mode == "pad":
        side = config.image_size
        scale = side / max(height, width)
        fit_w, fit_h = max(1, round(width * scale)), max(1, round(height * scale))
        fitted = cv2.resize(rgb, (fit_w, fit_h),
                            interpolation=INTERPOLATIONS[config.interpolation])
        top, left = (side - fit_h) // 2, (side - fit_w) // 2
        return cv2.copyMakeBorder(fitted, top, side - fit_h - top, left, side - fit_w - left,
                                  cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return rgb


def etl_transform(bgr: np.ndarray, config: EtlConfig) -> np.ndarray:
    """The ETL transform: an OpenCV BGR image to a square RGB ``uint8`` array.

    Args:
        bgr: (H, W, 3) BGR as OpenCV gives it; (H, W) greyscale and (H, W, 4) BGRA
            are accepted too.
        config: Size and resize mode.

    Returns:
        (size, size, 3) ``uint8`` RGB.

    Raises:
        TypeError: Not a ``uint8`` array.
        ValueError: Not an image-shaped array.
    """
    if not isinstance(bgr, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(bgr).__name__}")
    if bgr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {bgr.dtype}")
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    elif bgr.ndim == 3 and bgr.shape[2] == 4:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_BGRA2BGR)
    if bgr.ndim != 3 or bgr.shape[2] != 3 or min(bgr.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W, 3) BGR image, got shape {bgr.shape}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)                  # (H, W, 3) RGB
    square = _to_square(rgb, config)                           # (S', S', 3) or (H, W, 3)
    size = (config.image_size, config.image_size)
    resized = cv2.resize(square, size, interpolation=INTERPOLATIONS[config.interpolation])
    return np.ascontiguousarray(resized, dtype=np.uint8)       # (size, size, 3) RGB


def read_image(path: PathLike, config: EtlConfig) -> np.ndarray:
    """Reads a file as the ETL reads every image (its pixel limit and decode settings).

    The one read step of the pipeline, serving and evaluation alike: (H, W, 3) BGR.
    """
    return read_image_bgr(path, config.max_pixels, config.decode_min_side)


def decode_with(data: bytes, config: EtlConfig, source: str = "image") -> np.ndarray:
    """Decodes a file's bytes as :func:`read_image` reads the file: (H, W, 3) BGR."""
    return decode_image(data, config.max_pixels, source=source,
                        min_side=config.decode_min_side)


def load_image(path: PathLike, config: EtlConfig) -> np.ndarray:
    """Reads a file and applies :func:`etl_transform`: the whole ETL of one image."""
    return etl_transform(read_image(path, config), config)
