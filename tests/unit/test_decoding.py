"""Decoding edge cases: header checks, decoder chatter, EXIF orientation, extreme shapes."""
import io
import logging
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from lib.config import EtlConfig
from lib.errors import ImageReadError
from lib.photos.decoding import apply_orientation, decode_image, header_sizes
from lib.photos.images import etl_transform, read_image_bgr
from tests.support.badfiles import EXIF_ORIENTATION, encode, hdr_with_size, pillow_bytes
from tests.support.helpers import REPO_ROOT

RNG = np.random.default_rng(0)
PHOTO = cv2.GaussianBlur(RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8), (0, 0), 2)


def pam_with_size(width: int, height: int) -> bytes:
    """A PAM header (a format Pillow cannot read) declaring ``width`` x ``height``."""
    return f"P7\nWIDTH {width}\nHEIGHT {height}\nDEPTH 3\nMAXVAL 255\nENDHDR\n".encode()


def test_header_sizes_of_every_format():
    float_photo = PHOTO.astype(np.float32) / 255
    for ext, image in [(".jpg", PHOTO), (".png", PHOTO), (".webp", PHOTO), (".tiff", PHOTO),
                       (".bmp", PHOTO), (".ppm", PHOTO), (".ras", PHOTO), (".jp2", PHOTO),
                       (".pam", PHOTO), (".hdr", float_photo), (".pfm", float_photo)]:
        assert (80, 60) in header_sizes(encode(ext, image)), ext
    assert header_sizes(hdr_with_size(7, 5)) == [(7, 5)]
    assert header_sizes(pam_with_size(9, 4)) == [(9, 4)]
    assert header_sizes(b"PF\n12 3\n-1\n") == [(12, 3)]
    assert not header_sizes(b"just some text")


@pytest.mark.parametrize("data", [hdr_with_size(20000, 20000), pam_with_size(20000, 20000)],
                         ids=["hdr", "pam"])
def test_formats_pillow_cannot_read_are_size_checked_before_decoding(data):
    with pytest.raises(ImageReadError, match="20000x20000 pixels exceeds the limit of 1000"):
        decode_image(data, 1000, "bomb")


def test_opencv_guard_backs_up_the_header_check():
    """With lib imported first, OpenCV's own limit is lib's default, not 2**30."""
    code = ("import lib.photos.decoding as li\n"
            "try:\n"
            f"    li.decode_image({pam_with_size(12000, 12000)!r} + bytes(64), 10**9, 'x')\n"
            "except li.ImageReadError as err:\n"
            "    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == "x: larger than OpenCV's image size limit " \
                                  "(OPENCV_IO_MAX_IMAGE_PIXELS)"
    assert proc.stderr == ""


def test_decoder_chatter_is_logged_with_the_file_name(capfd, caplog):
    data = bytearray(encode(".jpg", PHOTO))
    data[-2:-2] = b"\x00" * 40             # junk before the end marker: libjpeg complains
    with caplog.at_level(logging.WARNING, logger="lib.photos.decoding"):
        image = decode_image(bytes(data), 10**6, "shop/photo.jpg")
    assert image.shape == PHOTO.shape
    assert capfd.readouterr().err == ""
    [message] = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"shop/photo\.jpg: decoded with warnings: Corrupt JPEG data: "
                        r"\d+ extraneous bytes before marker 0xd9", message), message


def test_refusals_carry_the_decoder_reason(capfd):
    float_tiff = pillow_bytes(Image.fromarray(np.zeros((4, 4), np.float32)), "TIFF")
    with pytest.raises(ImageReadError, match="damaged or truncated image.*32-bit samples"):
        decode_image(float_tiff, 10**6, "f.tif")
    jpeg = encode(".jpg", PHOTO)
    with pytest.raises(ImageReadError, match="t.jpg: damaged or truncated image"):
        decode_image(jpeg[:len(jpeg) - 100], 10**6, "t.jpg")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_apply_it(orientation):
    """Every EXIF orientation, against Pillow's ``exif_transpose`` as the reference."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = pillow_bytes(Image.fromarray(PHOTO), "PNG", exif=exif.tobytes())
    viewed = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(decode_image(data, 10**6)[:, :, ::-1], viewed)


@pytest.mark.parametrize("mode", ["stretch", "crop", "pad"])
@pytest.mark.parametrize("shape", [(1, 100000, 3), (100000, 1, 3), (1, 1, 3), (10, 10000, 3)])
def test_extreme_shapes_in_every_resize_mode(mode, shape):
    image = np.full(shape, 200, dtype=np.uint8)
    out = etl_transform(image, EtlConfig(resize_mode=mode))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[111, 111].tolist() == [200, 200, 200]          # in the picture, not a band


def test_pad_fits_then_pads():
    out = etl_transform(np.full((10, 40, 3), 255, np.uint8), EtlConfig(resize_mode="pad"))
    assert out[:80].max() == 0 and out[-80:].max() == 0          # black bands top and bottom
    assert out[84:140].min() == 255                               # the image, scaled to fit


def test_broken_link_and_special_files(tmp_path):
    (tmp_path / "a.jpg").symlink_to(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="broken link"):
        read_image_bgr(tmp_path / "a.jpg")
    with pytest.raises(ImageReadError, match="not a file"):
        read_image_bgr("/dev/null")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_transforms_equal_pillows(orientation):
    """``apply_orientation`` (used where OpenCV ignores the tag) against Pillow."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    image = Image.fromarray(PHOTO)
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(apply_orientation(PHOTO, orientation), expected)


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_avif_orientation_is_applied_too(orientation):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = pillow_bytes(Image.fromarray(PHOTO[:, :, ::-1]), "AVIF", quality=95,
                        exif=exif.tobytes())
    viewed = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode_image(data, 10**6)[:, :, ::-1]
    assert decoded.shape == viewed.shape
    assert np.abs(decoded.astype(int) - viewed).mean() < 4       # lossy, but the same way up
