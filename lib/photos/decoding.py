"""Decoding image bytes as OpenCV reads files, with the checks done before decoding.

The pixel count is read from the header (Pillow, or a small parser for the formats
Pillow does not read) and checked before anything is decoded; large JPEGs may be
decoded at reduced scale; what C decoders print is captured and reported with the
file's name. :mod:`lib.photos.images` reads files and applies the ETL through these functions.
"""
import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from lib.errors import ImageReadError

logger = logging.getLogger(__name__)

# The pixel-count check below replaces Pillow's own bomb guard (we only read headers).
Image.MAX_IMAGE_PIXELS = None
_EXIF_ORIENTATION = 0x0112
# OpenCV applies EXIF orientation for JPEG, PNG, WebP and TIFF; lib applies AVIF's.
_ORIENTATION_NOT_APPLIED_BY_OPENCV = frozenset({"AVIF"})
# Pillow reads only the header, and only of formats this OpenCV build decodes.
_PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "TIFF", "BMP", "DIB", "GIF", "JPEG2000",
                   "PPM", "SUN")
# Headers Pillow cannot read but OpenCV decodes: Radiance HDR, PAM, PFM.
_RADIANCE_SIZE = re.compile(rb"[-+]([XY])\s+(\d+)\s+[-+][XY]\s+(\d+)")
_PAM_FIELD = re.compile(rb"^(WIDTH|HEIGHT)\s+(\d+)", re.MULTILINE)
_PFM_SIZE = re.compile(rb"P[Ff]\s+(\d+)\s+(\d+)")
# "[ WARN:0@0.24] global grfmt_tiff.cpp:811 readData " in front of OpenCV's log lines.
_OPENCV_LOG_PREFIX = re.compile(r"^\[\s*\w+:[\d@.:]+\]\s*(?:global\s+)?(?:\S+:\d+\s+\S+\s+)?")
_NATIVE_STDERR_LOCK = threading.Lock()


class _PillowHeader(NamedTuple):
    """What Pillow reads from a header without decoding."""

    size: Tuple[int, int]
    format: str
    orientation: int


def _pillow_header(data: bytes) -> Optional[_PillowHeader]:
    """Size, format and (for AVIF) orientation, if Pillow knows the format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as img:
                return _PillowHeader(img.size, str(img.format), _orientation(img))
    except Exception:  # pylint: disable=broad-exception-caught
        # Not a format Pillow reads (or a broken one): the other checks decide.
        return None


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation lib must apply itself: 1 (none) unless OpenCV ignores it."""
    if img.format not in _ORIENTATION_NOT_APPLIED_BY_OPENCV:
        return 1
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # pylint: disable=broad-exception-caught
        return 1                                  # unreadable EXIF: as stored
    return value if isinstance(value, int) else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turns stored pixels upright as an EXIF orientation (1 to 8) says viewers do."""
    transforms = {
        2: lambda im: cv2.flip(im, 1),
        3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
        4: lambda im: cv2.flip(im, 0),
        5: cv2.transpose,
        6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
        7: lambda im: cv2.flip(cv2.transpose(im), -1),
        8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }
    return transforms[orientation](image) if orientation in transforms else image


def _other_header_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) of the formats OpenCV decodes and Pillow does not read."""
    head = data[:65536]
    if head.startswith(b"#?"):                                    # Radiance HDR
        _, blank, rest = head.partition(b"\n\n")
        found = _RADIANCE_SIZE.match(rest.lstrip()) if blank else None
        if found:
            first, second = int(found.group(2)), int(found.group(3))
            return (second, first) if found.group(1) == b"Y" else (first, second)
    elif head.startswith(b"P7"):                                  # PAM
        fields = {key: int(value) for key, value in _PAM_FIELD.findall(head)}
        if len(fields) == 2:
            return fields[b"WIDTH"], fields[b"HEIGHT"]
    elif head[:2] in (b"PF", b"Pf"):                              # PFM
        found = _PFM_SIZE.match(head)
        if found:
            return int(found.group(1)), int(found.group(2))
    return None


def header_sizes(data: bytes) -> List[Tuple[int, int]]:
    """Every (width, height) the file's header declares, read without decoding."""
    pillow = _pillow_header(data)
    return [size for size in (pillow.size if pillow else None, _other_header_size(data))
            if size]


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[List[str]]:
    """Captures what C libraries (libjpeg, OpenCV's log) print on file descriptor 2.

    Their warnings ("Corrupt JPEG data: ...") would otherwise reach the terminal as
    bare noise; the caller reports them with the file name instead. File descriptors
    are process-wide, so captures are serialised, and the root logger's handlers are
    held meanwhile so that other threads' log lines are not captured by mistake.
    Call it with ``_NATIVE_STDERR_LOCK`` held.

    Yields:
        A list that holds the captured lines once the block has finished.
    """
    lines: List[str] = []
    handlers = list(logging.getLogger().handlers)
    with contextlib.ExitStack() as stack:
        for handler in handlers:
            handler.acquire()
            stack.callback(handler.release)
        sink = stack.enter_context(tempfile.TemporaryFile())
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):                # no usable stderr: nothing to hide
            yield lines
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(4096).decode("utf-8", "replace")
            lines.extend(_OPENCV_LOG_PREFIX.sub("", line).strip()
                         for line in text.splitlines() if line.strip())


def _opencv_message(err: Exception) -> str:
    """The informative part of an OpenCV exception, on one line."""
    text = " ".join(str(err).split())
    return text.split(" error: ", 1)[-1]


REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                 (2, cv2.IMREAD_REDUCED_COLOR_2))


def imread_flag(data: bytes, size: Union[tuple, None], min_side: int) -> int:
    """The OpenCV read flag: a reduced JPEG decode when it keeps ``min_side`` pixels.

    libjpeg decodes at 1/2, 1/4 or 1/8 scale much faster than in full. The largest
    factor whose result keeps the shorter side >= ``min_side`` is chosen (from the
    header ``size``, width x height); other formats, small images and ``min_side``
    0 read in full. Like ``IMREAD_COLOR``, the reduced flags apply EXIF orientation.
    """
    if min_side < 1 or size is None or data[:3] != b"\xff\xd8\xff":    # not a JPEG
        return cv2.IMREAD_COLOR
    for factor, flag in REDUCED_FLAGS:
        if min(size) // factor >= min_side:
            return flag
    return cv2.IMREAD_COLOR


def decode_image(data: bytes, max_pixels: int, source: str = "image",
                 min_side: int = 0) -> np.ndarray:
    """Decodes encoded image bytes into an 8-bit BGR array, as OpenCV reads files.

    Greyscale becomes three equal channels, alpha is dropped, 16-bit is scaled to
    8-bit, EXIF orientation is applied, and multi-frame files give their first frame.
    The pixel count is checked from the header before anything is decoded; what the
    decoder prints (libjpeg's "Corrupt JPEG data", OpenCV's warnings) is logged as a
    warning naming ``source`` instead of reaching stderr.

    Args:
        data: The encoded file contents.
        max_pixels: Largest width x height accepted.
        source: Name used in error messages.
        min_side: If > 0, large JPEGs may be decoded at reduced scale keeping at
            least this shorter side (see :func:`imread_flag`).

    Returns:
        ``uint8`` array of shape (H, W, 3), BGR.

    Raises:
        ImageReadError: Empty, undecodable, or larger than ``max_pixels``.
    """
    if not data:
        raise ImageReadError(f"{source}: empty file")
    pillow = _pillow_header(data)
    sizes = [size for size in (pillow.size if pillow else None, _other_header_size(data))
             if size]
    for width, height in sizes:
        if width * height > max_pixels:
            raise ImageReadError(f"{source}: {width}x{height} pixels exceeds the limit of "
                                 f"{max_pixels} (etl.max_pixels)")
    with _NATIVE_STDERR_LOCK:
        with _native_stderr_captured() as messages:
            try:
                image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8),
                                     imread_flag(data, pillow.size if pillow else None,
                                                 min_side))
            except cv2.error as err:
                image, failure = None, _opencv_message(err)
            else:
                failure = ""
        detail = "; ".join(messages + ([failure] if failure else []))
        if image is not None and image.size and detail:
            # Logged before another thread's capture can start, so it reaches stderr.
            logger.warning("%s: decoded with warnings: %s", source, detail)
    if "CV_IO_MAX_IMAGE" in failure:
        raise ImageReadError(f"{source}: larger than OpenCV's image size limit "
                             "(OPENCV_IO_MAX_IMAGE_PIXELS)")
    if image is None or image.size == 0:
        reason = f" ({detail})" if detail else ""
        if sizes:
            raise ImageReadError(f"{source}: damaged or truncated image, OpenCV cannot "
                                 f"decode it{reason}")
        raise ImageReadError(f"{source}: not an image OpenCV can decode{reason}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageReadError(f"{source}: {image.shape[1]}x{image.shape[0]} pixels exceeds "
                             f"the limit of {max_pixels} (etl.max_pixels)")
    if pillow is not None:
        image = apply_orientation(image, pillow.orientation)       # AVIF only
    return np.ascontiguousarray(image)
