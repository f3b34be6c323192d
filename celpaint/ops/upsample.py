"""Edge-aware upsampling of a work-size L*a*b* prediction to the native size of the input.

The generator runs at a *work size* (the long side, e.g. 512; see ``celpaint.ops.geometry``):
larger frames are scaled down for the network only. Its colors are then brought back to the
native size here:

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
the native size divided by ``EDGE_AWARE_DIVISOR`` and interpolates the rest bilinearly.

Colors are L*a*b* as ``celpaint.color.array`` computes them (OpenCV, float32: L* 0..100, a* b*
in true units).

Why these defaults: docs/design.md#upsampling-to-native-size-opsupsamplepy
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from celpaint.color.array import lightness, split_channels

Luminance = Literal["input", "darken", "predicted"]

# Range sigma of the joint bilateral upsampling, in units of the guide (L* / 100): work-size
# samples whose gray level differs from the native pixel's by 0.1 (10 L*) weigh 0.14 of one at
# the same level. The number of gray levels of the bilateral grid trades time (one resize per
# level and channel) for accuracy on grayscale guides; line art is nearly two-level.
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
# the rest. At half size it costs a quarter, and H.264 / H.265 in 4:2:0 keep chroma at half
# size anyway; the price is a softer fringe of about one native px along the lines.
EDGE_AWARE_DIVISOR = 2


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

    Raises:
        ValueError: wrong shape or dtype, ``source`` larger than ``guide``, ``levels < 2`` or
            ``sigma <= 0``.
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
        native_l: float32 ``(H, W)``, ``lightness(native)`` when the caller has it already
            (saves computing it again).
        divisor: the joint bilateral step runs at the native size divided by this (never
            below the work size), and bilinear interpolation does the rest (see
            ``EDGE_AWARE_DIVISOR``); 1 runs it at the native size.

    Returns:
        float32 ``(H, W, 3)`` L*a*b* at the native size. Convert with
        ``celpaint.color.array.lab_to_rgb``.

    Raises:
        ValueError: ``lab`` not float32 ``(h, w, 3)`` or larger than ``native``, an unknown
            ``luminance``, or ``divisor < 1``.
    """
    if lab.dtype != np.float32 or lab.ndim != 3 or lab.shape[2] != 3:
        raise ValueError(f"lab must be a float32 (h, w, 3) array, got {lab.dtype} {lab.shape}")
    if luminance not in ("input", "darken", "predicted"):
        raise ValueError(f"luminance must be input, darken or predicted, got {luminance!r}")
    if divisor < 1:
        raise ValueError(f"divisor must be at least 1, got {divisor}")
    native_shape = native.shape[:2]
    if lab.shape[0] > native_shape[0] or lab.shape[1] > native_shape[1]:
        raise ValueError(f"lab {lab.shape[:2]} is larger than the native frame {native_shape}")
    same_size = lab.shape[:2] == native_shape
    if same_size and luminance == "predicted":
        # Nothing to upsample and no input L* needed: only L* is kept within 0..100, by
        # per-channel bounds on the interleaved image (no split and merge).
        if lab.shape[0] * lab.shape[1] == 1:
            # OpenCV reads a 1x1 three-channel image as a scalar: clamp it with numpy.
            clamped = lab.copy()
            np.clip(clamped[..., 0], 0.0, 100.0, out=clamped[..., 0])
            return clamped
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

    Raises:
        ValueError: ``lab`` and ``native_l`` differ in size.
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
