"""Temporal chroma smoothing for clips: motion-compensated averaging of a*b* (and L*).

A generator colorizes each frame on its own, so the colors of a region drift and flicker from
one frame to the next. ``TemporalSmoother`` keeps the chroma (a*, b*) it returned for the
previous frame, moves it along the motion of the *input* frames onto the new frame, and blends
it with the new prediction::

    ab_t = w * warp(ab_{t-1}) + (1 - w) * prediction_t,
    w    = min(strength, n / (n + 1)) * trust

``trust`` is 1 where the motion is reliable and falls to 0 where it is not: where the forward
and the backward flow disagree (occlusions, disocclusions), where the match falls outside the
frame, and where the input itself differs after motion compensation (a line drawn, a shadow
appearing). There the new prediction is taken as it is. ``n`` is how many frames the warped
chroma already averages (carried along the motion with it): the first frames of a trajectory
are averaged with equal weights, after which ``strength`` caps the weight, so the smoothing is
an exponential moving average along motion trajectories. For independent noise around a steady
color, strength ``s`` divides the noise variance by ``(1 + s) / (1 - s)`` at the cost of a lag
of about ``s / (1 - s)`` frames when a color really changes inside a shot.

A scene cut (most of the picture's structure unexplained by the previous frame after motion
compensation) resets the state, so colors never cross a cut: the frames after a cut come out
exactly as if they started a clip of their own. By default L* is never touched: the output's
L* is the prediction's, bit for bit (for models that predict a*b* only, that is the input's
L*). Models that predict the whole color from line art also predict the paint's L*, which
flickers like its chroma; ``TemporalParams.lightness`` smooths it too, inside regions only:
line pixels of the input keep the predicted L*, so lines are never smeared.

Colors are CIE L*a*b* (D65) as ``celpaint.color.array.rgb_to_lab`` computes it (OpenCV, float32
RGB in [0, 1]): L* 0..100, a* and b* in their true units (about -110..110 for sRGB colors).

Why these defaults: docs/design.md#temporal-smoothing-opstemporalpy
"""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from celpaint.color.array import split_channels
from celpaint.ops.flow import (
    LINE_THRESHOLD,
    FlowEstimator,
    GuideMode,
    Preset,
    occlusion_mask,
    prepare_guide,
    sampling_positions,
    scene_change_score,
    warp,
)

# A guide pixel that changed by at most this (0..255) counts as unchanged: the blurred guide of
# an untouched drawing is identical from frame to frame, and 1 absorbs rounding.
STILL_TOLERANCE = 1
# ... and a pixel is still when its whole (2 * STILL_RADIUS + 1)^2 neighbourhood is unchanged.
STILL_RADIUS = 2
_STILL_KERNEL = np.ones((2 * STILL_RADIUS + 1,) * 2, np.uint8)


@dataclass(frozen=True)
class TemporalParams:
    """Settings of ``TemporalSmoother`` (see the module docstring for the model).

    Why these defaults (the sweep behind each): docs/design.md#temporal-smoothing-opstemporalpy

    Attributes:
        strength: the largest weight of the motion-compensated previous chroma
            (``--temporal-strength``), 0 (off) to 1 (colors frozen along the motion). Higher
            smooths more and lags longer after a real color change inside a shot (about
            ``s / (1 - s)`` frames).
        scene_threshold: a frame whose ``flow.scene_change_score`` against the previous frame
            reaches this starts a new shot (``--scene-threshold``), 0..1 (0: every frame).
        guide: how input frames are prepared for optical flow (``flow.prepare_guide``):
            ``gray``, ``blur`` or ``distance``.
        preset: DIS preset of the flow (``flow.FlowEstimator``): ``ultrafast``, ``fast`` or
            ``medium``; two flows per frame.
        occlusion_threshold: the forward-backward test (``flow.occlusion_mask``'s ``alpha2``)
            in px^2 at the flow's resolution, >= 0; larger trusts more of the flow.
        change_threshold: change of the guide after motion compensation (0..255) at which the
            trust in the previous chroma has halved; > 0.
        occlusion_margin: px (>= 0) by which rejected areas are grown, so that a boundary that
            moved slightly differently from the flow does not smear chroma across it.
        flow_size: frames whose long side exceeds this (px, >= 32) get their flow computed on
            a copy scaled down to it (and scaled back up), which bounds the cost of smoothing
            at large work sizes.
        lightness: also smooth L*, except on line pixels of the input (darker than
            ``flow.LINE_THRESHOLD``), which keep the predicted L*. Only for models whose L* is
            a prediction (line art -> RGB); never for a*b* models, whose L* is the input's.

    Raises:
        ValueError: a setting outside its range (on construction).
    """

    strength: float = 0.8
    scene_threshold: float = 0.15
    guide: GuideMode = "blur"
    preset: Preset = "fast"
    occlusion_threshold: float = 8.0
    change_threshold: float = 24.0
    occlusion_margin: int = 1
    flow_size: int = 256
    lightness: bool = False

    def __post_init__(self):
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be within 0..1, got {self.strength}")
        if not 0.0 <= self.scene_threshold <= 1.0:
            raise ValueError(f"scene_threshold must be within 0..1, got {self.scene_threshold}")
        if self.occlusion_threshold < 0:
            raise ValueError(f"occlusion_threshold must be >= 0, got {self.occlusion_threshold}")
        if self.change_threshold <= 0:
            raise ValueError(f"change_threshold must be positive, got {self.change_threshold}")
        if self.occlusion_margin < 0:
            raise ValueError(f"occlusion_margin must be >= 0, got {self.occlusion_margin}")
        if self.flow_size < 32:
            raise ValueError(f"flow_size must be at least 32, got {self.flow_size}")


class _Guide(NamedTuple):
    """A frame as the motion estimates see it: the guide at the work size, and at flow size."""

    full: np.ndarray  # uint8 (H, W)
    small: np.ndarray  # uint8, long side at most ``flow_size`` (``full`` itself if it fits)


@dataclass
class _Motion:
    flow: np.ndarray  # float32 (H, W, 2): current -> previous frame
    occluded: np.ndarray  # bool (H, W)
    score: float


class TemporalSmoother:
    """Streaming, motion-compensated smoothing of the chroma of a clip, frame by frame.

    Feed frames in order with ``process``. The state (the previous frame's guide, chroma and
    averaging count, and L* with ``lightness``, all at the work size) carries across calls, so
    a clip may be cut into batches of any size with bit-identical results. Call ``reset()`` at
    the start of every input clip. One smoother serves one stream, called from one thread at a
    time (``process_batch`` may spread its motion estimates over threads of its own).

    Args:
        params: the settings; ``TemporalParams()`` gives the documented defaults.

    Attributes:
        last_cut: True when the last processed frame started a new shot (the first frame after
            ``reset``, a detected cut, a change of frame size), so it was returned unchanged.
        last_score: the scene-change score of the last frame against the one before it, NaN
            when there was none to compare with.
    """

    def __init__(self, params: TemporalParams | None = None):
        self.params = params or TemporalParams()
        # DIS keeps scratch buffers: one estimator per thread (see ``process_batch``).
        self._estimators = threading.local()
        # float32 (H, W, 4): a*, b*, averaging count, guide of the previous frame (warped
        # together by one remap); the guide also as uint8, as the flow takes it.
        self._state: np.ndarray | None = None
        self._guide: _Guide | None = None
        margin = 2 * self.params.occlusion_margin + 1
        self._margin_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (margin, margin))
        # float32 (H, W): its L*, with ``lightness``.
        self._lightness: np.ndarray | None = None
        self.last_cut = True
        self.last_score = float("nan")

    def reset(self) -> None:
        """Forget the previous frame: the next frame starts a new shot."""
        self._state = None
        self._guide = None
        self._lightness = None
        self.last_cut = True
        self.last_score = float("nan")

    def process(self, gray: np.ndarray, lab: np.ndarray) -> np.ndarray:
        """Smooth one frame.

        Args:
            gray: the *input* frame at the size of ``lab``, uint8 ``(H, W)``: the line art or
                the grayscale frame as the network saw it (``celpaint.color.array.to_gray``
                of the input, scaled to the work size).
            lab: the generator's prediction for this frame, float32 ``(H, W, 3)`` L*a*b*.

        Returns:
            float32 ``(H, W, 3)``, a new array: a*b* smoothed; ``lab``'s L* unchanged (with
            ``lightness``: smoothed except on line pixels of ``gray``).

        Raises:
            ValueError: wrong dtype or shape, or ``gray`` and ``lab`` differ in size.
        """
        self._check(gray, lab)
        return self._process(gray, lab, self._guide_of(gray))

    def _guide_of(self, gray: np.ndarray) -> _Guide:
        guide = prepare_guide(gray, self.params.guide)
        height, width = guide.shape
        scale = self.params.flow_size / max(height, width)
        if scale >= 1.0:
            return _Guide(guide, guide)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return _Guide(guide, cv2.resize(guide, size, interpolation=cv2.INTER_AREA))

    @staticmethod
    def _check(gray: np.ndarray, lab: np.ndarray) -> None:
        if gray.dtype != np.uint8 or gray.ndim != 2:
            raise ValueError(f"gray must be a uint8 (H, W) frame, got {gray.dtype} {gray.shape}")
        if lab.dtype != np.float32 or lab.ndim != 3 or lab.shape[2] != 3:
            raise ValueError(f"lab must be a float32 (H, W, 3) array, got {lab.dtype} {lab.shape}")
        if lab.shape[:2] != gray.shape:
            raise ValueError(f"gray {gray.shape} and lab {lab.shape[:2]} differ in size")

    def _follows(self, guide: _Guide, previous_guide: _Guide | None) -> bool:
        """Whether a frame with ``guide`` is blended with the frame before it (whose guide is
        ``previous_guide``, None at the start) rather than taken as it is."""
        return (
            previous_guide is not None
            and previous_guide.full.shape == guide.full.shape
            and self.params.strength > 0
        )

    def _process(
        self, gray: np.ndarray, lab: np.ndarray, guide: _Guide, motion: _Motion | None = None
    ) -> np.ndarray:
        """``process`` with the frame's guide, and its motion when already estimated."""
        params = self.params
        # Contiguous planes: the arithmetic below is several times faster than on strided views,
        # and split/merge copy L* bit for bit.
        l_channel, a_channel, b_channel = split_channels(lab)
        count = None
        previous = self._state
        self.last_cut = True
        self.last_score = float("nan")
        guide_values = guide.full.astype(np.float32)
        if self._follows(guide, self._guide):
            if motion is None:
                motion = self._motion(guide, self._guide)
            self.last_score = motion.score
            if motion.score < params.scene_threshold:
                self.last_cut = False
                a_channel, b_channel, l_channel, count = self._blend(
                    gray, guide_values, l_channel, a_channel, b_channel, previous, motion
                )
        if count is None:
            count = np.ones(gray.shape, np.float32)
        self._state = cv2.merge([a_channel, b_channel, count, guide_values])
        self._guide = guide
        self._lightness = l_channel if params.lightness else None
        return cv2.merge([l_channel, a_channel, b_channel])

    def process_batch(self, grays: np.ndarray, labs: np.ndarray, workers: int = 1) -> np.ndarray:
        """``process`` each frame of a batch in order: uint8 ``(B, H, W)`` and float32
        ``(B, H, W, 3)`` -> float32 ``(B, H, W, 3)``. The same as one call per frame.

        With ``workers`` > 1 the motion between each frame and the one before it (optical
        flow both ways, occlusions, scene score: most of the cost) is estimated on that many
        threads at once, since it depends on the input frames alone; only the blending, which
        carries the state, goes frame after frame. The result is the same.

        Raises:
            ValueError: wrong dtype or shape, or batches of different lengths or frame sizes.
        """
        if grays.ndim != 3 or labs.ndim != 4 or len(grays) != len(labs):
            raise ValueError(
                f"expected (B, H, W) gray frames and (B, H, W, 3) L*a*b* frames, got "
                f"{grays.shape} and {labs.shape}"
            )
        out = np.empty_like(labs)
        if workers <= 1 or len(grays) < 2:
            for index, (gray, lab) in enumerate(zip(grays, labs, strict=True)):
                out[index] = self.process(gray, lab)
            return out
        for gray, lab in zip(grays, labs, strict=True):
            self._check(gray, lab)

        def motion(index: int) -> _Motion | None:
            if not self._follows(guides[index], previous[index]):
                return None
            return self._motion(guides[index], previous[index])

        with concurrent.futures.ThreadPoolExecutor(workers, "celpaint-motion") as pool:
            guides = list(pool.map(self._guide_of, grays))
            previous = [self._guide, *guides[:-1]]
            motions = list(pool.map(motion, range(len(grays))))
        for index, (gray, lab) in enumerate(zip(grays, labs, strict=True)):
            out[index] = self._process(gray, lab, guides[index], motions[index])
        return out

    def scene_cuts(self, grays: np.ndarray, workers: int = 1) -> list[int]:
        """The frames of a clip that start a new shot, as ``process`` finds them: indices
        (> 0) into ``grays`` (uint8 ``(T, H, W)`` input frames), whose scene-change score
        against the frame before reaches ``scene_threshold``. The smoother's state is not
        used or changed; ``workers`` threads score the pairs (the same result)."""

        def cut(index: int) -> bool:
            current, previous = guides[index].small, guides[index - 1].small
            if current.shape != previous.shape:
                return True
            estimator = getattr(self._estimators, "cuts", None)
            if estimator is None:
                estimator = self._estimators.cuts = FlowEstimator(self.params.preset)
            flow = estimator.estimate(current, previous)
            return scene_change_score(current, previous, flow) >= self.params.scene_threshold

        with concurrent.futures.ThreadPoolExecutor(max(1, workers), "celpaint-cuts") as pool:
            guides = list(pool.map(self._guide_of, grays))
            found = list(pool.map(cut, range(1, len(guides))))
        return [index for index, is_cut in enumerate(found, start=1) if is_cut]

    def _motion(self, current: _Guide, previous: _Guide) -> _Motion:
        """Flow current -> previous, its unreliable pixels and the scene-change score."""
        params = self.params
        height, width = current.full.shape
        scale = min(1.0, params.flow_size / max(height, width))
        guide, previous_guide = current.small, previous.small
        estimator = getattr(self._estimators, "flow", None)
        if estimator is None:
            estimator = self._estimators.flow = FlowEstimator(params.preset)
        flow = estimator.estimate(guide, previous_guide)
        flow_back = estimator.estimate(previous_guide, guide)
        # One sampling map for the occlusion test, the scene score and their warps.
        positions = sampling_positions(flow)
        occluded = occlusion_mask(
            flow,
            flow_back,
            alpha2=params.occlusion_threshold * scale * scale,
            motion_boundaries=False,
            outside=True,
            positions=positions,
        )
        score = scene_change_score(guide, previous_guide, flow, positions)
        if scale < 1.0:
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
            flow *= np.float32(1.0 / scale)
            occluded = cv2.resize(
                occluded.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
            ).view(bool)
        # Where the input has not changed around a pixel, nothing moved there: DIS's sub-pixel
        # noise (about 0.1 px) would otherwise resample the sharp chroma edges of a static
        # background every frame and slowly blur them.
        moving = self._moving(current.full, previous.full)
        # A multiply by 0/1 is several times faster than a masked copy of the 2-channel flow
        # (the -0.0 it leaves where the flow was negative moves nothing either).
        np.multiply(flow, moving.astype(np.float32)[..., None], out=flow)
        occluded &= moving.view(bool)
        return _Motion(flow, occluded, score)

    @staticmethod
    def _moving(guide: np.ndarray, previous_guide: np.ndarray) -> np.ndarray:
        """uint8 ``(H, W)``: 1 where the guide changed within ``STILL_RADIUS`` of a pixel,
        0 where its whole neighbourhood is still."""
        changed = (cv2.absdiff(guide, previous_guide) > STILL_TOLERANCE).view(np.uint8)
        return cv2.dilate(changed, _STILL_KERNEL)

    def _blend(
        self,
        gray: np.ndarray,
        guide_values: np.ndarray,
        l_channel: np.ndarray,
        a_channel: np.ndarray,
        b_channel: np.ndarray,
        previous: np.ndarray,
        motion: _Motion,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Blend the warped previous colors into a*, b* (and L*); returns (a*, b*, L*,
        averaging count)."""
        params = self.params
        occluded = motion.occluded
        if params.occlusion_margin:
            occluded = cv2.dilate(occluded.view(np.uint8), self._margin_kernel).view(bool)
        # One remap moves the colors, their count and the guide together; L* (with
        # ``lightness``) reuses its sampling positions.
        positions = sampling_positions(motion.flow)
        previous_a, previous_b, previous_count, previous_guide = split_channels(
            warp(previous, positions=positions)
        )
        # Where the input differs after motion compensation, the old chroma belongs to
        # something else: a Cauchy falloff, 1/2 at change_threshold.
        change = guide_values - previous_guide
        change *= np.float32(1.0 / params.change_threshold)
        change *= change
        change += 1.0
        # Early in a trajectory, averaging the n frames seen so far equally beats the fixed
        # weight (less noise in the first frames of every shot).
        np.maximum(previous_count, 1.0, out=previous_count)
        weight = previous_count / (previous_count + 1.0)
        np.minimum(weight, np.float32(params.strength), out=weight)
        trust = weight / change
        np.copyto(trust, 0.0, where=occluded)
        # x + trust * (previous - x) == trust * previous + (1 - trust) * x
        previous_a -= a_channel
        previous_a *= trust
        previous_a += a_channel
        previous_b -= b_channel
        previous_b *= trust
        previous_b += b_channel
        if params.lightness:
            # Lines keep the predicted L*: averaging a line with the paint a flow error put
            # under it would leave a ghost.
            previous_l = warp(self._lightness, positions=positions)
            previous_l -= l_channel
            previous_l *= trust
            np.copyto(previous_l, 0.0, where=gray < LINE_THRESHOLD)
            l_channel = l_channel + previous_l
        # Effective number of frames averaged (independent noise): 1 / sum of squared weights.
        keep = 1.0 - trust
        keep *= keep
        trust *= trust
        trust /= previous_count
        trust += keep
        return previous_a, previous_b, l_channel, np.reciprocal(trust, out=trust)
