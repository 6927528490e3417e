"""Image IO and the ETL transform: OpenCV BGR in, 224x224 RGB uint8 out.

The pipeline's ETL stage and the serving path both call :func:`etl_transform` (and
:func:`load_image` for files), so a query is resized exactly as the collection was.
Decoding the bytes (header checks, reduced JPEG decode) is :mod:`lib.photos.decoding`'s.
"""
import logging
import os
import stat
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from lib import DEFAULT_MAX_PIXELS
from lib.config import EtlConfig
from lib.errors import ImageReadError, PathLike
from lib.photos.decoding import decode_image
from lib.photos.files import scan_collection, Skipped

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

    Only regular files are listed (the policy of :mod:`lib.photos.files`): hidden entries,
    symbolic links and special files are left out; :func:`scan_images` also says why.

    Raises:
        InputError: ``root`` is missing or not a directory.
    """
    return scan_images(root)[0]


def scan_images(root: PathLike) -> Tuple[List[Path], List[Skipped]]:
    """The image files under ``root`` and the entries skipped by policy, with reasons.

    See :func:`lib.photos.files.scan_collection`: symbolic links are never followed, FIFOs,
    sockets and devices are never opened; each one is returned with a one-line reason.
    """
    return scan_collection(root, IMAGE_EXTENSIONS)


def max_file_bytes(max_pixels: int) -> int:
    """The largest image file read: ``max_pixels`` of uncompressed 16-bit RGBA, plus 16 MiB.

    A larger file cannot hold an image within the pixel limit except as padding, so it
    is refused from its size, before a byte is read into memory.
    """
    return max_pixels * 8 + (16 << 20)


def read_image_bgr(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
                   min_side: int = 0) -> np.ndarray:
    """Reads an image file as OpenCV does: 8-bit BGR, shape (H, W, 3).

    ``min_side`` > 0 allows a reduced JPEG decode (see :func:`imread_flag`).

    Raises:
        ImageReadError: The path is missing, a directory, empty or not an image.
    """
    return decode_image(read_file(path, max_file_bytes(max_pixels)), max_pixels,
                        source=str(path), min_side=min_side)


def read_file(path: PathLike, max_bytes: Optional[int] = None) -> bytes:
    """The bytes of an image file, as one-line errors for every way reading can fail.

    Every ``OSError`` (and the ``ValueError`` of a path holding a NUL character) is
    an :class:`ImageReadError` naming the path (raw: :func:`lib.errors.one_line` shows it
    escaped) and the reason: missing, a broken link or link loop, a name too long, no permission, a
    folder, a FIFO, socket or device (found by ``stat``, never opened; the open itself
    does not block and its type is checked again on the descriptor), too large, or a
    read error.

    Args:
        path: The file.
        max_bytes: Refuse a larger file from its size, before reading it (None: any).

    Raises:
        ImageReadError: It cannot be read, or is larger than ``max_bytes``.
    """
    path = Path(path)
    shown = str(path)
    try:
        info = os.stat(path)                           # follows links, opens nothing
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(f"{shown}: not a file ({_file_kind(info.st_mode)})")
        # Non-blocking: a FIFO swapped in after the check cannot block the open.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except ImageReadError:
        raise
    except FileNotFoundError as err:
        reason = "broken link" if path.is_symlink() else "no such file"
        raise ImageReadError(f"{shown}: {reason}") from err
    except (OSError, ValueError) as err:
        raise ImageReadError(f"{shown}: cannot read ({_reason(err)})") from err
    with open(descriptor, "rb", closefd=True) as handle:
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise ImageReadError(f"{shown}: not a file ({_file_kind(info.st_mode)})")
            if max_bytes is not None and info.st_size > max_bytes:
                raise ImageReadError(f"{shown}: file of {info.st_size} bytes exceeds the "
                                     f"limit of {max_bytes} bytes for images of up to "
                                     "etl.max_pixels pixels")
            os.set_blocking(descriptor, True)
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        except OSError as err:
            raise ImageReadError(f"{shown}: cannot read ({_reason(err)})") from err
    if max_bytes is not None and len(data) > max_bytes:           # it grew while read
        raise ImageReadError(f"{shown}: file exceeds the limit of {max_bytes} bytes for "
                             "images of up to etl.max_pixels pixels")
    return data


def _reason(err: BaseException) -> str:
    """An OS error's reason without the path it repeats (``Permission denied``)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split()) or type(err).__name__


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


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
