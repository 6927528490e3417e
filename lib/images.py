"""Image IO and the ETL transform: OpenCV BGR in, 224x224 RGB uint8 out.

The pipeline's ETL stage and the serving path both call :func:`etl_transform` (and
:func:`load_image` for files), so a query is resized exactly as the collection was.
"""
import dataclasses
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, List, Union

import cv2
import numpy as np
from PIL import Image

from lib.params import get_choice, get_int

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

# File extensions OpenCV's imdecode reads (JPEG, PNG, WebP, TIFF, BMP, PNM, ...).
IMAGE_EXTENSIONS = frozenset({
    ".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif",
    ".pbm", ".pgm", ".ppm", ".pxm", ".pnm", ".sr", ".ras", ".tiff", ".tif",
    ".exr", ".hdr", ".pic", ".gif",
})
RESIZE_MODES = ("stretch", "crop", "pad")
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR,
                  "cubic": cv2.INTER_CUBIC}

# The pixel-count check below replaces Pillow's own bomb guard (we only read headers).
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(ValueError):
    """A file is not a usable image (missing, empty, corrupt or too large)."""


@dataclasses.dataclass(frozen=True)
class EtlConfig:
    """How every image, collection or query, becomes a square RGB array.

    Attributes:
        image_size: Side of the square output (224 for ResNet50).
        resize_mode: ``stretch`` (the design default), ``crop`` (centre crop of the
            shorter side) or ``pad`` (pad to square with black).
        interpolation: OpenCV interpolation name: ``area``, ``linear`` or ``cubic``.
        max_pixels: Largest width x height accepted (decompression-bomb guard).
    """

    image_size: int = 224
    resize_mode: str = "stretch"
    interpolation: str = "area"
    max_pixels: int = 100_000_000

    @classmethod
    def from_params(cls, etl: Dict[str, Any]) -> "EtlConfig":
        """Builds the config from the ``etl`` section of ``params.yaml``."""
        return cls(image_size=get_int(etl, "image_size", 8),
                   resize_mode=get_choice(etl, "resize_mode", RESIZE_MODES),
                   interpolation=get_choice(etl, "interpolation", tuple(INTERPOLATIONS)),
                   max_pixels=get_int(etl, "max_pixels", 1))


def list_images(root: PathLike) -> List[Path]:
    """Finds image files under ``root`` recursively, in sorted order of relative path.

    Hidden files and folders (names starting with ``.``) are left out.

    Raises:
        ValueError: ``root`` is missing or not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a directory")
    found = [p for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _header_size(data: bytes) -> Union[tuple, None]:
    """Returns (width, height) from the image header without decoding, if Pillow can."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Exception:  # pylint: disable=broad-exception-caught
        # Pillow does not know every format OpenCV reads; OpenCV then decides.
        return None


def decode_image(data: bytes, max_pixels: int, source: str = "image") -> np.ndarray:
    """Decodes encoded image bytes into an 8-bit BGR array, as OpenCV reads files.

    Greyscale becomes three equal channels, alpha is dropped, 16-bit is scaled to
    8-bit, EXIF orientation is applied, and multi-frame files give their first frame.

    Args:
        data: The encoded file contents.
        max_pixels: Largest width x height accepted.
        source: Name used in error messages.

    Returns:
        ``uint8`` array of shape (H, W, 3), BGR.

    Raises:
        ImageReadError: Empty, undecodable, or larger than ``max_pixels``.
    """
    if not data:
        raise ImageReadError(f"{source}: empty file")
    size = _header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageReadError(f"{source}: {size[0]}x{size[1]} pixels exceeds the limit of "
                             f"{max_pixels} (etl.max_pixels)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageReadError(f"{source}: not an image OpenCV can decode")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageReadError(f"{source}: {image.shape[1]}x{image.shape[0]} pixels exceeds "
                             f"the limit of {max_pixels} (etl.max_pixels)")
    return image


def read_image_bgr(path: PathLike, max_pixels: int = EtlConfig.max_pixels) -> np.ndarray:
    """Reads an image file as OpenCV does: 8-bit BGR, shape (H, W, 3).

    Raises:
        ImageReadError: The path is missing, a directory, empty or not an image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror})") from err
    return decode_image(data, max_pixels, source=str(path))


def _to_square(rgb: np.ndarray, mode: str) -> np.ndarray:
    """Crops or pads (H, W, 3) to a square; ``stretch`` returns it unchanged."""
    height, width = rgb.shape[:2]
    if mode == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return rgb[top:top + side, left:left + side]
    if mode == "pad":
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        return cv2.copyMakeBorder(rgb, top, side - height - top, left, side - width - left,
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
    square = _to_square(rgb, config.resize_mode)                # (S', S', 3) or (H, W, 3)
    size = (config.image_size, config.image_size)
    resized = cv2.resize(square, size, interpolation=INTERPOLATIONS[config.interpolation])
    return np.ascontiguousarray(resized, dtype=np.uint8)       # (size, size, 3) RGB


def load_image(path: PathLike, config: EtlConfig) -> np.ndarray:
    """Reads a file and applies :func:`etl_transform`: the whole ETL of one image."""
    return etl_transform(read_image_bgr(path, config.max_pixels), config)
