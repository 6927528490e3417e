"""The result picture's captions: the query's file name, readable names, the score."""
import cv2
import numpy as np
import pytest

from lib.config import EtlConfig
from lib.photos.images import list_images, read_image
from lib.photos.pictures import caption_lines, query_caption, render_results
from tests.support.helpers import REPO_ROOT

TILE = 224
LONG = "a-long-label-folder/an-even-longer-file-name-with-many-words-0123456789abcdef.jpg"


def width_of(text: str) -> int:
    """Pixel width of a caption line in the name font."""
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]


@pytest.mark.parametrize("name", ["shoes/2be8cf7a-5b2e-400f-a826-785997af532a.jpg", LONG,
                                  "short.jpg", "t-shirt/ünïcode name.png"])
def test_names_keep_their_folder_and_file_end_within_two_lines(name):
    lines = caption_lines(name, TILE)
    assert 1 <= len(lines) <= 2 and all(width_of(line) <= TILE - 6 for line in lines)
    ascii_name = name.encode("ascii", "replace").decode("ascii")
    assert lines[0].startswith(ascii_name.split("/")[0])          # the label folder shows
    assert lines[-1].endswith(ascii_name[-8:])                     # so does the file's end
    if "".join(lines) != ascii_name:
        assert "..." in lines[-1]                                   # shortened in the middle


def test_the_query_is_captioned_with_its_file_name():
    assert query_caption("/home/me/photos/shoes/red.jpg") == "shoes/red.jpg"
    assert query_caption("red.jpg") == "red.jpg"


def test_picture_has_a_tile_and_a_caption_per_image(tmp_path):
    photos = list_images(REPO_ROOT / "data/master")[:3]
    rgb = [np.ascontiguousarray(read_image(p, EtlConfig())[:, :, ::-1]) for p in photos]
    out = tmp_path / "result.png"
    render_results(rgb[0], [(rgb[1], LONG, 0.91234), (rgb[2], "b.jpg", 0.5)], out,
                   query_name=query_caption(str(photos[0])))
    picture = cv2.imread(str(out))
    assert picture.shape[1] > 3 * TILE and picture.shape[0] > TILE + 60
    caption = picture[TILE + 8:, :]                                 # below the tiles
    dark = (caption.min(axis=2) < 128).any(axis=0)                  # (W,) columns with ink
    starts = [8, 8 + TILE + 8 + 16, 8 + 2 * (TILE + 8) + 16]
    assert all(dark[left:left + TILE].any() for left in starts)   # each tile is captioned
