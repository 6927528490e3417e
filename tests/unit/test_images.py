"""Image IO and the ETL transform."""
import cv2
import numpy as np
import pytest

from lib.config import EtlConfig
from lib.errors import ImageReadError
from lib.photos.images import etl_transform, list_images, load_image, read_image_bgr

CONFIG = EtlConfig()


def solid_bgr(height, width, bgr):
    """An image of one BGR colour."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:] = bgr
    return image


def test_bgr_becomes_rgb():
    image = solid_bgr(30, 40, (255, 0, 0))            # pure blue in OpenCV's BGR
    out = etl_transform(image, CONFIG)
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 255]           # blue is the last channel in RGB


def test_file_roundtrip_keeps_channel_order(tmp_path):
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), solid_bgr(50, 70, (0, 0, 255)))  # red
    out = load_image(path, CONFIG)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[100, 100].tolist() == [255, 0, 0]


@pytest.mark.parametrize("shape", [(10, 400, 3), (500, 3, 3), (1, 1, 3), (224, 224, 3)])
def test_resize_shape_and_dtype(shape):
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    out = etl_transform(image, CONFIG)
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]


def test_greyscale_and_bgra_arrays_are_accepted():
    grey = np.full((20, 30), 77, dtype=np.uint8)
    assert etl_transform(grey, CONFIG)[5, 5].tolist() == [77, 77, 77]
    bgra = np.dstack([solid_bgr(20, 30, (10, 20, 30)), np.full((20, 30), 128, np.uint8)])
    assert etl_transform(bgra, CONFIG)[5, 5].tolist() == [30, 20, 10]


def test_crop_and_pad_modes():
    # Left half black, right half white, 100 x 200: crop keeps the centre square.
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, 100:] = 255
    crop = etl_transform(image, EtlConfig(resize_mode="crop"))
    assert crop[112, 5].tolist() == [0, 0, 0] and crop[112, 218].tolist() == [255, 255, 255]
    pad = etl_transform(solid_bgr(100, 200, (255, 255, 255)), EtlConfig(resize_mode="pad"))
    assert pad[2, 112].tolist() == [0, 0, 0]           # padding band on top
    assert pad[112, 112].tolist() == [255, 255, 255]


def test_bad_arrays_are_rejected():
    with pytest.raises(TypeError, match="uint8"):
        etl_transform(np.zeros((10, 10, 3), dtype=np.float32), CONFIG)
    with pytest.raises(ValueError, match="BGR image"):
        etl_transform(np.zeros((10, 10, 2), dtype=np.uint8), CONFIG)
    with pytest.raises(TypeError, match="numpy array"):
        etl_transform([[1, 2]], CONFIG)


def test_read_errors_are_clear(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image_bgr(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="not a file"):
        read_image_bgr(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        read_image_bgr(empty)
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="not an image OpenCV can decode"):
        read_image_bgr(text)


def test_pixel_limit(tmp_path):
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), solid_bgr(100, 100, (1, 2, 3)))
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image_bgr(path, max_pixels=9_999)
    assert read_image_bgr(path, max_pixels=10_000).shape == (100, 100, 3)


def test_list_images_is_recursive_sorted_and_filtered(tmp_path):
    for rel in ["b/z.jpg", "a.PNG", "b/a.webp", "notes.txt", ".hidden/x.jpg", "c/.x.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.PNG", "b/a.webp", "b/z.jpg"]
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nope")
