"""Image quality metrics for colorization, on one pair of frames.

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
* ``colorfulness``: the colorfulness M of Hasler & Suesstrunk 2003 of *one* image (0 for any
  gray image; about 15 is "slightly colorful", 60 "quite colorful", 100+ "extremely").
  CIEDE2000 alone rewards gray guesses; comparing a prediction's colorfulness with the
  truth's tells a muted colorization from a faithful one.

The frame-by-frame comparison of two sources is ``celpaint.evaluation.compare.evaluate``. For
clips it also measures temporal stability when given the input clip: the warping error of Lai
et al. 2018 (``celpaint.evaluation.warping.WarpingError``: flow on the input frames,
forward-backward occlusion mask, masked mean squared difference between each output frame and
the previous one warped onto it, RGB in [0, 1]), for the prediction and for the ground truth,
whose error is the floor a perfect colorization would reach; and the same measure on the a*b*
channels alone (``warping_error_ab``), which sees flicker of the colors apart from lightness.

Every metric raises ``ValueError`` when an image is not uint8 ``(H, W, 3)`` or the two differ in
size.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.color import deltaE_ciede2000
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from celpaint.color.array import rgb_to_lab_reference

DEFAULT_THRESHOLD = 0.05
METRIC_NAMES = ("psnr", "ssim", "ciede2000", "accuracy")
# SSIM's smallest window (3x3): images with a shorter side have no SSIM.
SSIM_MIN_SIDE = 3
# Full ranges of L* and of a*/b*, against which the accuracy threshold is a fraction.
_LAB_RANGES = np.array([100.0, 255.0, 255.0])


def _check_pair(prediction: np.ndarray, target: np.ndarray) -> None:
    for name, image in (("prediction", prediction), ("target", target)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"{name} must be a uint8 (H, W, 3) array, got {image.dtype} {image.shape}"
            )
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
    if side < SSIM_MIN_SIDE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels, got "
            f"{prediction.shape[:2]}"
        )
    window = min(7, side if side % 2 else side - 1)
    return float(
        structural_similarity(target, prediction, data_range=255, channel_axis=2, win_size=window)
    )


def ciede2000(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean CIEDE2000 Delta E between two uint8 RGB images (0 when identical)."""
    _check_pair(prediction, target)
    return _ciede2000(rgb_to_lab_reference(prediction), rgb_to_lab_reference(target))


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
    return _accuracy(rgb_to_lab_reference(prediction), rgb_to_lab_reference(target), threshold)


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
    lab_prediction, lab_target = rgb_to_lab_reference(prediction), rgb_to_lab_reference(target)
    return {
        "psnr": psnr(prediction, target),
        "ssim": ssim(prediction, target),
        "ciede2000": _ciede2000(lab_prediction, lab_target),
        "accuracy": _accuracy(lab_prediction, lab_target, threshold),
    }


def colorfulness(rgb: np.ndarray) -> float:
    """Colorfulness M of Hasler & Suesstrunk (2003) of one uint8 RGB image ``(H, W, 3)``.

    With ``rg = R - G`` and ``yb = (R + G) / 2 - B`` on the 8-bit values,
    ``M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)`` (population
    standard deviations over all pixels). 0 for any gray image; larger is more colorful.

    Raises:
        ValueError: ``rgb`` is not a uint8 ``(H, W, 3)`` array.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    red, green, blue = (rgb[..., channel].astype(np.float64) for channel in range(3))
    rg = red - green
    yb = 0.5 * (red + green) - blue
    spread = math.hypot(float(rg.std()), float(yb.std()))
    return spread + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over frames (PSNR is ``inf`` if any frame's is)."""
    if not rows:
        return {}
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}
