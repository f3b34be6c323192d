"""How a frame is fitted to the network: the work size, padding to the size multiple, scaling."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def work_shape(height: int, width: int, work_size: int) -> tuple[int, int]:
    """The ``(height, width)`` a ``height x width`` frame is scaled to for the network.

    The long side becomes ``work_size`` and the aspect ratio is kept; frames already within
    ``work_size`` keep their size (never upscaled); ``WorkGeometry.fit`` uses this rounding.

    Raises:
        ValueError: a size or ``work_size`` below 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if work_size < 1:
        raise ValueError(f"work_size must be positive, got {work_size}")
    scale = min(1.0, work_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def padded_shape(height: int, width: int, multiple: int) -> tuple[int, int]:
    """``(height, width)`` rounded up to multiples of ``multiple``.

    Raises:
        ValueError: ``multiple`` below 1.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def resize_to_work(image: np.ndarray, work_size: int) -> np.ndarray:
    """Scale an ``(H, W)`` or ``(H, W, C)`` image down to the work size (see ``work_shape``).

    Area averaging (``cv2.INTER_AREA``), which does not alias thin lines away. An image already
    within the work size is returned as it is (not copied).
    """
    height, width = image.shape[:2]
    target = work_shape(height, width, work_size)
    if target == (height, width):
        return image
    return cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_AREA)


@dataclass
class WorkGeometry:
    """How a ``height x width`` frame is fitted to the network.

    The frame is scaled to ``work_height x work_width`` (never up) and padded on the right and
    bottom to ``padded_height x padded_width``, multiples of the network's size multiple.
    """

    height: int
    width: int
    work_height: int
    work_width: int
    padded_height: int
    padded_width: int

    @classmethod
    def fit(cls, height: int, width: int, work_size: int, multiple: int) -> WorkGeometry:
        work_height, work_width = work_shape(height, width, work_size)
        padded = padded_shape(work_height, work_width, multiple)
        return cls(height, width, work_height, work_width, *padded)

    @property
    def scaled(self) -> bool:
        return (self.work_height, self.work_width) != (self.height, self.width)
