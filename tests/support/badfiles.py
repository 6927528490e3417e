"""Builders of unusual and hostile image files, for the robustness tests and the fuzzer."""
import io
import struct
import zlib
from pathlib import Path
from typing import Callable, Dict

import cv2
import numpy as np
from PIL import Image

from tests.support.helpers import DATASET, require_shared

EXIF_ORIENTATION = 0x0112


def photo_bgr(rel_path: str) -> np.ndarray:
    """A dataset photo as OpenCV reads it: (H, W, 3) BGR uint8."""
    require_shared(DATASET)
    image = cv2.imread(str(DATASET / rel_path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(DATASET / rel_path)
    return image


def encode(ext: str, image: np.ndarray) -> bytes:
    """OpenCV's encoding of an array in the format of ``ext``."""
    ok, data = cv2.imencode(ext, image)
    if not ok:
        raise ValueError(f"cannot encode {ext}")
    return data.tobytes()


def pillow_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    """Pillow's encoding of an image."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rgb_pil(bgr: np.ndarray) -> Image.Image:
    """A Pillow RGB image of a BGR array."""
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


def png_with_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header is patched to declare ``width`` x ``height``.

    The pixel data is that of a 1x1 image, so it costs nothing to create; a decoder
    that trusted the header would allocate width x height pixels.
    """
    data = bytearray(encode(".png", np.zeros((1, 1, 3), np.uint8)))
    ihdr = 8 + 8                                      # signature, then length + "IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def hdr_with_size(width: int, height: int) -> bytes:
    """A Radiance HDR header declaring ``width`` x ``height`` (Pillow cannot read it)."""
    return (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n"
            + f"-Y {height} +X {width}\n".encode() + b"\x02\x02\x00\x10" * 8)


def exif_rotated_jpeg(bgr: np.ndarray) -> bytes:
    """A JPEG stored as a camera held sideways stores it, with the EXIF tag undoing that.

    The pixels are the upright image rotated 90 degrees counter-clockwise; orientation
    6 tells viewers to rotate them 90 degrees clockwise, giving the upright image.
    """
    stored = rgb_pil(bgr).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return pillow_bytes(stored, "JPEG", quality=95, exif=exif.tobytes())


def bad_files(photo: np.ndarray) -> Dict[str, Callable[[Path], Path]]:
    """Writers of files that are not usable images, by case name; each returns its path."""
    jpeg = encode(".jpg", photo)

    def writer(name: str, data: bytes) -> Callable[[Path], Path]:
        def write(folder: Path) -> Path:
            path = folder / name
            path.write_bytes(data)
            return path
        return write

    return {
        "empty file": writer("empty.jpg", b""),
        "text named .jpg": writer("notes.jpg", b"shopping list: milk, eggs\n"),
        "truncated JPEG": writer("truncated.jpg", jpeg[:len(jpeg) // 2]),
        "JPEG header, random body": writer(
            "noise.jpg", jpeg[:200] + np.random.default_rng(0).bytes(5000)),
        "pixel bomb PNG": writer("bomb.png", png_with_size(30000, 30000)),
        "pixel bomb HDR": writer("bomb.hdr", hdr_with_size(20000, 20000)),
    }
