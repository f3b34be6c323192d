"""Work-size geometry, color conversions and the edge-aware upsampling to native size."""

from __future__ import annotations

import cv2
import kornia.color
import numpy as np
import pytest
import torch

from celpaint.color.array import fit_to_gamut, lab_to_rgb, lightness, rgb_to_lab, split_channels
from celpaint.ops.geometry import WorkGeometry, padded_shape, resize_to_work, work_shape
from celpaint.ops.upsample import joint_bilateral_upsample, to_native

SCALE = 4


def drawing(scale: int = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """A cel at ``scale`` x (96 x 160): (line art uint8 (H, W), truth uint8 (H, W, 3)).

    Regions of different colors meet at black lines 1 native px wide... times ``scale``//2.
    """
    height, width = 96 * scale, 160 * scale
    color = np.empty((height, width, 3), np.uint8)
    color[:] = (240, 230, 205)
    color[:, width // 2 :] = (70, 120, 190)
    cv2.circle(color, (width // 4, height // 2), 30 * scale, (220, 60, 50), -1)
    cv2.rectangle(color, (width * 5 // 8, height // 4), (width * 7 // 8, height * 3 // 4),
                  (250, 210, 40), -1)  # fmt: skip
    lines = np.full((height, width), 255, np.uint8)
    thickness = max(1, scale // 2)
    cv2.line(lines, (width // 2, 0), (width // 2, height), 0, thickness)
    cv2.circle(lines, (width // 4, height // 2), 30 * scale, 0, thickness)
    cv2.rectangle(lines, (width * 5 // 8, height // 4), (width * 7 // 8, height * 3 // 4), 0,
                  thickness)  # fmt: skip
    truth = (color.astype(np.float32) * (lines[..., None] / 255.0)).astype(np.uint8)
    return lines, truth


@pytest.mark.parametrize(
    ("height", "width", "work_size", "expected"),
    [
        (1080, 1920, 512, (288, 512)),
        (2160, 3840, 512, (288, 512)),
        (1920, 1080, 512, (512, 288)),
        (200, 300, 512, (200, 300)),  # never upscaled
        (142, 250, 128, (73, 128)),
    ],
)
def test_work_shape(height, width, work_size, expected):
    assert work_shape(height, width, work_size) == expected
    # The same rounding as the colorizer, which scales frames for the network.
    geometry = WorkGeometry.fit(height, width, work_size, 16)
    assert (geometry.work_height, geometry.work_width) == expected


def test_resize_to_work_and_padded_shape():
    image = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    small = resize_to_work(image, 512)
    assert small.shape == (288, 512, 3) and small.dtype == np.uint8
    assert resize_to_work(small, 512) is small
    assert padded_shape(288, 512, 256) == (512, 512)
    assert padded_shape(288, 512, 16) == (288, 512)
    # The colorizer's geometry is the same arithmetic.
    geometry = WorkGeometry.fit(1080, 1920, 512, 256)
    assert (geometry.padded_height, geometry.padded_width) == (512, 512)


def test_lab_conversions_round_trip_and_agree_with_kornia():
    rgb = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    lab = rgb_to_lab(rgb)
    assert lab.dtype == np.float32 and lab.shape == rgb.shape
    assert np.abs(lab_to_rgb(lab).astype(int) - rgb).max() <= 1
    reference = kornia.color.rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    np.testing.assert_allclose(lab, reference.permute(1, 2, 0).numpy(), atol=0.35)
    # Out-of-gamut colors are clipped, not wrapped.
    extreme = np.array([[[50.0, 127.0, -127.0], [100.0, -128.0, 127.0]]], np.float32)
    assert lab_to_rgb(extreme).dtype == np.uint8


def test_lightness_is_exact_for_gray_and_color_frames():
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    gray_rgb = np.repeat(gray[..., None], 3, axis=2)
    expected = rgb_to_lab(gray_rgb)[..., 0]
    assert np.array_equal(lightness(gray_rgb), expected)
    assert np.array_equal(lightness(gray), expected)
    color = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert np.array_equal(lightness(color), rgb_to_lab(color)[..., 0])


def test_split_channels():
    image = np.random.default_rng(3).random((5, 6, 4)).astype(np.float32)
    planes = split_channels(image)
    assert len(planes) == 4 and all(p.flags.c_contiguous for p in planes)
    assert all(np.array_equal(p, image[..., i]) for i, p in enumerate(planes))


def test_joint_bilateral_upsample_keeps_a_step_that_bilinear_blurs():
    # A gray step at native 4x: the colors of the two sides must not mix next to it.
    guide = np.zeros((40, 80), np.float32)
    guide[:, 42:] = 1.0  # not on a work-pixel boundary: one work pixel straddles the step
    truth = np.where(guide > 0.5, 50.0, -50.0).astype(np.float32)
    small = cv2.resize(truth, (20, 10), interpolation=cv2.INTER_AREA)
    up = joint_bilateral_upsample(small, guide)
    assert up.shape == (40, 80, 1) and up.dtype == np.float32
    bilinear = cv2.resize(small, (80, 40), interpolation=cv2.INTER_LINEAR)
    assert np.abs(bilinear - truth).max() > 40
    assert np.abs(up[..., 0] - truth).max() < 5
    # A constant stays constant, whatever the guide.
    flat = joint_bilateral_upsample(np.full((10, 20, 2), 7.0, np.float32), guide)
    np.testing.assert_allclose(flat, 7.0, rtol=1e-5)


def test_joint_bilateral_upsample_follows_native_lines_better_than_bilinear():
    lines, truth = drawing()
    native_lab = rgb_to_lab(truth)
    small = cv2.resize(truth, (160, 96), interpolation=cv2.INTER_AREA)
    small_ab = rgb_to_lab(small)[..., 1:]
    bilinear = cv2.resize(small_ab, lines.shape[::-1], interpolation=cv2.INTER_LINEAR)
    # Paper pixels within a few px of a line, where bilinear mixes the two sides and the ink.
    near = (cv2.dilate((lines < 128).astype(np.uint8), np.ones((9, 9))) > 0) & (lines >= 128)
    bilinear_error = np.abs(bilinear - native_lab[..., 1:])[near].mean()
    for guide in (lines, cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY)):
        up = joint_bilateral_upsample(small_ab, lightness(guide) / 100)
        assert up.shape == (*lines.shape, 2)
        assert np.abs(up - native_lab[..., 1:])[near].mean() < 0.5 * bilinear_error
    # Same size: nothing to do.
    assert joint_bilateral_upsample(small_ab, lightness(small) / 100) is small_ab


def test_colors_at_1080p_stop_within_a_few_pixels_of_the_native_lines():
    # The edge-aware step runs at half the native size (EDGE_AWARE_DIVISOR): colors must still
    # stop at the native 1080p lines, not spread over the work size's 3.75 px pixels.
    height, width = 1080, 1920
    color = np.empty((height, width, 3), np.uint8)
    color[:] = (240, 230, 205)
    color[:, width // 2 :] = (70, 120, 190)
    cv2.circle(color, (width // 4, height // 2), height // 3, (220, 60, 50), -1)
    lines = np.full((height, width), 255, np.uint8)
    cv2.line(lines, (width // 2, 0), (width // 2, height), 0, 4)
    cv2.circle(lines, (width // 4, height // 2), height // 3, 0, 4)
    truth = (color.astype(np.float32) * (lines[..., None] / 255.0)).astype(np.uint8)
    small_lab = rgb_to_lab(cv2.resize(truth, (512, 288), interpolation=cv2.INTER_AREA))
    paper = (lines >= 128).astype(np.uint8)
    distance = cv2.distanceTransform(paper, cv2.DIST_L2, 5)
    truth_ab = rgb_to_lab(truth)[..., 1:]

    def bleed(ab: np.ndarray) -> float:
        """How far from a line (native px) a paper pixel's a*b* can be 5 or more off."""
        wrong = (np.abs(ab - truth_ab).sum(axis=-1) > 5) & (paper > 0)
        return float(distance[wrong].max()) if wrong.any() else 0.0

    native = to_native(small_lab, lines, luminance="input")
    assert native.shape == (height, width, 3)
    assert bleed(native[..., 1:]) <= 3.0
    bilinear = cv2.resize(small_lab, (width, height), interpolation=cv2.INTER_LINEAR)
    assert bleed(bilinear[..., 1:]) >= 4.0


def test_render_has_native_size_and_keeps_lines_dark():
    lines, truth = drawing()
    small_lab = rgb_to_lab(cv2.resize(truth, (160, 96), interpolation=cv2.INTER_AREA))
    line_art = np.repeat(lines[..., None], 3, axis=2)
    out = lab_to_rgb(to_native(small_lab, line_art, luminance="darken"))
    assert out.shape == truth.shape and out.dtype == np.uint8
    on_lines = lines < 64
    # Every line pixel at least as dark as drawn (up to 8-bit rounding): crisp at native size.
    out_l = rgb_to_lab(out)[..., 0]
    assert (out_l[on_lines] <= lightness(lines)[on_lines] + 1.0).all()
    assert out[on_lines].max() < 60
    # Bilinear upsampling of the work-size colors leaves the lines washed out.
    bilinear = lab_to_rgb(cv2.resize(small_lab, lines.shape[::-1], interpolation=cv2.INTER_LINEAR))
    assert bilinear[on_lines].mean() > 3 * out[on_lines].mean() + 10
    # Away from lines the colors are the truth's.
    paper = cv2.erode((lines >= 128).astype(np.uint8), np.ones((9, 9))) > 0
    assert np.abs(out[paper].astype(int) - truth[paper]).mean() < 2.0


def test_to_native_input_luminance_is_exact():
    _, truth = drawing()
    truth_lab = rgb_to_lab(truth)
    # A grayscale film of this cel: gray pixels with the cel's L*, so the true colors are in
    # gamut at the input's L*.
    neutral = truth_lab.copy()
    neutral[..., 1:] = 0
    gray = cv2.cvtColor(lab_to_rgb(neutral), cv2.COLOR_RGB2GRAY)
    small_lab = rgb_to_lab(cv2.resize(truth, (160, 96), interpolation=cv2.INTER_AREA))
    lab = to_native(small_lab, np.repeat(gray[..., None], 3, axis=2), luminance="input")
    assert lab.shape == (*gray.shape, 3) and lab.dtype == np.float32
    assert np.array_equal(lab[..., 0], lightness(gray))
    # After conversion to 8 bits, L* is still the input's within rounding.
    out = lab_to_rgb(lab)
    assert np.percentile(np.abs(rgb_to_lab(out)[..., 0] - lightness(gray)), 99) < 1.0
    predicted = to_native(small_lab, gray, luminance="predicted")
    assert not np.array_equal(predicted[..., 0], lab[..., 0])


def test_fit_to_gamut_keeps_lightness_and_hue():
    rng = np.random.default_rng(0)
    inside = rgb_to_lab(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert fit_to_gamut(inside) is inside
    # Saturated chroma at dark and light L*: outside sRGB.
    lab = np.array([[[2.0, 60.0, 40.0], [50.0, 0.0, -150.0], [97.0, -90.0, 30.0]]], np.float32)
    fitted = fit_to_gamut(lab)
    assert np.array_equal(fitted[..., 0], lab[..., 0])
    scale = np.linalg.norm(fitted[..., 1:], axis=-1) / np.linalg.norm(lab[..., 1:], axis=-1)
    assert (scale < 1).all() and (scale > 0).all()
    assert np.allclose(fitted[..., 1:], lab[..., 1:] * scale[..., None], atol=1e-4)
    out = lab_to_rgb(fitted)
    assert np.abs(rgb_to_lab(out)[..., 0] - lab[..., 0]).max() < 1.0


def test_inputs_at_the_work_size_are_not_resampled():
    lines, truth = drawing(1)
    lab = rgb_to_lab(truth)
    lab[..., 1:] += 5.0
    out = to_native(lab, truth, luminance="predicted")
    assert np.array_equal(out, lab)
    kept = to_native(lab, truth, luminance="input")
    assert np.array_equal(kept[..., 1:], lab[..., 1:])
    assert np.array_equal(kept[..., 0], rgb_to_lab(truth)[..., 0])


def test_bad_arguments_are_rejected():
    lab = np.zeros((10, 10, 3), np.float32)
    native = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="luminance"):
        to_native(lab, native, luminance="mean")
    with pytest.raises(ValueError, match="larger"):
        to_native(np.zeros((30, 30, 3), np.float32), native)
    with pytest.raises(ValueError, match="float32"):
        to_native(lab.astype(np.float64), native)
    with pytest.raises(ValueError):
        work_shape(0, 10, 512)
