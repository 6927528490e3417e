"""The precision-recall curve as a PNG picture, drawn with OpenCV (works offline).

``dvc plots show`` renders the curve's CSV with Vega loaded from the internet; this
picture needs nothing but an image viewer.
"""
from typing import Tuple

import cv2
import numpy as np

from lib.artifacts import atomic_path
from lib.errors import PathLike

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SIZE = (720, 540)                          # width, height in pixels
_MARGIN = (70, 30, 50, 60)                  # left, right, top, bottom
_INK, _GRID, _CURVE = (0, 0, 0), (225, 225, 225), (200, 90, 20)   # BGR


def _to_pixels(curve: np.ndarray) -> np.ndarray:
    """(L, 2) recall, precision in [0, 1] -> (L, 2) int32 pixel x, y of the plot area."""
    left, right, top, bottom = _MARGIN
    width, height = _SIZE[0] - left - right, _SIZE[1] - top - bottom
    x = left + curve[:, 0] * width                                   # (L,)
    y = top + (1.0 - curve[:, 1]) * height                           # (L,)
    return np.round(np.stack([x, y], axis=1)).astype(np.int32)       # (L, 2)


def _text(canvas: np.ndarray, text: str, origin: Tuple[int, int], scale: float = 0.45,
          centred: bool = False) -> None:
    """Writes ``text`` at ``origin`` (its baseline start, or its centre if ``centred``)."""
    (width, height), _ = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = origin
    if centred:
        x, y = x - width // 2, y + height // 2
    cv2.putText(canvas, text, (x, y), _FONT, scale, _INK, 1, cv2.LINE_AA)


def render_pr_curve(curve: np.ndarray, path: PathLike, title: str) -> None:
    """Draws the interpolated precision-recall curve and writes it as a PNG (atomically).

    Args:
        curve: (L, 2) rows of recall, precision, recall ascending, values in [0, 1].
        path: Output ``.png``.
        title: One line above the plot, e.g. the metrics it summarises.
    """
    canvas = np.full((_SIZE[1], _SIZE[0], 3), 255, dtype=np.uint8)   # (H, W, 3) BGR
    ticks = np.linspace(0.0, 1.0, 6)                                  # (6,)
    for tick in ticks:
        (x, y0), (_, y1) = _to_pixels(np.array([[tick, 0.0], [tick, 1.0]]))
        cv2.line(canvas, (x, y0), (x, y1), _GRID, 1)
        _text(canvas, f"{tick:.1f}", (x, y0 + 16), centred=True)
        (x0, y), (x1, _) = _to_pixels(np.array([[0.0, tick], [1.0, tick]]))
        cv2.line(canvas, (x0, y), (x1, y), _GRID, 1)
        _text(canvas, f"{tick:.1f}", (x0 - 40, y + 5))
    corners = _to_pixels(np.array([[0.0, 0.0], [1.0, 1.0]]))          # (2, 2)
    cv2.rectangle(canvas, tuple(corners[0]), tuple(corners[1]), _INK, 1)
    points = _to_pixels(np.clip(np.asarray(curve, dtype=np.float64), 0.0, 1.0))  # (L, 2)
    if len(points):                           # an empty curve: nothing was evaluated
        cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, _CURVE, 2, cv2.LINE_AA)
    for point in points:
        cv2.circle(canvas, tuple(int(v) for v in point), 4, _CURVE, -1, cv2.LINE_AA)
    _text(canvas, "recall", ((corners[0][0] + corners[1][0]) // 2, _SIZE[1] - 18), 0.55, True)
    _text(canvas, "precision", (8, _MARGIN[2] - 14), 0.55)
    _text(canvas, title, (_MARGIN[0], 24), 0.5)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise ValueError(f"could not encode the precision-recall picture for {path}")
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(encoded.tobytes())
