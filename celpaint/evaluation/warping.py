"""Temporal stability: the warping error of Lai et al. 2018 (ECCV).

The flow comes from the input frames (``celpaint.ops.flow``), occlusions from a forward-backward
test; the error is the masked mean squared difference between each output frame and the
previous one warped onto it, RGB in ``[0, 1]`` (or any float channels, such as the a*b* of
``ab_channels``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from celpaint.color.array import rgb_to_lab, to_gray
from celpaint.ops.flow import FlowEstimator, GuideMode, Preset, occlusion_mask, prepare_guide, warp

# a* and b* of saturated sRGB colors reach about +-100: this brings them to about -1..1, near
# the scale of RGB in [0, 1], so the two errors read alike.
AB_SCALE = 1 / 100


def ab_channels(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` -> float32 ``(H, W, 2)``: its a*, b* (``rgb_to_lab``) / 100.

    What ``WarpingError`` measures for the stability of the colors alone: a frame whose
    lightness flickers but whose hues stay put has a small a*b* error.
    """
    lab = rgb_to_lab(rgb)
    return np.ascontiguousarray(lab[..., 1:]) * np.float32(AB_SCALE)


class WarpingError:
    """Streaming temporal warping error (Lai et al., "Learning Blind Video Temporal
    Consistency", ECCV 2018), for one or more outputs of the same input clip.

    For each consecutive pair ``(t-1, t)``: the flow from frame ``t`` to ``t-1`` and back is
    computed on the *input* frames; pixels failing the forward-backward or motion-boundary test
    are masked out; ``E_t = sum_p M(p) |O_t(p) - warp(O_{t-1})(p)|^2 / (C sum_p M(p))`` with RGB
    in [0, 1] (the mean over unmasked pixels and the ``C`` = 3 channels, as in the authors'
    code). Outputs may also be float32 with any number of channels, such as ``ab_channels``
    (``C`` = 2). The clip's error is the mean over pairs.

    Call ``add(input_frame, output_1, output_2, ...)`` once per frame in order; frames are kept
    only until the next call, so memory does not grow with the clip.

    Args:
        streams: how many outputs are measured together (e.g. 2: the colorized clip and the
            ground truth) - they share one flow per pair.
        preset: DIS preset; ``medium`` because accuracy matters more than speed here.
        guide: how input frames are prepared for flow (see ``prepare_guide``).
    """

    def __init__(self, streams: int = 1, preset: Preset = "medium", guide: GuideMode = "blur"):
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        self.streams = streams
        self.guide = guide
        self._flow = FlowEstimator(preset)
        self.per_pair: list[list[float]] = [[] for _ in range(streams)]
        self._previous: tuple[np.ndarray, list[np.ndarray]] | None = None

    def reset(self) -> None:
        """Start a new clip (keeps nothing from the previous one)."""
        self.per_pair = [[] for _ in range(self.streams)]
        self._previous = None

    @staticmethod
    def _to_unit(frame: np.ndarray) -> np.ndarray:
        if frame.dtype == np.float32 and frame.ndim == 3:
            return frame
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"output frames must be (H, W, 3) RGB, got shape {frame.shape}")
        if frame.dtype == np.uint8:
            return frame.astype(np.float32) * np.float32(1 / 255)
        raise ValueError(f"output frames must be uint8 or float32 in [0, 1], got {frame.dtype}")

    def add(self, input_frame: np.ndarray, *outputs: np.ndarray) -> list[float] | None:
        """Add frame ``t``: the input (uint8 RGB ``(H, W, 3)`` or gray ``(H, W)``) and one
        output per stream (uint8 RGB ``(H, W, 3)``, or float32 ``(H, W, C)``: RGB in [0, 1]
        or other channels, the same ``C`` throughout a stream).

        Returns the pair errors ``E_t`` (one per stream), or None for the first frame.

        Raises:
            ValueError: the wrong number of outputs, a frame of the wrong dtype or shape, or a
                frame size that differs from the input's or changes within the clip.
        """
        if len(outputs) != self.streams:
            raise ValueError(f"expected {self.streams} output frame(s), got {len(outputs)}")
        guide = prepare_guide(to_gray(input_frame), self.guide)
        frames = [self._to_unit(output) for output in outputs]
        for frame in frames:
            if frame.shape[:2] != guide.shape:
                raise ValueError(
                    f"output frame {frame.shape[:2]} and input frame {guide.shape} differ in "
                    "size; the warping error needs them aligned"
                )
        errors = None
        if self._previous is not None:
            previous_guide, previous_frames = self._previous
            if previous_guide.shape != guide.shape:
                raise ValueError("frame size changed in the middle of a clip")
            flow = self._flow.estimate(guide, previous_guide)
            flow_back = self._flow.estimate(previous_guide, guide)
            valid = ~occlusion_mask(flow, flow_back)
            count = int(valid.sum())
            errors = []
            for stream, (frame, previous) in enumerate(zip(frames, previous_frames, strict=True)):
                if previous.shape != frame.shape:
                    raise ValueError(
                        f"stream {stream} changed from {previous.shape} to {frame.shape} frames"
                    )
                channels = frame.shape[2]
                difference = frame - warp(previous, flow)
                squared = (difference * difference).sum(axis=2)
                # No trusted pixel at all (a cut): the mask is empty, and the authors fall back
                # to the whole frame.
                error = (
                    float(squared[valid].sum() / (channels * count))
                    if count
                    else float(squared.mean() / channels)
                )
                self.per_pair[stream].append(error)
                errors.append(error)
        self._previous = (guide, frames)
        return errors

    def means(self) -> list[float]:
        """Mean pair error per stream (NaN for a clip of fewer than two frames)."""
        return [float(np.mean(pairs)) if pairs else float("nan") for pairs in self.per_pair]


def warping_error(
    outputs: Iterable[np.ndarray],
    inputs: Iterable[np.ndarray],
    preset: Preset = "medium",
    guide: GuideMode = "blur",
) -> tuple[list[float], float]:
    """Temporal warping error of ``outputs`` (see ``WarpingError``), flow from ``inputs``.

    Args:
        outputs: output frames in order, uint8 RGB ``(H, W, 3)`` (or float32 in [0, 1]).
        inputs: the matching input frames, uint8 RGB ``(H, W, 3)`` or gray ``(H, W)``.

    Returns:
        ``(per_pair, mean)``: one error per consecutive pair (``len(frames) - 1`` values) and
        their mean (NaN for fewer than two frames). Lower is more stable; 0 for a static clip.

    Raises:
        ValueError: as ``WarpingError.add``, or the two iterables differ in length.
    """
    meter = WarpingError(1, preset, guide)
    outputs = iter(outputs)
    for input_frame in inputs:
        try:
            output = next(outputs)
        except StopIteration:
            raise ValueError("fewer output frames than input frames") from None
        meter.add(input_frame, output)
    if next(outputs, None) is not None:
        raise ValueError("more output frames than input frames")
    return meter.per_pair[0], meter.means()[0]
