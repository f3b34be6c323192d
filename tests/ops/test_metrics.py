"""Colorfulness (Hasler & Suesstrunk 2003) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from celpaint.ops.metrics import colorfulness


def test_colorfulness_of_half_red_half_blue():
    # Red: rg = 255, yb = 127.5; blue: rg = 0, yb = -255, each on half the pixels.
    # mean rg = 127.5, mean yb = -63.75; std rg = 127.5, std yb = 191.25 (= 1.5 * 127.5).
    # M = 127.5 * sqrt(1 + 1.5^2) + 0.3 * 63.75 * sqrt(2^2 + 1^2) = about 272.62.
    image = np.zeros((4, 6, 3), np.uint8)
    image[:2, :, 0] = 255
    image[2:, :, 2] = 255
    expected = 127.5 * math.sqrt(3.25) + 0.3 * 63.75 * math.sqrt(5)
    assert expected == pytest.approx(272.619, abs=1e-3)
    assert colorfulness(image) == pytest.approx(expected, rel=1e-12)


def test_colorfulness_of_one_flat_color_is_its_mean_term_only():
    # rg = 200 - 100 = 100, yb = 150 - 50 = 100, no spread: M = 0.3 * sqrt(100^2 + 100^2).
    image = np.empty((5, 5, 3), np.uint8)
    image[:] = (200, 100, 50)
    assert colorfulness(image) == pytest.approx(0.3 * math.sqrt(2) * 100, rel=1e-12)


def test_gray_images_have_no_colorfulness_and_more_chroma_has_more():
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), 3, axis=2)
    assert colorfulness(gray) == 0.0
    colored = rng.integers(64, 192, (16, 16, 3), dtype=np.uint8)
    mean = colored.mean(axis=2, keepdims=True)
    muted = np.round(mean + 0.5 * (colored - mean)).astype(np.uint8)
    assert 0 < colorfulness(muted) < colorfulness(colored)


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)],
)
def test_colorfulness_checks_its_input(image):
    with pytest.raises(ValueError, match="uint8"):
        colorfulness(image)
