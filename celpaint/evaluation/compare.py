"""Comparing a colorized clip, frame folder or image with its ground truth, frame by frame: what
``celpaint evaluate`` runs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from celpaint.errors import InputError
from celpaint.evaluation.warping import WarpingError, ab_channels
from celpaint.io.frames import MAX_PIXELS, check_spares_inputs, json_safe
from celpaint.io.sources import open_source
from celpaint.ops.metrics import (
    DEFAULT_THRESHOLD,
    METRIC_NAMES,
    SSIM_MIN_SIDE,
    colorfulness,
    frame_metrics,
    mean_metrics,
)


@dataclass
class Evaluation:
    """Per-frame and mean metrics of a prediction against its ground truth.

    Attributes:
        frames: one dict per frame: ``name``, the metrics of ``METRIC_NAMES``, and
            ``colorfulness`` (the prediction's), ``colorfulness_truth`` and
            ``colorfulness_ratio`` (prediction / truth; NaN for a gray truth).
        mean: the mean of each metric over the frames, except ``colorfulness_ratio``: the mean
            colorfulness of the prediction over the truth's.
        threshold: the accuracy threshold used.
        warping_error, warping_error_ab: with an input clip, the mean temporal warping error
            ``{"prediction", "ground_truth"}`` on RGB in [0, 1] and on a*b* / 100.
    """

    prediction: Path
    ground_truth: Path
    threshold: float
    frames: list[dict] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    input: Path | None = None
    warping_error: dict[str, float] | None = None
    warping_error_ab: dict[str, float] | None = None

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
            data["warping_error_ab"] = self.warping_error_ab
        return json_safe(data)


def evaluate(
    prediction: str | os.PathLike,
    ground_truth: str | os.PathLike,
    threshold: float = DEFAULT_THRESHOLD,
    ffmpeg: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    input: str | os.PathLike | None = None,
    max_pixels: int = MAX_PIXELS,
    output: str | os.PathLike | None = None,
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
            first), ``warping_error_truth`` and their a*b* versions ``warping_error_ab``,
            ``warping_error_ab_truth`` (``ab_channels``), and ``Evaluation.warping_error`` and
            ``warping_error_ab`` hold the means ``{"prediction", "ground_truth"}``.
        max_pixels: the largest frame read (``open_source``).
        output: where the caller will write the results (``--json``): refused, before any
            comparing, when it is one of the files read, under any name.

    Raises:
        InputError: a source is missing or unreadable, ``output`` is one of them, the frame
            counts differ, a pair of frames differs in size, or frames are smaller than
            SSIM's 3x3 window.
    """
    if threshold < 0:
        raise InputError(f"--threshold must not be negative, got {threshold}")
    result = Evaluation(Path(prediction), Path(ground_truth), threshold)
    with contextlib.ExitStack() as stack:
        predicted = stack.enter_context(open_source(prediction, ffmpeg, max_pixels))
        truth = stack.enter_context(open_source(ground_truth, ffmpeg, max_pixels))
        source = None
        if input is not None:
            source = stack.enter_context(open_source(input, ffmpeg, max_pixels))
        if output is not None:
            opened = [item for item in (predicted, truth, source) if item is not None]
            read = [path for item in opened for path in item.info.files()]
            check_spares_inputs(Path(output), read, what="--json")
        # Four streams sharing one flow per pair: RGB and a*b* of the prediction and the truth.
        meter = WarpingError(streams=4) if source is not None else None
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
        if min(truth.info.width, truth.info.height) < SSIM_MIN_SIDE:
            raise InputError(
                f"{ground_truth} is {truth.info.width}x{truth.info.height}: SSIM needs frames of "
                f"at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels, so these cannot be compared"
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
            row = {"name": name, **frame_metrics(a, b, threshold), **_colorfulness(a, b)}
            if meter is not None:
                frame = next(input_frames, None)
                if frame is None:
                    raise InputError(
                        f"the input {input} ended after {index} frames but {prediction} has "
                        "more; give the clip that was colorized"
                    )
                errors = meter.add(frame, a, b, ab_channels(a), ab_channels(b)) or [None] * 4
                row["warping_error"], row["warping_error_truth"] = errors[:2]
                row["warping_error_ab"], row["warping_error_ab_truth"] = errors[2:]
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
        prediction_error, truth_error, prediction_ab, truth_ab = meter.means()
        result.warping_error = {"prediction": prediction_error, "ground_truth": truth_error}
        result.warping_error_ab = {"prediction": prediction_ab, "ground_truth": truth_ab}
    names = (*METRIC_NAMES, "colorfulness", "colorfulness_truth")
    result.mean = mean_metrics([{k: row[k] for k in names} for row in result.frames])
    result.mean["colorfulness_ratio"] = _ratio(
        result.mean["colorfulness"], result.mean["colorfulness_truth"]
    )
    return result


def _ratio(prediction: float, truth: float) -> float:
    return prediction / truth if truth > 0 else float("nan")


def _colorfulness(prediction, truth) -> dict[str, float]:
    """The colorfulness of a frame of the prediction, of the truth's, and their ratio."""
    predicted, true = colorfulness(prediction), colorfulness(truth)
    return {
        "colorfulness": predicted,
        "colorfulness_truth": true,
        "colorfulness_ratio": _ratio(predicted, true),
    }
