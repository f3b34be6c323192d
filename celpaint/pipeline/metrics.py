"""Image quality metrics for colorization, and the frame-by-frame comparison of two sources.

Every metric takes two uint8 RGB arrays of shape ``(H, W, 3)`` (prediction, ground truth) and
uses scikit-image's implementations:

* ``psnr``: peak signal-to-noise ratio in dB over the 8-bit RGB values (``inf`` for identical
  images), ``skimage.metrics.peak_signal_noise_ratio``.
* ``ssim``: structural similarity over the RGB channels (7x7 windows, 1.0 for identical
  images), ``skimage.metrics.structural_similarity``.
* ``ciede2000``: mean CIEDE2000 color difference Delta E (0 for identical images) between the
  images in CIE L*a*b* (D65), ``skimage.color.rgb2lab`` and ``deltaE_ciede2000``.
* ``pixel_accuracy``: the accuracy of Nazeri et al. (arXiv 1803.05400): the share of pixels
  whose L*, a* and b* all lie within ``threshold`` of the ground truth. The threshold is a
  fraction of each channel's range (L*: 100, a* and b*: 255, i.e. -128..127), 5% by default.

For clips, ``evaluate`` also measures temporal stability when given the input clip: the
warping error of Lai et al. 2018 (``celpaint.pipeline.flow.WarpingError``: flow on the input
frames, forward-backward occlusion mask, masked mean squared difference between each output
frame and the previous one warped onto it, RGB in [0, 1]), for the prediction and for the
ground truth, whose error is the floor a perfect colorization would reach.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from celpaint.errors import InputError

DEFAULT_THRESHOLD = 0.05
METRIC_NAMES = ("psnr", "ssim", "ciede2000", "accuracy")
# Full ranges of L* and of a*/b*, against which the accuracy threshold is a fraction.
_LAB_RANGES = np.array([100.0, 255.0, 255.0])


def _check_pair(prediction: np.ndarray, target: np.ndarray) -> None:
    for name, image in (("prediction", prediction), ("target", target)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name} must be a uint8 (H, W, 3) array, got {image.dtype} "
                             f"{image.shape}")  # fmt: skip
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in size")


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB between two uint8 RGB images; ``inf`` when they are identical."""
    _check_pair(prediction, target)
    if np.array_equal(prediction, target):
        # skimage would divide by zero (and warn) to reach the same answer.
        return math.inf
    return float(peak_signal_noise_ratio(target, prediction, data_range=255))


def ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM over the RGB channels of two uint8 images (1.0 when identical).

    The window is 7x7, or the largest odd size that fits images smaller than that.
    """
    _check_pair(prediction, target)
    side = min(prediction.shape[:2])
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {prediction.shape[:2]}")
    window = min(7, side if side % 2 else side - 1)
    return float(
        structural_similarity(target, prediction, data_range=255, channel_axis=2, win_size=window)
    )


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` to float64 CIE L*a*b* ``(H, W, 3)`` (D65; L* in 0..100)."""
    return rgb2lab(rgb)


def ciede2000(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean CIEDE2000 Delta E between two uint8 RGB images (0 when identical)."""
    _check_pair(prediction, target)
    return _ciede2000(to_lab(prediction), to_lab(target))


def _ciede2000(lab_prediction: np.ndarray, lab_target: np.ndarray) -> float:
    return float(deltaE_ciede2000(lab_target, lab_prediction, channel_axis=-1).mean())


def pixel_accuracy(
    prediction: np.ndarray, target: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> float:
    """Share (0..1) of pixels whose L*, a*, b* are all within ``threshold`` of the target.

    Args:
        threshold: fraction of each channel's range (L*: 100, a*/b*: 255); 0.05 means within
            5 L* units and 12.75 a*/b* units.
    """
    _check_pair(prediction, target)
    return _accuracy(to_lab(prediction), to_lab(target), threshold)


def _accuracy(lab_prediction: np.ndarray, lab_target: np.ndarray, threshold: float) -> float:
    if threshold < 0:
        raise ValueError(f"the accuracy threshold must not be negative, got {threshold}")
    close = np.abs(lab_prediction - lab_target) <= threshold * _LAB_RANGES
    return float(close.all(axis=-1).mean())


def frame_metrics(
    prediction: np.ndarray, target: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float]:
    """All four metrics for one pair of uint8 RGB frames (L*a*b* computed once).

    Returns:
        ``{"psnr", "ssim", "ciede2000", "accuracy"}``.
    """
    _check_pair(prediction, target)
    lab_prediction, lab_target = to_lab(prediction), to_lab(target)
    return {
        "psnr": psnr(prediction, target),
        "ssim": ssim(prediction, target),
        "ciede2000": _ciede2000(lab_prediction, lab_target),
        "accuracy": _accuracy(lab_prediction, lab_target, threshold),
    }


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over frames (PSNR is ``inf`` if any frame's is)."""
    if not rows:
        return {}
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


def json_safe(value):
    """Replace infinities (identical frames' PSNR) by the string ``"inf"`` for strict JSON."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass
class Evaluation:
    """Per-frame and mean metrics of a prediction against its ground truth.

    Attributes:
        frames: one dict per frame: ``name`` plus the metrics of ``METRIC_NAMES``.
        mean: the mean of each metric over the frames.
        threshold: the accuracy threshold used.
    """

    prediction: Path
    ground_truth: Path
    threshold: float
    frames: list[dict] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    input: Path | None = None
    warping_error: dict[str, float] | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict (infinite PSNR written as ``"inf"``, NaN as null)."""
        data = {
            "prediction": str(self.prediction),
            "ground_truth": str(self.ground_truth),
            "accuracy_threshold": self.threshold,
            "frame_count": len(self.frames),
            "mean": self.mean,
            "frames": self.frames,
        }
        if self.warping_error is not None:
            data["input"] = str(self.input)
            data["warping_error"] = self.warping_error
        return json_safe(data)


def evaluate(
    prediction: str | os.PathLike,
    ground_truth: str | os.PathLike,
    threshold: float = DEFAULT_THRESHOLD,
    ffmpeg: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    input: str | os.PathLike | None = None,
) -> Evaluation:
    """Compare two clips, frame folders or images frame by frame.

    Args:
        prediction, ground_truth: videos, frame folders or single images (any mix).
        threshold: accuracy threshold (see ``pixel_accuracy``).
        ffmpeg: ffmpeg binary for video inputs.
        progress: called as ``progress(frames_done, frame_count)`` after each frame
            (``frame_count`` may be an estimate for video).
        input: the clip that was colorized (same frame count and size); when given, each
            frame row gains ``warping_error`` (the pair ending at that frame; None for the
            first) and ``warping_error_truth``, and ``Evaluation.warping_error`` holds the
            means ``{"prediction", "ground_truth"}``.

    Raises:
        InputError: a source is missing or unreadable, the frame counts differ, or a pair of
            frames differs in size.
    """
    from celpaint.pipeline.flow import WarpingError
    from celpaint.pipeline.sources import open_source

    if threshold < 0:
        raise InputError(f"--threshold must not be negative, got {threshold}")
    result = Evaluation(Path(prediction), Path(ground_truth), threshold)
    with contextlib.ExitStack() as stack:
        predicted = stack.enter_context(open_source(prediction, ffmpeg))
        truth = stack.enter_context(open_source(ground_truth, ffmpeg))
        source = stack.enter_context(open_source(input, ffmpeg)) if input is not None else None
        meter = WarpingError(streams=2) if source is not None else None
        input_frames = source.frames() if source is not None else None
        exact = predicted.info.kind != "video" and truth.info.kind != "video"
        if exact and predicted.info.frame_count != truth.info.frame_count:
            raise InputError(
                f"{prediction} has {predicted.info.frame_count} frames but {ground_truth} has "
                f"{truth.info.frame_count}; compare sources of the same length"
            )
        if (predicted.info.width, predicted.info.height) != (truth.info.width, truth.info.height):
            raise InputError(
                f"{prediction} is {predicted.info.width}x{predicted.info.height} but "
                f"{ground_truth} is {truth.info.width}x{truth.info.height}; metrics compare "
                "frames of the same size"
            )
        if source is not None and (source.info.width, source.info.height) != (
            truth.info.width, truth.info.height,
        ):  # fmt: skip
            raise InputError(
                f"the input {input} is {source.info.width}x{source.info.height} but "
                f"{ground_truth} is {truth.info.width}x{truth.info.height}; the warping error "
                "needs the clip that was colorized, at the same size"
            )
        total = max(truth.info.frame_count, 1)
        predicted_frames, true_frames = predicted.frames(), truth.frames()
        index = 0
        while True:
            a = next(predicted_frames, None)
            b = next(true_frames, None)
            if a is None or b is None:
                if a is not None or b is not None:
                    longer, shorter = (prediction, ground_truth) if b is None else (
                        ground_truth, prediction)  # fmt: skip
                    raise InputError(
                        f"{shorter} ended after {index} frames but {longer} has more; "
                        "compare sources of the same length"
                    )
                break
            if a.shape != b.shape:
                raise InputError(
                    f"frame {index + 1} differs in size: {a.shape[1]}x{a.shape[0]} in "
                    f"{prediction}, {b.shape[1]}x{b.shape[0]} in {ground_truth}"
                )
            name = truth.info.name(index)
            row = {"name": name, **frame_metrics(a, b, threshold)}
            if meter is not None:
                frame = next(input_frames, None)
                if frame is None:
                    raise InputError(
                        f"the input {input} ended after {index} frames but {prediction} has "
                        "more; give the clip that was colorized"
                    )
                errors = meter.add(frame, a, b)
                row["warping_error"], row["warping_error_truth"] = errors or (None, None)
            result.frames.append(row)
            index += 1
            if progress is not None:
                progress(index, max(total, index))
        if input_frames is not None and next(input_frames, None) is not None:
            raise InputError(
                f"the input {input} has more frames than {prediction}; give the clip that "
                "was colorized"
            )
    if not result.frames:
        raise InputError(f"{prediction} holds no frames")
    if meter is not None:
        result.input = Path(input)
        prediction_error, truth_error = meter.means()
        result.warping_error = {"prediction": prediction_error, "ground_truth": truth_error}
    result.mean = mean_metrics([{k: row[k] for k in METRIC_NAMES} for row in result.frames])
    return result
