"""Generated shots of flat-colored shapes with black outlines, and their line art."""

from __future__ import annotations

import cv2
import numpy as np

HEIGHT, WIDTH = 96, 128
PAPER = (235, 225, 200)
SQUARE = (200, 40, 40)
DISC = (40, 90, 200)
TRIANGLE = (60, 170, 60)


def draw(t: int, entering: bool = False, rotate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` of a shot: (colored uint8 (H, W, 3), its line art uint8 (H, W, 3)).

    A square moves right 2 px a frame (turning 3 degrees a frame with ``rotate``), a disc grows
    and passes behind it; with ``entering``, a triangle enters from the right from frame 4 on.
    """
    color = np.full((HEIGHT, WIDTH, 3), PAPER, np.uint8)
    lines = np.full((HEIGHT, WIDTH), 255, np.uint8)
    radius = 14 + t // 2
    center = (70 - t, 52)
    cv2.circle(color, center, radius, DISC, -1, cv2.LINE_AA)
    cv2.circle(lines, center, radius, 0, 2, cv2.LINE_AA)
    box = cv2.boxPoints(((30 + 2 * t, 40), (30, 30), 3 * t if rotate else 0)).astype(np.int32)
    cv2.fillPoly(color, [box], SQUARE, cv2.LINE_AA)
    cv2.fillPoly(lines, [box], 255)
    cv2.polylines(lines, [box], True, 0, 2, cv2.LINE_AA)
    if entering and t >= 4:
        x = WIDTH + 20 - 6 * (t - 4)
        triangle = np.array([[x, 80], [x + 24, 80], [x + 12, 58]], np.int32)
        cv2.fillPoly(color, [triangle], TRIANGLE, cv2.LINE_AA)
        cv2.fillPoly(lines, [triangle], 255)
        cv2.polylines(lines, [triangle], True, 0, 2, cv2.LINE_AA)
    outline = lines < 128
    color[outline] = 0
    return color, np.repeat(lines[..., None], 3, axis=2)


def shot(count: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(colored (T, H, W, 3), line art (T, H, W, 3)) of ``count`` frames."""
    frames = [draw(t, **kwargs) for t in range(count)]
    return np.stack([c for c, _ in frames]), np.stack([lines for _, lines in frames])


def interiors(frame_color: np.ndarray, rgb: tuple[int, int, int], margin: int = 3) -> np.ndarray:
    """bool (H, W): pixels of ``frame_color`` painted ``rgb``, eroded by ``margin`` px."""
    mask = np.all(frame_color == np.array(rgb, np.uint8), axis=2).astype(np.uint8)
    return cv2.erode(mask, np.ones((2 * margin + 1,) * 2, np.uint8)) > 0
