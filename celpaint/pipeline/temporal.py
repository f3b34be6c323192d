"""Temporal chroma smoothing for clips, and flat fill of line-art regions.

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
an exponential moving average along motion trajectories. For a prediction that flickers around
a steady color with independent noise, strength ``s`` divides the noise variance by
``(1 + s) / (1 - s)`` (9x at 0.8) at the cost of a lag of about ``s / (1 - s)`` frames (4 at 0.8)
when a color really changes inside a shot.

A scene cut (most of the picture's structure unexplained by the previous frame after motion
compensation) resets the state, so colors never cross a cut: the frames after a cut come out
exactly as if they started a clip of their own. By default L* is never touched: the output's
L* is the prediction's, bit for bit (for models that predict a*b* only, that is the input's
L*). Models that predict the whole color from line art also predict the paint's L*, which
flickers like its chroma (on the sample clip three quarters of the warping error of an early
line-art model was L*); ``TemporalParams.lightness`` smooths it too, inside regions only: line
pixels of the input keep the predicted L*, so lines are never smeared.

Colors are CIE L*a*b* (D65) as OpenCV computes it for float32 RGB in [0, 1]: L* 0..100, a* and
b* in their true units (about -110..110 for sRGB colors); see ``celpaint.pipeline.upsample``.

How the defaults were chosen: synthetic cel clips (outlined shapes of random colors moving 0-8
px per frame over a two-color background, 512x288, 6 clips of 12 frames; a second set of 6
adds a textured background and a camera pan of 3 px right and 0.5 px down per frame) with a
noisy oracle for a generator (the true chroma plus, per frame, a smooth random field of std 8
and pixel noise of std 2 in a* and b*). Warping error (``flow.warping_error``) and mean
CIEDE2000 against the truth, without smoothing -> with the defaults::

    static background   5.11e-3 -> 4.9e-4 (-90%)    dE 5.71 -> 2.86
    panning camera      5.33e-3 -> 8.5e-4 (-84%)    dE 5.87 -> 3.35

The sweeps behind each default are in the docstring of ``TemporalParams``.
"""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from celpaint.pipeline.flow import (
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
from celpaint.pipeline.upsample import split_channels

# A guide pixel that changed by at most this (0..255) counts as unchanged: the blurred guide of
# an untouched drawing is identical from frame to frame, and 1 absorbs rounding.
STILL_TOLERANCE = 1
# ... and a pixel is still when its whole (2 * STILL_RADIUS + 1)^2 neighbourhood is unchanged.
STILL_RADIUS = 2
_STILL_KERNEL = np.ones((2 * STILL_RADIUS + 1,) * 2, np.uint8)


@dataclass(frozen=True)
class TemporalParams:
    """Settings of ``TemporalSmoother`` (see the module docstring for the model).

    Figures quoted are (warping error, mean CIEDE2000 against the truth) on the panning
    synthetic clips of the module docstring (no smoothing: 5.33e-3, 5.87; defaults: 8.5e-4,
    3.35), changing one setting from the defaults.

    Attributes:
        strength: the largest weight of the motion-compensated previous chroma
            (``--temporal-strength``), 0 (off) to 1 (colors frozen along the motion). 0.5:
            1.44e-3, 4.01; 0.7: 9.6e-4, 3.51; 0.9: 8.1e-4, 3.31. Above 0.8 the gain is small
            while the lag after a real color change inside a shot, about ``s / (1 - s)``
            frames, doubles (4 frames at 0.8, 9 at 0.9).
        scene_threshold: a frame whose ``flow.scene_change_score`` against the previous frame
            reaches this starts a new shot (``--scene-threshold``), 0..1 (0: every frame).
            Within shots the score stayed at or below 0.105 (line art and grayscale, objects
            moving up to 8 px per frame, pans of 3 and 8 px per frame, 150 pairs); across
            cuts between 100 random pairs of those shots it was 0.215 or more (mean 0.53 for
            line art, 0.69 for grayscale). 0.15 sits in the gap. A whole-frame jump of 40 px
            (8% of the width) in one frame may count as a cut, which only costs smoothing.
        guide: how input frames are prepared for optical flow (``flow.prepare_guide``).
            ``blur`` (sigma 3 px) is the only one that works on pans (gray: 4.93e-3, 5.72,
            i.e. hardly any smoothing, as the unblurred line art makes scene scores jump;
            distance transform: 1.05e-3, 3.81) and also suits grayscale frames.
        preset: DIS preset. ``fast`` (about 2.5 ms per 512x288 flow, two flows per frame):
            ``ultrafast`` 9.5e-4, 3.47 (3 ms per frame less); ``medium`` 7.6e-4, 3.35 (13 ms
            per frame more).
        occlusion_threshold: the forward-backward test (``flow.occlusion_mask``'s ``alpha2``)
            in px^2 at the flow's resolution. DIS's flow on flat paper is arbitrary, and the
            strict 0.5 px^2 of Lai et al. rejects large flat areas where any flow carries the
            right (flat) color: 0.5: 1.25e-3, 3.76; 2: 9.9e-4, 3.56; 16: 8.2e-4, 3.26. 8
            (mismatches up to about 3 px) is past the knee without being lax; the
            input-change test guards the rest.
        change_threshold: change of the guide after motion compensation (0..255) at which the
            trust in the previous chroma has halved: 8: 9.3e-4, 3.37; 48: 8.3e-4, 3.36. The
            synthetic oracle keeps colors steady, so it cannot show the benefit of a low
            value; 24 is about a tenth of the paper-to-line contrast after the guide's blur.
        occlusion_margin: px by which rejected areas are grown, so that a boundary that moved
            slightly differently from the flow does not smear chroma across it. The
            synthetic boundaries are rigid, so it costs a little there (0: 8.3e-4, 3.32; 2:
            8.7e-4, 3.37); 1 is kept as cheap insurance for drawn, deforming outlines.
        flow_size: frames whose long side exceeds this get their flow computed on a copy
            scaled down to it (and scaled back up), which bounds the cost of smoothing at
            large work sizes. At 256 the default work size of 512 gets its flow at half size:
            on 2 CPU cores at 512x288 the smoothing costs 7 ms per frame instead of 12, and
            on the sample clip (shipped line-art model) the warping error drops by 49% instead
            of 55% against no smoothing, mean CIEDE2000 22.34 instead of 22.36 (no
            smoothing: 22.57). The figures quoted above were measured with full-size flow.
        lightness: also smooth L*, except on line pixels of the input (darker than
            ``flow.LINE_THRESHOLD``), which keep the predicted L*. Only for models whose L* is
            a prediction (line art -> RGB); never for a*b* models, whose L* is the input's.
            On the sample clip with an early line-art checkpoint (no smoothing -> chroma only
            -> chroma and L*): warping error -24% / -80%, mean CIEDE2000 18.63 -> 18.21 /
            18.20.
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
    averaging count, and L* with ``lightness``: 17 or 21 bytes per work-size pixel, under 3.2
    MB at 512x288) carries across calls, so a clip may be cut into batches of any size with
    bit-identical results. Call ``reset()`` at the start of every input clip. One smoother
    serves one stream, called from one thread at a time (``process_batch`` may spread its
    motion estimates over threads of its own).

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
                the grayscale frame as the network saw it (``flow.to_gray`` of the input,
                scaled to the work size).
            lab: the generator's prediction for this frame, float32 ``(H, W, 3)`` L*a*b*.

        Returns:
            float32 ``(H, W, 3)``, a new array: a*b* smoothed; ``lab``'s L* unchanged (with
            ``lightness``: smoothed except on line pixels of ``gray``).
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
        """
        if grays.ndim != 3 or labs.ndim != 4 or len(grays) != len(labs):
            raise ValueError(f"expected (B, H, W) gray frames and (B, H, W, 3) L*a*b* frames, got "
                             f"{grays.shape} and {labs.shape}")  # fmt: skip
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


def flat_fill(
    line_art: np.ndarray,
    values: np.ndarray,
    line_threshold: int = LINE_THRESHOLD,
    max_samples: int = 1 << 17,
) -> np.ndarray:
    """Give every closed region of a line drawing one color, as a cel painter would.

    Regions are the 4-connected components of paper pixels (``line_art >= line_threshold``):
    a line of any thickness, even a diagonal one pixel wide, separates them. Each region's
    pixels get the per-channel median of ``values`` over that region (robust to speckle and to
    the blur the generator leaves along lines). Line pixels keep their values. A region left
    open by a gap in its outline merges with its neighbour, as a paint bucket would.

    Args:
        line_art: uint8 ``(H, W)``, dark lines on light paper, at the size of ``values``
            (at the native size the lines are crisp; at the work size thin lines may have
            faded above ``line_threshold`` and regions merge).
        values: float32 ``(H, W, C)``: the chroma a*b* (``C = 2``), or any per-pixel
            channels to flatten.
        line_threshold: gray level below which a pixel is a line.
        max_samples: the medians are taken over a regular grid of about this many pixels,
            which bounds the cost at large sizes (a median over 1/16 of a region's pixels
            differs from the full one by a few hundredths of a unit of a*/b*). Regions the
            grid misses entirely (smaller or thinner than its step) use all their pixels.

    Returns:
        float32 ``(H, W, C)``, a new array.
    """
    if line_art.dtype != np.uint8 or line_art.ndim != 2:
        raise ValueError(f"line_art must be a uint8 (H, W) frame, got {line_art.dtype} "
                         f"{line_art.shape}")  # fmt: skip
    if values.ndim != 3 or values.shape[:2] != line_art.shape:
        raise ValueError(f"values must be (H, W, C) with (H, W) = {line_art.shape}, got "
                         f"{values.shape}")  # fmt: skip
    if max_samples < 1:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    values = values.astype(np.float32, copy=False)
    channels = values.shape[2]
    paper = (line_art >= line_threshold).astype(np.uint8)
    count, labels = cv2.connectedComponents(paper, connectivity=4, ltype=cv2.CV_32S)
    if count <= 1:
        return values.copy()
    height, width = line_art.shape
    step = max(1, int(np.ceil(np.sqrt(height * width / max_samples))))
    medians = np.full((count, channels), np.nan, np.float32)
    _region_medians(
        labels[::step, ::step].ravel(), values[::step, ::step].reshape(-1, channels), medians
    )
    missing = np.isnan(medians[:, 0])
    missing[0] = False
    if missing.any():
        # Regions the grid missed: take their medians from every one of their pixels.
        flat_labels = labels.ravel()
        chosen = missing[flat_labels]
        _region_medians(flat_labels[chosen], values.reshape(-1, channels)[chosen], medians)
    # One gather paints every region; line pixels (label 0) then get their own values back.
    medians[0] = 0.0
    out = np.take(medians, labels, axis=0)
    np.copyto(out, values, where=(labels == 0)[..., None])
    return out


def _region_medians(labels: np.ndarray, values: np.ndarray, medians: np.ndarray) -> None:
    """Write into ``medians[label]`` the per-channel median of ``values`` ``(N, C)`` over the
    entries of each label > 0 in ``labels`` ``(N,)``.

    Sorting by (label, value) puts every region's values in order side by side, so all the
    medians come from one sort per channel instead of one call per region.
    """
    keep = labels > 0
    labels = labels[keep]
    if labels.size == 0:
        return
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    counts = counts[present]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    low = starts + (counts - 1) // 2
    high = starts + counts // 2
    for channel in range(values.shape[1]):
        channel_values = values[keep, channel]
        # Primary key the label, secondary the value: the blocks come in the order of
        # ``present``, each sorted.
        ordered = channel_values[np.lexsort((channel_values, labels))]
        medians[present, channel] = 0.5 * (ordered[low] + ordered[high])
