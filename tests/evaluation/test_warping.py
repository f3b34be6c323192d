"""The warping error on a*b*: it sees flicker of the colors, not of the lightness."""

from __future__ import annotations

import numpy as np
import pytest

from celpaint.evaluation.warping import WarpingError, ab_channels


def _clip(color_shift: tuple[int, int, int], frames: int = 5):
    """(inputs, outputs): a square outlined in black moving 3 px a frame; each output frame's
    square is its color plus ``color_shift`` times -1, 0 or 1 (at random)."""
    rng = np.random.default_rng(3)
    inputs, outputs = [], []
    for t in range(frames):
        line_art = np.full((48, 64, 3), 255, np.uint8)
        output = np.full((48, 64, 3), 200, np.uint8)
        x = 10 + 3 * t
        sign = int(rng.integers(-1, 2)) if t else 1
        output[14:34, x : x + 20] = np.array([150, 150, 150]) + sign * np.array(color_shift)
        for image in (line_art, output):
            image[14:34, x : x + 2] = image[14:34, x + 18 : x + 20] = 0
            image[14:16, x : x + 20] = image[32:34, x : x + 20] = 0
        inputs.append(line_art)
        outputs.append(output)
    return inputs, outputs


def _errors(inputs, outputs) -> tuple[float, float]:
    meter = WarpingError(streams=2)
    for frame, output in zip(inputs, outputs, strict=True):
        meter.add(frame, output, ab_channels(output))
    rgb, ab = meter.means()
    return rgb, ab


def test_ab_channels_are_a_and_b_over_100():
    gray = np.full((4, 4, 3), 90, np.uint8)
    assert ab_channels(gray).shape == (4, 4, 2) and ab_channels(gray).dtype == np.float32
    assert np.abs(ab_channels(gray)).max() < 1e-3
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    # sRGB red is L*a*b* (53.2, 80.1, 67.2).
    assert ab_channels(red)[0, 0] == pytest.approx([0.801, 0.672], abs=0.005)


def test_lightness_flicker_counts_in_rgb_but_not_in_ab():
    inputs, steady = _clip((0, 0, 0))
    assert _errors(inputs, steady) == pytest.approx((0, 0), abs=1e-4)
    rgb, ab = _errors(inputs, _clip((40, 40, 40))[1])
    assert rgb > 1e-3 and ab < 1e-6
    rgb_hue, ab_hue = _errors(inputs, _clip((40, -40, 0))[1])
    assert rgb_hue > 1e-3 and ab_hue > 1e-3


def test_float_streams_keep_their_channel_count():
    inputs, outputs = _clip((40, -40, 0), frames=2)
    meter = WarpingError(streams=1)
    meter.add(inputs[0], ab_channels(outputs[0]))
    with pytest.raises(ValueError, match="changed"):
        meter.add(inputs[1], outputs[1])
