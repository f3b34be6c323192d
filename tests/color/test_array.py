"""The three L*a*b* implementations agree: OpenCV on arrays (color.array), kornia on tensors
(color.tensor) and scikit-image for scoring (color.array.rgb_to_lab_reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from celpaint.color import array, tensor

# kornia and scikit-image compute the same formulas in float32 / float64; OpenCV's float path
# uses its own constants and differs by up to 0.42 (a* of dark pure green) on these colors.
# Either bound fails if an implementation drifts.
TOLERANCE = 0.45
EXACT = 1e-3


def _colors() -> np.ndarray:
    """uint8 RGB (H, W, 3): random colors plus every gray level and every pure-channel ramp."""
    rng = np.random.default_rng(0)
    random = rng.integers(0, 256, (64, 256, 3), dtype=np.uint8)
    ramp = np.arange(256, dtype=np.uint8)
    ramps = np.zeros((4, 256, 3), np.uint8)
    ramps[0] = ramp[:, None]
    for channel in range(3):
        ramps[channel + 1, :, channel] = ramp
    return np.concatenate([random, ramps])


def _kornia(rgb: np.ndarray) -> np.ndarray:
    frames = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    return tensor.rgb_to_lab(frames)[0].permute(1, 2, 0).numpy()


def test_opencv_kornia_and_scikit_image_agree():
    rgb = _colors()
    opencv = array.rgb_to_lab(rgb)
    kornia = _kornia(rgb)
    reference = array.rgb_to_lab_reference(rgb)
    assert np.abs(opencv - kornia).max() < TOLERANCE
    assert np.abs(opencv - reference).max() < TOLERANCE
    assert np.abs(kornia - reference).max() < EXACT
    # White is L* 100 with no chroma, black is L* 0, in all three.
    for lab in (opencv, kornia, reference):
        assert lab[64, 255] == pytest.approx([100, 0, 0], abs=0.05)
        assert lab[64, 0] == pytest.approx([0, 0, 0], abs=0.05)


def test_round_trips_on_arrays_and_tensors():
    rgb = _colors()
    assert np.abs(array.lab_to_rgb(array.rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1
    frames = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    back = tensor.lab_to_rgb(tensor.rgb_to_lab(frames))
    assert (back - frames).abs().max() < 1e-3
    # The Lab -> RGB directions agree too: kornia's output read by OpenCV.
    lab = _kornia(rgb).astype(np.float32)
    assert np.abs(array.lab_to_rgb(lab, fit_gamut=False).astype(int) - rgb).max() <= 1


def test_gray_and_lightness_agree_with_the_full_conversions():
    rgb = _colors()
    gray = array.to_gray(rgb)
    frames = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    luma = tensor.rgb_to_gray(frames)[0, 0].numpy() * 255
    assert np.abs(gray.astype(float) - luma).max() <= 0.51
    neutral = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(array.lightness(neutral), array.rgb_to_lab(neutral)[..., 0])
    assert np.array_equal(array.lightness(rgb), array.rgb_to_lab(rgb)[..., 0])
