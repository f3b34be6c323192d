"""Work-size geometry, color conversion on arrays, and edge-aware upsampling to native size.

The generator runs at a *work size* (the long side, e.g. 512): larger frames are scaled down for
the network only. Its colors are then brought back to the native size here:

1. chroma (and, for models that predict it, L*) is upsampled with a *joint bilateral
   upsampling* (Kopf, Cohen, Lischinski and Uyttendaele, "Joint bilateral upsampling", SIGGRAPH
   2007) guided by the native-resolution input: each native pixel averages its four nearest
   work-size samples with bilinear weights times a range weight that drops for samples whose
   (area-averaged) input gray level differs from the native pixel's. A paper pixel next to a
   line thus ignores the work-size samples that straddle the line, whose colors are a blur of
   both sides and the ink; bilinear interpolation spreads that blur over several native pixels.
2. L* comes from the native input: exactly the input's L* for grayscale (a*b*) models, or the
   predicted L* darkened by the native lines for line-art models, so lines stay as crisp as the
   input at 1080p and 4K.

The range weight is made separable the way a bilateral grid does it: the work-size samples are
weighted for each of a few gray levels, each weighted map is upsampled bilinearly, and each
native pixel interpolates between the two levels around its own gray level. Cost: ``levels``
bilinear resizes and multiply-adds per channel at the size it runs at. ``to_native`` runs it at
half the native size and interpolates the rest bilinearly (``EDGE_AWARE_DIVISOR``).

Measured on cels with regions of different colors meeting at black lines (work size 160 or 512
px, native 4x or 3.75x larger; mean |a*| + |b*| error against the truth on paper pixels within
4 native px of a line, with the work-size colors a perfect area-downscale of the truth; guided
by the line art / by a grayscale version of the truth)::

    method                               test drawing x4   1080p, 4 px lines   1080p, 6 px lines
    bilinear                                  9.8               4.9                4.4
    fast guided filter, r=1, eps=1e-3     19.8 / 16.5        4.3 / 5.6          2.0 / 2.8
    joint bilateral, sigma 0.05, 7 levels  1.7 / 3.0         0.7 / 1.1          0.9 / 1.8

The fast guided filter (He and Sun, 2015) fits ``color = a * gray + b`` in small windows;
with lines thinner than the scale factor, the downscaled guide barely shows them, the fitted
slopes explode, and it overshoots next to every line: worse than bilinear. It is not used.

Color conversions on arrays use OpenCV (``cv2.cvtColor`` on float32 RGB in [0, 1]: sRGB, D65,
L* 0..100, a* b* in true units). They agree with ``celpaint.color`` (kornia) to within 0.35 in
L*, a* and b*; use one of them consistently within a frame so that "the input's L* stays exact"
holds bit for bit.
"""

from __future__ import annotations

import functools
from typing import Literal

import cv2
import numpy as np

Luminance = Literal["input", "darken", "predicted"]

# Range sigma of the joint bilateral upsampling, in units of the guide (L* / 100): work-size
# samples whose gray level differs from the native pixel's by 0.1 (10 L*) weigh 0.14 of one at
# the same level. The number of gray levels of the bilateral grid trades time for accuracy on
# grayscale guides (line art is nearly two-level): near-line errors on a grayscale cel were
# 4.4 / 3.0 / 2.6 for 5 / 7 / 9 levels, at 5 / 7 / 9 resizes per channel.
RANGE_SIGMA = 0.05
RANGE_LEVELS = 7
# Weight of plain bilinear interpolation mixed into the bilateral average, so that a native
# pixel whose gray level none of its four samples shares still gets a sensible color.
_FALLBACK = 1e-3
# A bound no a* or b* reaches, for per-channel clamps that leave them alone.
_NO_BOUND = 1e30
# Range weights below this are treated as zero (see ``_bilateral_planes``).
_NEGLIGIBLE_WEIGHT = 1e-12
# The joint bilateral step runs at the native size divided by this; bilinear interpolation does
# the rest. At half size it costs a quarter (1080p line art: the whole native-size rendering of a
# line-art model's frame went from 215 to 87 ms), and H.264 / H.265 in 4:2:0 keep chroma at half
# size anyway. What it costs in quality, on a 1080p cel with 4 px lines guided by the line art:
# a*b* of paper pixels more than 5 off reach 2.8 px from a line instead of 2.2 (bilinear: 4);
# the mean near-line error (as above) rises from 0.4 to 4.6, and after a 4:2:0 round trip from
# 5.3 to 7.9: a fringe of one native px along the lines, softer but not wider.
EDGE_AWARE_DIVISOR = 2


def work_shape(height: int, width: int, work_size: int) -> tuple[int, int]:
    """The ``(height, width)`` a ``height x width`` frame is scaled to for the network.

    The long side becomes ``work_size`` and the aspect ratio is kept; frames already within
    ``work_size`` keep their size (never upscaled). Same rounding as the colorizer's
    ``WorkGeometry.fit``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if work_size < 1:
        raise ValueError(f"work_size must be positive, got {work_size}")
    scale = min(1.0, work_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def padded_shape(height: int, width: int, multiple: int) -> tuple[int, int]:
    """``(height, width)`` rounded up to multiples of ``multiple``."""
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


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)`` (uint8, or float32 in [0, 1]) -> float32 L*a*b* ``(H, W, 3)``."""
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
    [[3.240479, -1.53715, -0.498535], [-0.969256, 1.875991, 0.041556],
     [0.055648, -0.204043, 1.057311]],
    np.float32,
)  # fmt: skip
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
    # the few dark or extreme values (ink), so it is computed for those alone: 3x faster at
    # 1080p than evaluating both branches everywhere.
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
    the output's L* is the given L* up to 8-bit rounding; without it (faster: the test costs
    about 20 ms per 1080p frame when few colors are outside) they are clipped per RGB channel.
    """
    if lab.ndim != 3 or lab.shape[2] != 3 or lab.dtype != np.float32:
        raise ValueError(f"lab must be a float32 (H, W, 3) array, got {lab.dtype} {lab.shape}")
    rgb = cv2.cvtColor(fit_to_gamut(lab) if fit_gamut else lab, cv2.COLOR_Lab2RGB)
    # convertScaleAbs rounds and saturates above 255 in one pass; negatives (rounding at the
    # gamut's edge) must be cut first or the absolute value would fold them back up.
    np.maximum(rgb, 0.0, out=rgb)
    return cv2.convertScaleAbs(rgb, alpha=255.0)


def split_channels(image: np.ndarray) -> list[np.ndarray]:
    """The channels of ``(H, W, C)`` as C contiguous ``(H, W)`` arrays.

    ``cv2.extractChannel`` per channel: ``cv2.split`` of float32 images is about 7x slower in
    the OpenCV 5 wheels, and contiguous planes make the arithmetic that follows faster.
    """
    return [cv2.extractChannel(image, channel) for channel in range(image.shape[2])]


@functools.cache
def _gray_lightness_table() -> np.ndarray:
    """L* of the 256 neutral grays, exactly as ``rgb_to_lab`` computes them."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb_to_lab(ramp)[0, :, 0])


def lightness(frame: np.ndarray) -> np.ndarray:
    """L* (float32 ``(H, W)``, 0..100) of a uint8 RGB ``(H, W, 3)`` or gray ``(H, W)`` frame.

    Equal to ``rgb_to_lab(frame)[..., 0]`` bit for bit (a gray ``(H, W)`` frame counts as RGB
    with three equal channels). Neutral frames (line art, grayscale film) take a 256-entry
    table instead of the full conversion, which is about 20x faster at 1080p.
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


def _check_guide(guide: np.ndarray) -> np.ndarray:
    if guide.ndim != 2:
        raise ValueError(f"guide must be a gray (H, W) image, got shape {guide.shape}")
    if guide.dtype == np.uint8:
        return guide.astype(np.float32) * np.float32(1 / 255)
    if guide.dtype != np.float32:
        raise ValueError(f"guide must be uint8 or float32 in [0, 1], got {guide.dtype}")
    return guide


def joint_bilateral_upsample(
    source: np.ndarray,
    guide: np.ndarray,
    sigma: float = RANGE_SIGMA,
    levels: int = RANGE_LEVELS,
) -> np.ndarray:
    """Upsample ``source`` to the size of ``guide``, following the guide's edges.

    Args:
        source: low-resolution ``(h, w)`` or ``(h, w, C)`` float32, e.g. a*b* at the work size.
        guide: full-resolution gray ``(H, W)``, uint8 or float32 in [0, 1] (e.g. L* / 100 of
            the native input frame), with ``H >= h`` and ``W >= w``.
        sigma: range sigma in guide units (see ``RANGE_SIGMA``).
        levels: gray levels of the bilateral grid (at least 2).

    Returns:
        float32 ``(H, W, C)``; ``source`` itself (as float32 ``(h, w, C)``) when the sizes are
        equal.
    """
    guide = _check_guide(guide)
    if source.ndim == 2:
        source = source[..., None]
    if source.ndim != 3:
        raise ValueError(f"source must be (h, w) or (h, w, C), got shape {source.shape}")
    source = source.astype(np.float32, copy=False)
    if source.shape[:2] == guide.shape:
        return source
    planes = _bilateral_planes(source, guide, sigma, levels)
    # cv2.merge of a single plane would drop the channel axis.
    return planes[0][..., None] if len(planes) == 1 else cv2.merge(planes)


def _bilateral_planes(
    source: np.ndarray, guide: np.ndarray, sigma: float, levels: int
) -> list[np.ndarray]:
    """``joint_bilateral_upsample`` as a list of C contiguous float32 ``(H, W)`` planes."""
    height, width = guide.shape
    low_height, low_width, channels = source.shape
    if low_height > height or low_width > width:
        raise ValueError(f"source {source.shape[:2]} is larger than the guide {guide.shape}")
    if levels < 2 or sigma <= 0:
        raise ValueError(f"need levels >= 2 and sigma > 0, got {levels} and {sigma}")
    size = (width, height)
    small_guide = cv2.resize(guide, (low_width, low_height), interpolation=cv2.INTER_AREA)
    planes = split_channels(source)
    # Numerators (one per channel) and the denominator, accumulated over the levels. Every
    # array here is a contiguous plane: cv2's per-plane operations are multi-threaded and
    # several times faster than numpy on interleaved channels.
    sums = [np.zeros((height, width), np.float32) for _ in range(channels + 1)]
    position = guide * np.float32(levels - 1)
    lowest, highest = float(position.min()), float(position.max())
    tent = np.empty((height, width), np.float32)
    upsampled = np.empty((height, width), np.float32)
    for level in range(levels):
        if level <= lowest - 1 or level >= highest + 1:
            continue  # no native pixel interpolates from this level
        distance = np.float32(level / (levels - 1)) - small_guide
        weight = np.exp(distance * distance * np.float32(-0.5 / sigma**2))
        # The far tail of the Gaussian holds float32 denormals (exp(-100) and below), which
        # make every later multiply and resize of these planes several times slower on x86;
        # weights that small change nothing next to the fallback term, so they become zeros.
        cv2.threshold(weight, _NEGLIGIBLE_WEIGHT, 0.0, cv2.THRESH_TOZERO, dst=weight)
        # Linear interpolation between levels: the "tent" weight of this level per pixel.
        cv2.absdiff(position, float(level), dst=tent)
        cv2.subtract(1.0, tent, dst=tent)
        cv2.max(tent, 0.0, dst=tent)
        for plane, total in zip([*planes, None], sums, strict=True):
            weighted = weight if plane is None else plane * weight
            cv2.resize(weighted, size, dst=upsampled, interpolation=cv2.INTER_LINEAR)
            cv2.accumulateProduct(upsampled, tent, total)
    denominator = sums[-1]
    denominator += _FALLBACK
    out = []
    for plane, total in zip(planes, sums, strict=False):
        cv2.resize(plane, size, dst=upsampled, interpolation=cv2.INTER_LINEAR)
        cv2.scaleAdd(upsampled, _FALLBACK, total, dst=total)
        out.append(cv2.divide(total, denominator))
    return out


def to_native(
    lab: np.ndarray,
    native: np.ndarray,
    luminance: Luminance = "input",
    sigma: float = RANGE_SIGMA,
    levels: int = RANGE_LEVELS,
    native_l: np.ndarray | None = None,
    divisor: int = EDGE_AWARE_DIVISOR,
) -> np.ndarray:
    """Bring a work-size L*a*b* prediction to the native size of the input frame.

    Args:
        lab: float32 ``(h, w, 3)`` L*a*b* at the work size (after temporal smoothing).
        native: the input frame at its native size, uint8 RGB ``(H, W, 3)`` or gray ``(H, W)``
            (line art or grayscale), ``H >= h``, ``W >= w``. Its L* guides the upsampling and
            provides the output's L*.
        luminance: where the output L* comes from:
            ``input``: the input's L* exactly (``lightness(native)``; grayscale models, which
            predict a*b* only);
            ``darken``: the predicted L*, upsampled with the guide, then ``min`` with the
            input's L*, so every line of the native drawing is at least as dark as drawn
            (line-art models, which predict the whole color); a*b* are scaled down by the
            same ratio, so lines are neutral black rather than a dark fringe of color;
            ``predicted``: the predicted L*, upsampled with the guide.
        sigma, levels: of the joint bilateral upsampling (see ``RANGE_SIGMA``).
        native_l: ``lightness(native)`` when the caller has it already (it costs about 3 ms
            per 1080p line-art frame).
        divisor: the joint bilateral step runs at the native size divided by this (never
            below the work size), and bilinear interpolation does the rest (see
            ``EDGE_AWARE_DIVISOR``); 1 runs it at the native size.

    Returns:
        float32 ``(H, W, 3)`` L*a*b* at the native size. Convert with ``lab_to_rgb``.
    """
    if lab.dtype != np.float32 or lab.ndim != 3 or lab.shape[2] != 3:
        raise ValueError(f"lab must be a float32 (h, w, 3) array, got {lab.dtype} {lab.shape}")
    if luminance not in ("input", "darken", "predicted"):
        raise ValueError(f"luminance must be input, darken or predicted, got {luminance!r}")
    if divisor < 1:
        raise ValueError(f"divisor must be at least 1, got {divisor}")
    native_shape = native.shape[:2]
    if lab.shape[0] > native_shape[0] or lab.shape[1] > native_shape[1]:
        raise ValueError(f"lab {lab.shape[:2]} is larger than the native frame "
                         f"{native_shape}")  # fmt: skip
    same_size = lab.shape[:2] == native_shape
    if same_size and luminance == "predicted":
        # Nothing to upsample and no input L* needed: only L* is kept within 0..100, by
        # per-channel bounds on the interleaved image (no split and merge).
        clamped = cv2.min(lab, (100.0, _NO_BOUND, _NO_BOUND, 0.0))
        return cv2.max(clamped, (0.0, -_NO_BOUND, -_NO_BOUND, 0.0), dst=clamped)
    if native_l is None:
        native_l = lightness(native)
    if luminance == "input":
        if same_size:
            _, a_channel, b_channel = split_channels(lab)
        else:
            a_channel, b_channel = _upsampled_planes(lab[..., 1:], native_l, sigma, levels, divisor)
        return cv2.merge([native_l, a_channel, b_channel])
    if same_size:
        l_channel, a_channel, b_channel = split_channels(lab)
    else:
        l_channel, a_channel, b_channel = _upsampled_planes(lab, native_l, sigma, levels, divisor)
    # The upsampling only averages, but the prediction itself may stray outside 0..100.
    cv2.min(l_channel, 100.0, dst=l_channel)
    cv2.max(l_channel, 0.0, dst=l_channel)
    if luminance == "darken":
        _darken_planes(l_channel, a_channel, b_channel, native_l)
    return cv2.merge([l_channel, a_channel, b_channel])


def _upsampled_planes(
    source: np.ndarray, native_l: np.ndarray, sigma: float, levels: int, divisor: int
) -> list[np.ndarray]:
    """``source`` ``(h, w, C)`` at the size of ``native_l`` ``(H, W)``, as C float32 planes:
    joint bilateral upsampling guided by ``native_l / 100`` at ``(H, W) / divisor``, then
    bilinear."""
    height, width = native_l.shape
    middle = (
        max(source.shape[0], round(height / divisor)),
        max(source.shape[1], round(width / divisor)),
    )
    guide = native_l * np.float32(0.01)
    if middle == (height, width):
        return _bilateral_planes(source, guide, sigma, levels)
    if middle == source.shape[:2]:
        planes = split_channels(source)
    else:
        guide = cv2.resize(guide, middle[::-1], interpolation=cv2.INTER_AREA)
        planes = _bilateral_planes(source, guide, sigma, levels)
    return [cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in planes]


def darken(lab: np.ndarray, native_l: np.ndarray) -> np.ndarray:
    """Draw the input's lines over a predicted L*a*b* image, as ink over paint.

    Args:
        lab: float32 ``(H, W, 3)`` L*a*b* (predicted L*, in 0..100).
        native_l: float32 ``(H, W)`` L* of the input drawing (``lightness``).

    Returns:
        float32 ``(H, W, 3)``, a new array: L* is ``min(predicted, input)``, so every line is
        at least as dark as drawn; a*b* shrink by the same ratio, so a black line is neutral
        rather than a fringe of out-of-gamut color.
    """
    if lab.shape[:2] != native_l.shape:
        raise ValueError(f"lab {lab.shape[:2]} and native_l {native_l.shape} differ in size")
    planes = split_channels(lab)
    _darken_planes(*planes, native_l)
    return cv2.merge(planes)


def _darken_planes(
    l_channel: np.ndarray, a_channel: np.ndarray, b_channel: np.ndarray, native_l: np.ndarray
) -> None:
    """``darken`` in place on contiguous float32 planes (cv2's per-plane arithmetic is several
    times faster than numpy's at 1080p)."""
    darkened = cv2.min(l_channel, native_l)
    factor = cv2.max(l_channel, 1e-3)
    cv2.divide(darkened, factor, dst=factor)
    cv2.multiply(a_channel, factor, dst=a_channel)
    cv2.multiply(b_channel, factor, dst=b_channel)
    np.copyto(l_channel, darkened)
