"""Optical flow between input frames, backward warping, occlusion masks and scene cuts.

Conventions used throughout (all arrays are numpy, ``H x W`` is one frame):

* Guide frames are uint8 gray ``(H, W)``: the *input* frames (line art or grayscale), never
  the colorized output, so that the flow does not depend on what the generator invents.
* A flow ``f`` of shape ``(H, W, 2)`` float32 (x, y displacement in pixels) estimated with
  ``estimate(reference, other)`` tells, for each pixel ``p`` of ``reference``, where the same
  content lies in ``other``: ``other(p + f(p)) ~ reference(p)``. ``warp(other_image, f)`` then
  resamples anything that lives on ``other``'s pixel grid (colors, chroma, another flow) onto
  ``reference``'s grid ("backward warping"; OpenCV's ``calcOpticalFlow*`` convention).
* Occlusion masks are bool ``(H, W)`` on the reference grid, True where the warped value cannot
  be trusted (occluded, disoccluded, on a motion boundary).

Optical flow is OpenCV's DIS (Kroeger et al., "Fast optical flow using dense inverse search",
ECCV 2016), the fastest dense method in opencv-python-headless.

Line art is mostly flat white paper with thin lines: the flow has almost nothing to lock onto
between lines, and a one-pixel line aliased differently in two frames looks like a different
pattern. ``prepare_guide`` can therefore blur the frame, or replace it by the distance to the
nearest line, which spreads each line into a wide ramp the flow can follow.

The temporal warping error of Lai et al. (2018), built on these, is
``celpaint.evaluation.warping``.

Why these defaults: docs/design.md#optical-flow-opsflowpy
"""

from __future__ import annotations

import functools
from typing import Literal

import cv2
import numpy as np

GuideMode = Literal["gray", "blur", "distance"]
Preset = Literal["ultrafast", "fast", "medium"]

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

# Pixels darker than this (0..255) are line pixels in line art.
LINE_THRESHOLD = 128
# Distance (px) at which the distance-transform guide saturates: a ramp this long on each side
# of a line gives the flow gradients to follow well inside regions, while regions wider than
# twice this keep a flat interior (where any flow is as good as any other for flat colors).
DISTANCE_MAX = 24.0
# Gaussian sigma (px) of the blurred guide.
BLUR_SIGMA = 3.0

# The forward-backward consistency test of Sundaram, Brox and Keutzer (ECCV 2010), with the
# constants Lai et al. use for their warping error: a pixel is occluded when
#   |f(p) + g(p + f(p))|^2 > ALPHA1 (|f(p)|^2 + |g(p + f(p))|^2) + ALPHA2
# and on a motion boundary when  |grad f_x|^2 + |grad f_y|^2 > BETA1 |f|^2 + BETA2.
ALPHA1 = 0.01
ALPHA2 = 0.5
BETA1 = 0.01
BETA2 = 0.002


def _check_gray(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(f"{name} must be a uint8 (H, W) gray frame, got {got}")


def _check_flow(flow: np.ndarray, name: str = "flow") -> None:
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.dtype != np.float32:
        raise ValueError(f"{name} must be a float32 (H, W, 2) flow, got {flow.dtype} {flow.shape}")


def prepare_guide(
    gray: np.ndarray,
    mode: GuideMode = "gray",
    blur_sigma: float = BLUR_SIGMA,
    distance_max: float = DISTANCE_MAX,
    line_threshold: int = LINE_THRESHOLD,
) -> np.ndarray:
    """Turn a uint8 gray input frame ``(H, W)`` into the uint8 ``(H, W)`` frame flow runs on.

    Args:
        gray: the input frame (line art: dark lines on light paper; or a grayscale frame).
        mode: ``gray`` uses the frame as it is; ``blur`` smooths it with a Gaussian of
            ``blur_sigma`` px; ``distance`` (line art only) replaces each pixel by its distance
            to the nearest line pixel (darker than ``line_threshold``), saturating at
            ``distance_max`` px and scaled to 0..255, so lines are 0 and paper far from any line
            is 255.
        blur_sigma: Gaussian sigma (px) for ``blur``.
        distance_max: saturation distance (px) for ``distance``.
        line_threshold: gray level (0..255) below which a pixel is a line, for ``distance``.

    Returns:
        uint8 ``(H, W)``: ``gray`` itself for ``gray``, else a new array.

    Raises:
        ValueError: ``gray`` is not a uint8 ``(H, W)`` array, or ``mode`` is unknown.
    """
    _check_gray(gray, "gray")
    if mode == "gray":
        return gray
    if mode == "blur":
        return cv2.GaussianBlur(gray, (0, 0), blur_sigma)
    if mode == "distance":
        paper = (gray >= line_threshold).astype(np.uint8)
        distance = cv2.distanceTransform(paper, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        scaled = np.minimum(distance, distance_max) * np.float32(255.0 / distance_max)
        return (scaled + 0.5).astype(np.uint8)
    raise ValueError(f"unknown guide mode {mode!r}; use gray, blur or distance")


class FlowEstimator:
    """Dense optical flow (OpenCV DIS) between two uint8 gray frames of the same size.

    One estimator holds DIS's scratch buffers: use one per stream and thread.

    Args:
        preset: DIS preset, ``ultrafast``, ``fast`` or ``medium`` (slower, more accurate).

    Raises:
        ValueError: an unknown preset.
    """

    def __init__(self, preset: Preset = "medium"):
        if preset not in _PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; use {', '.join(_PRESETS)}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(_PRESETS[preset])

    def estimate(self, reference: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Flow ``(H, W, 2)`` float32 (px) from ``reference`` to ``other``: ``other(p + f(p)) ~
        reference(p)``. Both are uint8 ``(H, W)`` (see ``prepare_guide``); frames under 16 px
        on a side get a zero flow.

        Raises:
            ValueError: a frame is not uint8 ``(H, W)``, or the two differ in size.
        """
        _check_gray(reference, "reference")
        _check_gray(other, "other")
        if reference.shape != other.shape:
            raise ValueError(f"frames differ in size: {reference.shape} and {other.shape}")
        # DIS needs a few pixels per patch at its coarsest level; tiny frames have no motion
        # worth estimating.
        if min(reference.shape) < 16:
            return np.zeros((*reference.shape, 2), np.float32)
        return self._dis.calc(reference, other, None)


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.broadcast_to(np.arange(width, dtype=np.float32), (height, width))
    ys = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], (height, width))
    return xs, ys


@functools.lru_cache(maxsize=8)
def _grid2(height: int, width: int) -> np.ndarray:
    return np.ascontiguousarray(np.stack(_grid(height, width), axis=-1))


def sampling_positions(flow: np.ndarray) -> np.ndarray:
    """``p + flow(p)`` for every pixel ``p``: float32 ``(H, W, 2)``, the map ``warp`` samples
    at. Compute it once to warp several images along the same flow."""
    _check_flow(flow)
    # One interleaved map: adding the grid to the flow in one contiguous pass is several times
    # cheaper than splitting it into x and y maps, and remap samples the same positions.
    return flow + _grid2(*flow.shape[:2])


def warp(
    image: np.ndarray,
    flow: np.ndarray | None = None,
    interpolation: int = cv2.INTER_LINEAR,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """Backward-warp ``image`` (on the ``other`` grid) onto the reference grid of ``flow``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` with ``C <= 4``, any dtype OpenCV's remap takes
            (uint8, float32).
        flow: ``(H, W, 2)`` float32 from ``FlowEstimator.estimate(reference, other)``.
        positions: ``sampling_positions(flow)``, in place of ``flow``.

    Returns:
        ``image`` resampled at ``p + flow(p)`` (bilinear; positions outside the frame take the
        nearest border pixel), same shape and dtype.
    """
    if (flow is None) == (positions is None):
        raise ValueError("give either flow or positions")
    if positions is None:
        positions = sampling_positions(flow)
    else:
        _check_flow(positions, "positions")
    if image.shape[:2] != positions.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and flow {positions.shape[:2]} differ in size")
    return cv2.remap(image, positions, None, interpolation, borderMode=cv2.BORDER_REPLICATE)


def _squared_norm(vectors: np.ndarray) -> np.ndarray:
    x = vectors[..., 0]
    y = vectors[..., 1]
    return x * x + y * y


def occlusion_mask(
    flow: np.ndarray,
    flow_back: np.ndarray,
    alpha1: float = ALPHA1,
    alpha2: float = ALPHA2,
    motion_boundaries: bool = True,
    outside: bool = False,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels of the reference frame whose warped value is unreliable (bool ``(H, W)``).

    Args:
        flow: reference -> other, ``(H, W, 2)`` float32.
        flow_back: other -> reference, ``(H, W, 2)`` float32 (``estimate(other, reference)``).
        alpha1, alpha2: the forward-backward test (see ``ALPHA1``): the two flows must cancel
            up to ``alpha1`` of their squared length plus ``alpha2`` px^2.
        motion_boundaries: also mark pixels where the flow's gradient is large (the test of
            Lai et al.; DIS produces smooth flows, so this mostly marks object outlines).
        outside: also mark pixels whose match lies outside the other frame (content entering
            the frame has no past). Lai et al.'s metric does not do this; the smoother does.
        positions: ``sampling_positions(flow)`` when the caller has it already.
    """
    _check_flow(flow)
    _check_flow(flow_back, "flow_back")
    if positions is None:
        positions = sampling_positions(flow)
    back = warp(flow_back, positions=positions)
    residual = flow + back
    flow_length = _squared_norm(flow)
    length = _squared_norm(back)
    length += flow_length
    length *= np.float32(alpha1)
    length += np.float32(alpha2)
    occluded = _squared_norm(residual) > length
    if motion_boundaries:
        # Forward differences, as in Lai et al.'s reference implementation.
        gradient = np.zeros(flow.shape[:2], np.float32)
        dx = flow[:, :-1] - flow[:, 1:]
        dy = flow[:-1] - flow[1:]
        gradient[:, :-1] += _squared_norm(dx)
        gradient[:-1] += _squared_norm(dy)
        occluded |= gradient > BETA1 * flow_length + BETA2
    if outside:
        height, width = flow.shape[:2]
        # One pass over the interleaved map: 255 where x in [0, W-1] and y in [0, H-1].
        inside = cv2.inRange(positions, (0.0, 0.0), (width - 1.0, height - 1.0))
        occluded |= inside == 0
    return occluded


def scene_change_score(
    reference: np.ndarray,
    other: np.ndarray,
    flow: np.ndarray,
    positions: np.ndarray | None = None,
) -> float:
    """How badly ``other`` explains ``reference`` after motion compensation: 0 (same shot) to
    1 (unrelated pictures).

    Args:
        reference, other: uint8 ``(H, W)`` guide frames (current and previous).
        flow: ``estimate(reference, other)``.
        positions: ``sampling_positions(flow)`` when the caller has it already.

    The score is the share of the reference frame's *structure* (its gradient energy, so the
    flat paper of line art does not dilute it) lying on pixels where the motion-compensated
    previous frame differs by more than half the local edge contrast. Inside a shot, moving
    drawings leave a few percent unmatched (disocclusions, flow errors); after a cut the flow
    can match little of the new structure. Pixels failing the forward-backward test are not
    counted as unmatched: on flat paper between thin lines the flow is arbitrary and fails it
    in large areas of perfectly ordinary frames, which blurred the separation from cuts.
    """
    _check_gray(reference, "reference")
    _check_gray(other, "other")
    current = reference.astype(np.float32)
    if positions is None:
        positions = sampling_positions(flow)
    warped = warp(other, positions=positions).astype(np.float32)
    gx = cv2.Sobel(current, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(current, cv2.CV_32F, 0, 1, ksize=3)
    structure = cv2.GaussianBlur(cv2.magnitude(gx, gy), (0, 0), 1.5)
    total = float(structure.sum())
    if total <= 1e-3 * structure.size:
        # A blank frame has no structure: a cut into or out of it shows in the mean level.
        return float(min(1.0, abs(current.mean() - warped.mean()) / 64.0))
    # Half the local contrast (the Sobel magnitude is about 4x the step across an edge), plus
    # a few gray levels of slack for noise.
    tolerance = cv2.GaussianBlur(structure, (0, 0), 3.0)
    tolerance *= np.float32(0.125)
    tolerance += np.float32(4.0)
    unmatched = cv2.absdiff(current, warped) > tolerance
    return float(structure[unmatched].sum() / total)


def end_point_error(
    flow: np.ndarray, true_flow: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Mean end-point error (px) between two ``(H, W, 2)`` flows, over ``mask`` (bool) if given."""
    _check_flow(flow)
    _check_flow(true_flow, "true_flow")
    error = np.sqrt(_squared_norm(flow - true_flow))
    return float(error[mask].mean() if mask is not None else error.mean())
