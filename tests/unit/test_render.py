"""The result picture: the query's file name, readable names, the score, and matches
drawn from their original photos in their own proportions (letterboxed, never stretched)."""
import cv2
import numpy as np
import pytest

from lib.config import EtlConfig
from lib.photos.images import etl_transform, list_images, read_image
from lib.photos.pictures import caption_lines, match_image, query_caption, render_results
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


def wide_photo(path, seed: int = 0) -> np.ndarray:
    """Writes a 300 x 100 photo of saturated colours (no white) as PNG; returns it, BGR."""
    rng = np.random.default_rng(seed)
    bgr = rng.integers(0, 200, (100, 300, 3), dtype=np.uint8)               # (H, W, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr)
    return bgr


def ink_box(tile: np.ndarray) -> tuple:
    """(height, width) of the part of a tile that is not the white letterbox."""
    rows = np.flatnonzero((tile < 250).any(axis=(1, 2)))
    columns = np.flatnonzero((tile < 250).any(axis=(0, 2)))
    return rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1


def test_a_match_is_drawn_from_its_original_photo_never_stretched(tmp_path):
    config = EtlConfig()                                    # resize_mode: stretch
    master = tmp_path / "master"
    original = wide_photo(master / "wide" / "photo.png")
    thumbnail = etl_transform(original, config)              # (224, 224, 3): stretched
    drawn = match_image(master, "wide/photo.png", thumbnail, config)
    assert drawn.shape == (100, 300, 3) and np.array_equal(drawn, original[:, :, ::-1])
    out = tmp_path / "result.png"
    render_results(thumbnail, [(drawn, "wide/photo.png", 0.9)], out)
    picture = cv2.imread(str(out))
    left = 8 + TILE + 8 + 16                                  # the first match's tile
    tile = picture[8:8 + TILE, left:left + TILE]
    height, width = ink_box(tile)
    assert width == TILE and abs(height - round(TILE * 100 / 300)) <= 1   # 3:1, as the photo
    assert ink_box(picture[8:8 + TILE, 8:8 + TILE]) == (TILE, TILE)       # the square query


def test_a_match_falls_back_to_its_thumbnail(tmp_path):
    config = EtlConfig()
    master = tmp_path / "master"
    thumbnail = etl_transform(wide_photo(master / "wide" / "photo.png"), config)
    assert match_image(master, "wide/gone.png", thumbnail, config) is thumbnail     # missing
    (master / "wide" / "notes.png").write_text("not a photo")
    assert match_image(master, "wide/notes.png", thumbnail, config) is thumbnail    # unreadable
    wide_photo(master / "wide" / "photo.png", seed=1)             # replaced by another photo
    assert match_image(master, "wide/photo.png", thumbnail, config) is thumbnail
    wide_photo(tmp_path / "outside.png")
    assert match_image(master, "../outside.png", thumbnail, config) is thumbnail   # escapes
