"""Pictures: results (the query on the left, the matches to its right in rank order),
and near-duplicate groups side by side.

Each tile is captioned with its rank and score (large), then its name on up to two
lines: a name too long for them is shortened in the middle, so both its folder (often
the label) and its file name stay readable. Every image is letterboxed on white in its
tile, never stretched; a match is drawn from its original photo when it can be
(:func:`match_image`), so it keeps its proportions.
"""
import logging
from pathlib import Path, PurePath, PurePosixPath
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from lib.artifacts import atomic_path
from lib.config import EtlConfig
from lib.errors import ImageReadError, one_line, PathLike
from lib.photos.images import etl_transform, read_image

logger = logging.getLogger(__name__)

_CAPTION_H = 66
_GAP = 8
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_NAME_SCALE = 0.4
_NAME_LINES = 2
_ELLIPSIS = "..."
_SAME_PHOTO = 2.0      # mean |difference| of ETL outputs (of 255) within which a file
                       # is still the photo its thumbnail was made from


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


def match_image(master: PathLike, name: str, thumbnail: np.ndarray,
                config: EtlConfig) -> np.ndarray:
    """The image to draw for a match: its original photo, else its ETL thumbnail.

    The original is ``master / name``, decoded as the ETL decoded it (``config``: pixel
    limit, reduced JPEG decoding, EXIF orientation). It is used only when it is there,
    readable, and still the photo the thumbnail was made from (its ETL transform
    matches the thumbnail): a photo replaced since the build, or a name that leaves
    the folder, falls back to the thumbnail.

    Args:
        master: The collection folder (``paths.master``).
        name: The match's image name (a path relative to ``master``).
        thumbnail: (S, S, 3) ``uint8`` RGB, the ETL output of that photo.
        config: The ETL settings the collection was built with.

    Returns:
        (H, W, 3) ``uint8`` RGB: the original's proportions, or the thumbnail.
    """
    parts = PurePosixPath(name).parts
    if not parts or parts[0] == "/" or ".." in parts:
        return thumbnail
    try:
        bgr = read_image(Path(master) / name, config)                      # (H, W, 3)
    except ImageReadError as err:
        logger.debug("drawing the thumbnail of %r: %s", name, one_line(err))
        return thumbnail
    again = etl_transform(bgr, config)                                      # (S, S, 3)
    if again.shape != thumbnail.shape or np.abs(
            again.astype(np.int16) - thumbnail.astype(np.int16)).mean() > _SAME_PHOTO:
        logger.debug("drawing the thumbnail of %r: the file is another photo now", name)
        return thumbnail
    return np.ascontiguousarray(bgr[:, :, ::-1])                            # BGR -> RGB


def _fits(text: str, width: int) -> bool:
    """Whether ``text`` in the name font fits ``width`` pixels (with a small margin)."""
    return cv2.getTextSize(text, _FONT, _NAME_SCALE, 1)[0][0] <= width - 6


def _elide_middle(text: str, width: int) -> str:
    """``text`` with its middle replaced by ``...`` so that it fits ``width``."""
    if _fits(text, width):
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        head = (keep + 1) // 2
        shortened = text[:head] + _ELLIPSIS + text[len(text) - (keep - head):]
        if _fits(shortened, width):
            return shortened
    return _ELLIPSIS


def caption_lines(name: str, width: int) -> List[str]:
    """A name as at most two lines that fit ``width`` pixels, in ASCII (OpenCV's fonts).

    The first line holds as much of the start as fits (breaking after a ``/`` when it
    leaves the line at least half full); the rest goes on the second line, shortened in
    its middle if it is still too long, so the file name's end stays visible.
    """
    text = name.encode("ascii", "replace").decode("ascii")
    if _fits(text, width):
        return [text]
    cut = 1
    while cut < len(text) and _fits(text[:cut + 1], width):
        cut += 1
    slash = text.rfind("/", 0, cut)
    if slash + 1 >= cut // 2:
        cut = slash + 1
    return [text[:cut], _elide_middle(text[cut:], width)][:_NAME_LINES]


def query_caption(query: str) -> str:
    """The query's caption: its file name, after its folder when it has one."""
    path = PurePath(query)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _row_picture(entries: Sequence[Tuple[np.ndarray, str, str]], tile: int,
                 divider: bool) -> np.ndarray:
    """Tiles side by side, captioned (RGB, first line, name); optionally a divider
    after the first tile."""
    columns = len(entries)
    extra = 2 * _GAP if divider else 0        # room for the divider after the first tile
    width = columns * tile + (columns + 1) * _GAP + extra // 2
    height = tile + _CAPTION_H + 2 * _GAP
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for i, (rgb, line1, name) in enumerate(entries):
        left = _GAP + i * (tile + _GAP) + (extra if i else 0)
        canvas[_GAP:_GAP + tile, left:left + tile] = _fit(rgb, tile)
        cv2.putText(canvas, line1, (left + 3, _GAP + tile + 22), _FONT, 0.65, (0, 0, 0), 2,
                    cv2.LINE_AA)
        for row, text in enumerate(caption_lines(name, tile)):
            cv2.putText(canvas, text, (left + 3, _GAP + tile + 42 + 16 * row), _FONT,
                        _NAME_SCALE, (60, 60, 60), 1, cv2.LINE_AA)
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


def render_results(query_rgb: np.ndarray,  # pylint: disable=too-many-arguments
                   matches: Sequence[Tuple[np.ndarray, str, float]], path: PathLike,
                   tile: int = 224, query_name: str = "query", *, first_rank: int = 1) -> None:
    """Writes the result picture as a PNG (atomically).

    Args:
        query_rgb: The query image, (H, W, 3) RGB.
        matches: (image RGB, name, score) per match, best first; each image of any
            proportions (letterboxed in its tile).
        path: Output ``.png``.
        tile: Side of each image tile in pixels.
        query_name: The query's caption (see :func:`query_caption`).
        first_rank: The rank of the first match (a later page starts after 1).
    """
    entries = [(query_rgb, "QUERY", query_name)] + [
        (rgb, f"#{i}  {score:.4f}", name)
        for i, (rgb, name, score) in enumerate(matches, first_rank)]
    _write_png(_row_picture(entries, tile, divider=True), path)


def render_comparison(query_rgb: np.ndarray,
                      versions: Sequence[Tuple[str, Sequence[Tuple[np.ndarray, str, float]]]],
                      path: PathLike, tile: int = 224, query_name: str = "query") -> None:
    """Writes the results of one query at several versions, a row each, as a PNG.

    Args:
        query_rgb: The query image, (H, W, 3) RGB.
        versions: (label, matches) per version, matches as for :func:`render_results`;
            each row starts with the query, captioned with the version's label.
        path: Output ``.png``.
        tile: Side of each image tile in pixels.
        query_name: The query's caption (see :func:`query_caption`).
    """
    rows = [_row_picture([(query_rgb, label[:24], query_name)] + [
        (rgb, f"#{i}  {score:.4f}", name) for i, (rgb, name, score) in enumerate(matches, 1)],
        tile, divider=True) for label, matches in versions]
    width = max(row.shape[1] for row in rows)
    canvas = np.full((sum(row.shape[0] for row in rows), width, 3), 255, dtype=np.uint8)
    top = 0
    for row in rows:
        canvas[top:top + row.shape[0], :row.shape[1]] = row
        top += row.shape[0]
    _write_png(canvas, path)                                       # (H, W, 3) RGB


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
