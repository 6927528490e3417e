"""Pictures: results (the query on the left, the matches to its right in rank order),
and near-duplicate groups side by side."""
from typing import Sequence, Tuple

import cv2
import numpy as np

from lib.artifacts import atomic_path
from lib.errors import PathLike

_CAPTION_H = 44
_GAP = 8
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit(rgb: np.ndarray, tile: int) -> np.ndarray:
    """Scales an RGB image to fit a tile x tile square, centred on white."""
    height, width = rgb.shape[:2]
    scale = tile / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    canvas = np.full((tile, tile, 3), 255, dtype=np.uint8)
    top, left = (tile - size[1]) // 2, (tile - size[0]) // 2
    canvas[top:top + size[1], left:left + size[0]] = small
    return canvas


def _caption(text: str, width: int) -> str:
    """ASCII-only text (OpenCV fonts have no other glyphs) shortened to fit ``width``."""
    text = text.encode("ascii", "replace").decode("ascii")
    while len(text) > 4 and cv2.getTextSize(text, _FONT, 0.4, 1)[0][0] > width - 6:
        text = "..." + text[4:]
    return text


def _row_picture(entries: Sequence[Tuple[np.ndarray, str, str]], tile: int,
                 divider: bool) -> np.ndarray:
    """Tiles side by side, each captioned with two lines: (RGB, line 1, line 2)."""
    columns = len(entries)
    extra = 2 * _GAP if divider else 0        # room for the divider after the first tile
    width = columns * tile + (columns + 1) * _GAP + extra // 2
    height = tile + _CAPTION_H + 2 * _GAP
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for i, (rgb, line1, name) in enumerate(entries):
        left = _GAP + i * (tile + _GAP) + (extra if i else 0)
        canvas[_GAP:_GAP + tile, left:left + tile] = _fit(rgb, tile)
        cv2.putText(canvas, line1, (left + 3, _GAP + tile + 17), _FONT, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(canvas, _caption(name, tile), (left + 3, _GAP + tile + 36), _FONT, 0.4,
                    (60, 60, 60), 1, cv2.LINE_AA)
    if divider:
        at = _GAP + tile + _GAP + _GAP // 2
        canvas[:, at:at + 2] = (200, 0, 0)
    return canvas                                                  # (H, W, 3) RGB


def _write_png(canvas: np.ndarray, path: PathLike) -> None:
    """Encodes an RGB canvas as PNG and writes it atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode the picture for {path}")
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(encoded.tobytes())


def render_results(query_rgb: np.ndarray, matches: Sequence[Tuple[np.ndarray, str, float]],
                   path: PathLike, tile: int = 224) -> None:
    """Writes the result picture as a PNG (atomically).

    Args:
        query_rgb: The query image, (H, W, 3) RGB.
        matches: (image RGB, name, score) per match, best first.
        path: Output ``.png``.
        tile: Side of each image tile in pixels.
    """
    entries = [(query_rgb, "QUERY", "query")] + [
        (rgb, f"#{i} {score:.4f}", name) for i, (rgb, name, score) in enumerate(matches, 1)]
    _write_png(_row_picture(entries, tile, divider=True), path)


def render_group(members: Sequence[Tuple[np.ndarray, str, float]], path: PathLike,
                 tile: int = 224) -> None:
    """Writes a near-duplicate group side by side as a PNG (atomically).

    Args:
        members: (image RGB, name, best cosine to another member) per photo.
        path: Output ``.png``.
        tile: Side of each image tile in pixels.
    """
    entries = [(rgb, f"cos {score:.4f}", name) for rgb, name, score in members]
    _write_png(_row_picture(entries, tile, divider=False), path)
