"""L*a*b* and gray on numpy frames (OpenCV), beside ``celpaint.color.tensor``.

Arrays are ``(H, W, 3)`` RGB, uint8 or float32 in ``[0, 1]``; L*a*b* is float32 with L* in
0..100 and a*, b* in true units (sRGB, D65), OpenCV's ``cv2.cvtColor`` convention. The
smoothing, the native-size rendering and the line-art extractor use these; the networks' side
uses ``tensor``, and scoring uses ``rgb_to_lab_reference`` (scikit-image, float64). The three
agree to within the tolerance that ``tests/color/test_array.py`` pins; within one frame use one
of them, so that "the input's L* stays exact" holds bit for bit.

Why these choices: docs/design.md#color-conversions-color
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from skimage.color import rgb2lab


def to_gray(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` (or already gray ``(H, W)``) -> uint8 gray ``(H, W)``.

    Rec. 601 luma, OpenCV's ``COLOR_RGB2GRAY`` (the same weights as
    ``celpaint.color.tensor.rgb_to_gray``).

    Raises:
        ValueError: not uint8, or not ``(H, W, 3)`` / ``(H, W)``.
    """
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {frame.dtype}")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an (H, W, 3) RGB or (H, W) gray frame, got shape {frame.shape}")


def rgb_to_lab_reference(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` to float64 CIE L*a*b* ``(H, W, 3)`` (D65; L* in 0..100)."""
    return rgb2lab(rgb)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)`` (uint8, or float32 in [0, 1]) -> float32 L*a*b* ``(H, W, 3)``.

    Raises:
        ValueError: not ``(H, W, 3)``, or neither uint8 nor float32.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        rgb = rgb.astype(np.float32) * np.float32(1 / 255)
    elif rgb.dtype != np.float32:
        raise ValueError(f"rgb must be uint8 or float32 in [0, 1], got {rgb.dtype}")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)


# OpenCV's D65 white point and XYZ -> linear sRGB matrix, to tell which L*a*b* colors sRGB can
# show (cv2's own float conversion clips silently, so it cannot be asked).
_WHITE_X, _WHITE_Z = 0.950456, 1.088754


_XYZ_TO_RGB = np.array(
    [
        [3.240479, -1.53715, -0.498535],
        [-0.969256, 1.875991, 0.041556],
        [0.055648, -0.204043, 1.057311],
    ],
    np.float32,
)


# Linear RGB this far outside [0, 1] still counts as in gamut (the matrix's own rounding puts
# white at 1.00001).
_GAMUT_SLACK = 1e-3


_GAMUT_STEPS = 12


# L*a*b* -> (fx, fy, fz) of the inverse transform, as one affine map per pixel.
_LAB_TO_F = np.array(
    [[1 / 116, 1 / 500, 0, 16 / 116], [1 / 116, 0, 0, 16 / 116], [1 / 116, 0, -1 / 200, 16 / 116]],
    np.float32,
)


# cv2.transform applies the white point and the matrix per pixel, far faster than numpy's
# matmul over millions of 3-vectors.
_F_TO_LINEAR_RGB = _XYZ_TO_RGB * np.array([_WHITE_X, 1.0, _WHITE_Z], np.float32)


def _linear_rgb(lab: np.ndarray) -> np.ndarray:
    """Unclipped linear RGB of float32 L*a*b* colors ``(..., 3)``, as a float32 ``(N, 1, 3)``."""
    f = cv2.transform(lab.reshape(-1, 1, 3), _LAB_TO_F)
    # The inverse of L*a*b*'s f: a cube above 6/29, a line below. The line is only needed for
    # the few dark or extreme values (ink), so it is computed for those alone, which is faster
    # than evaluating both branches everywhere.
    xyz = cv2.pow(f, 3)
    flat_f, flat_xyz = f.reshape(-1), xyz.reshape(-1)
    below = np.flatnonzero(flat_f <= np.float32(6 / 29))
    if below.size:
        line = flat_f[below] - np.float32(4 / 29)
        line *= np.float32(3 * (6 / 29) ** 2)
        flat_xyz[below] = line
    return cv2.transform(xyz, _F_TO_LINEAR_RGB)


def _in_gamut(rgb: np.ndarray) -> np.ndarray:
    """bool ``(N,)``: which linear RGB colors ``(N, 1, 3)`` lie in [0, 1] (with slack)."""
    low, high = -_GAMUT_SLACK, 1.0 + _GAMUT_SLACK
    return cv2.inRange(rgb, (low, low, low), (high, high, high)).reshape(-1) > 0


def fit_to_gamut(lab: np.ndarray) -> np.ndarray:
    """Bring every color of a float32 L*a*b* ``(H, W, 3)`` image inside sRGB, keeping L*.

    A color sRGB cannot show (bright chroma at a dark L*: the predicted color of a region
    bleeding onto the black line drawn over it) has its chroma scaled towards neutral, hue
    kept, just far enough to fit. Clipping RGB instead would change L*: a saturated color at
    L* 0 comes back as a colored fringe around every line, and the "input's L* stays exact"
    promise of grayscale models would break. Colors already in gamut are untouched (the
    same array is returned when all are).

    L* outside 0..100 has no neutral in gamut either; such colors keep their L* and lose
    all chroma, and the RGB conversion clips them.
    """
    outside = ~_in_gamut(_linear_rgb(lab))
    if not outside.any():
        return lab
    index = np.flatnonzero(outside)
    fitted = lab.reshape(-1, 3).copy()
    colors = fitted[index]
    # Bisection on the chroma scale: 0 (neutral gray, in gamut) is always a safe lower end.
    low = np.zeros((index.size, 1), np.float32)
    high = np.ones((index.size, 1), np.float32)
    trial = colors.copy()
    for _ in range(_GAMUT_STEPS):
        middle = 0.5 * (low + high)
        trial[:, 1:] = colors[:, 1:] * middle
        fits = _in_gamut(_linear_rgb(trial))[:, None]
        low = np.where(fits, middle, low)
        high = np.where(fits, high, middle)
    fitted[index, 1:] = colors[:, 1:] * low
    return fitted.reshape(lab.shape)


def lab_to_rgb(lab: np.ndarray, fit_gamut: bool = True) -> np.ndarray:
    """float32 L*a*b* ``(H, W, 3)`` -> uint8 RGB ``(H, W, 3)``.

    With ``fit_gamut``, colors outside sRGB lose chroma at constant L* (``fit_to_gamut``), so
    the output's L* is the given L* up to 8-bit rounding; without it (faster: no gamut test)
    they are clipped per RGB channel.

    Raises:
        ValueError: ``lab`` is not a float32 ``(H, W, 3)`` array.
    """
    if lab.ndim != 3 or lab.shape[2] != 3 or lab.dtype != np.float32:
        raise ValueError(f"lab must be a float32 (H, W, 3) array, got {lab.dtype} {lab.shape}")
    rgb = cv2.cvtColor(fit_to_gamut(lab) if fit_gamut else lab, cv2.COLOR_Lab2RGB)
    # convertScaleAbs rounds and saturates above 255 in one pass; negatives (rounding at the
    # gamut's edge) must be cut first or the absolute value would fold them back up.
    np.maximum(rgb, 0.0, out=rgb)
    return cv2.convertScaleAbs(rgb, alpha=255.0)


@functools.cache
def _gray_lightness_table() -> np.ndarray:
    """L* of the 256 neutral grays, exactly as ``rgb_to_lab`` computes them."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb_to_lab(ramp)[0, :, 0])


def lightness(frame: np.ndarray) -> np.ndarray:
    """L* (float32 ``(H, W)``, 0..100) of a uint8 RGB ``(H, W, 3)`` or gray ``(H, W)`` frame.

    Equal to ``rgb_to_lab(frame)[..., 0]`` bit for bit (a gray ``(H, W)`` frame counts as RGB
    with three equal channels). Neutral frames (line art, grayscale film) take a 256-entry
    table instead of the full conversion, which is much faster.

    Raises:
        ValueError: not uint8, or not ``(H, W, 3)`` / ``(H, W)``.
    """
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 3:
        red, green, blue = split_channels(frame)
        if cv2.countNonZero(cv2.absdiff(red, green)) or cv2.countNonZero(cv2.absdiff(red, blue)):
            return np.ascontiguousarray(rgb_to_lab(frame)[..., 0])
        frame = red
    if frame.ndim != 2:
        raise ValueError(f"frame must be (H, W, 3) RGB or (H, W) gray, got shape {frame.shape}")
    return cv2.LUT(frame, _gray_lightness_table())


def split_channels(image: np.ndarray) -> list[np.ndarray]:
    """The channels of ``(H, W, C)`` as C contiguous ``(H, W)`` arrays.

    ``cv2.extractChannel`` per channel: ``cv2.split`` of float32 images is several times
    slower in the OpenCV 5 wheels, and contiguous planes make the arithmetic that follows
    faster.
    """
    return [cv2.extractChannel(image, channel) for channel in range(image.shape[2])]
