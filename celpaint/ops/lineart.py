"""Line art from color frames: the extended difference of Gaussians (XDoG).

XDoG (Winnemöller, Kyprianidis and Olsen, "XDoG: An extended difference-of-Gaussians compendium
including advanced image stylization", Computers & Graphics 36(6), 2012) sharpens an image with a
difference of two Gaussian blurs and passes the result through a soft threshold::

    D(x) = G_sigma(L)(x) - tau * G_{k*sigma}(L)(x)
    T(x) = 1                                   if D(x) >= epsilon
           1 + tanh(phi * (D(x) - epsilon))    otherwise

``L`` is the CIE L* lightness of the frame scaled to 0..1. On a flat region ``D = (1 - tau) * L``,
which is >= 0 >= ``epsilon`` for every color, so flat areas come out white whatever their color;
only the dark side of an edge dips below ``epsilon`` and becomes a line. The output is soft (the
tanh ramp gives anti-aliased ink edges) unless ``threshold`` makes it binary.

Strokes and solid ink: a DoG is an edge detector, so a thick outline (common in clip art and in
inked cels) would come out as two thin lines, one along each side of the stroke. Two extra terms
make drawn strokes lines themselves, the way an inker would trace them:

- a stroke term: the morphological black-hat of L* (closing minus image) with a disc of
  ``stroke_width`` pixels marks dark bands narrower than the disc that are darker than both their
  sides; a band ``stroke_contrast`` darker than its surroundings is solid ink, half that is paper.
  Wide dark regions have no black-hat response inside, so they keep only their outline.
- an ink term: pixels darker than ``ink_level`` (L* scaled to 0..1) are ink, ramping to paper
  over the next ``ink_ramp``, as long as the dark feature is narrower than ``ink_width`` pixels.
  Wider dark areas keep only their outline, as an inker would leave them.

Color boundaries of equal lightness (red next to green) have no lightness edge. A line is still
drawn there from the DoG of the a* and b* chroma channels, weighted by ``chroma_weight``, but only
where no lightness line lies within two pixels, so a hue edge that also has a lightness edge does
not get a second, parallel line. Gray input has no chroma; its gray level (0..255 scaled to 0..1)
stands in for L*.

All sizes are in pixels: line width follows ``sigma`` whatever the frame size, so larger frames
get relatively thinner lines (raise ``sigma``, ``stroke_width`` and ``ink_width`` in proportion,
or resize first).

Everything is vectorised numpy + OpenCV on float32; the same input gives the same bytes.

Why these defaults: docs/design.md#line-art-opslineartpy
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Literal

import cv2
import numpy as np


@dataclass(frozen=True)
class LineArtParams:
    """The XDoG parameters (see the module docstring for the formula).

    Why these defaults: docs/design.md#line-art-opslineartpy

    Attributes:
        sigma: inner Gaussian blur in pixels; sets the line width (about 2 * sigma).
        k: ratio of the outer to the inner blur (1.6 approximates a Laplacian of Gaussian).
        tau: weight of the outer blur; just below 1 so flat regions stay white.
        epsilon: response level where the ramp starts; below 0 so faint edges are ignored.
        phi: steepness of the tanh ramp; larger is crisper.
        chroma_weight: weight of the a*/b* chroma edges relative to lightness edges (0: lightness
            only, as in the paper).
        stroke_width: widest dark stroke (pixels) drawn as one solid line; 0 disables.
        stroke_contrast: darkness (L*, 0..1) of a stroke vs its sides for it to be solid ink.
        ink_level: L* (0..1) below which a pixel is solid ink (black); None disables it.
        ink_ramp: L* range above ``ink_level`` over which solid ink fades to paper.
        ink_width: dark features at least this wide (pixels) are not filled with ink; 0 fills
            dark areas of any size.
        threshold: when set (0..1), output is binary: pixels whose soft value is below it become
            0, the rest 255.

    Raises:
        ValueError: a parameter out of its range (on construction).
    """

    sigma: float = 0.8
    k: float = 1.6
    tau: float = 0.995
    epsilon: float = -0.01
    phi: float = 150.0
    chroma_weight: float = 0.5
    stroke_width: int = 7
    stroke_contrast: float = 0.3
    ink_level: float | None = 0.12
    ink_ramp: float = 0.04
    ink_width: int = 15
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if not self.k > 1:
            raise ValueError(f"k must be > 1, got {self.k}")
        if not self.phi > 0:
            raise ValueError(f"phi must be > 0, got {self.phi}")
        if self.chroma_weight < 0:
            raise ValueError(f"chroma_weight must be >= 0, got {self.chroma_weight}")
        if self.stroke_width < 0:
            raise ValueError(f"stroke_width must be >= 0, got {self.stroke_width}")
        if not self.stroke_contrast > 0:
            raise ValueError(f"stroke_contrast must be > 0, got {self.stroke_contrast}")
        if self.ink_level is not None and not 0 <= self.ink_level <= 1:
            raise ValueError(f"ink_level must be in 0..1, got {self.ink_level}")
        if not self.ink_ramp > 0:
            raise ValueError(f"ink_ramp must be > 0, got {self.ink_ramp}")
        if self.ink_width < 0:
            raise ValueError(f"ink_width must be >= 0, got {self.ink_width}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in 0..1, got {self.threshold}")

    def to_dict(self) -> dict:
        return {"method": "xdog", **asdict(self)}


DEFAULT_PARAMS = LineArtParams()


def _dog(channel: np.ndarray, sigma: float, k: float, tau: float) -> np.ndarray:
    # Reflected borders: a replicated or zero border would draw a line along the frame edge.
    inner = cv2.GaussianBlur(channel, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    outer = cv2.GaussianBlur(channel, (0, 0), sigma * k, borderType=cv2.BORDER_REFLECT_101)
    return inner - tau * outer


@functools.cache
def _disc(size: int) -> np.ndarray:
    """An elliptical structuring element ``size`` pixels across (built once per size)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _ramp(response: np.ndarray, params: LineArtParams) -> np.ndarray:
    """The XDoG soft threshold: 1 at and above epsilon, a tanh ramp towards 0 below it."""
    ramp = 1.0 + np.tanh(np.float32(params.phi) * (response - np.float32(params.epsilon)))
    return np.where(response >= params.epsilon, np.float32(1.0), ramp).astype(
        np.float32, copy=False
    )


def _lab_channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """L* in 0..1 and the chroma (a*, b*) stacked as (H, W, 2), scaled by 1/100 (None for gray)."""
    if image.ndim == 2:
        return image.astype(np.float32) / 255.0, None
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return lab[:, :, 0] / 100.0, lab[:, :, 1:] / 100.0


def xdog_response(image: np.ndarray, params: LineArtParams = DEFAULT_PARAMS) -> np.ndarray:
    """The soft XDoG output before quantisation.

    Args:
        image: uint8 RGB ``(H, W, 3)`` or gray ``(H, W)`` (unchecked; ``xdog`` checks it).

    Returns:
        float32 ``(H, W)`` in 0..1, 1 = white paper.
    """
    lightness, chroma = _lab_channels(image)
    soft = _ramp(_dog(lightness, params.sigma, params.k, params.tau), params)
    if chroma is not None and params.chroma_weight > 0:
        # The DoG of a chroma channel is negative on one side of a hue edge and positive on the
        # other; either sign marks the boundary, so both count. tau = 1 because chroma has no
        # "paper white": a flat saturated area must give exactly zero response.
        response = np.zeros_like(lightness)
        for index in range(2):
            chroma_dog = _dog(np.ascontiguousarray(chroma[:, :, index]), params.sigma, params.k, 1)
            response = np.minimum(response, -params.chroma_weight * np.abs(chroma_dog))
        # Because |DoG| marks both sides, a hue edge that also has a lightness line (white paper
        # against a dark red outline) would get a second, parallel line. So hue lines are kept
        # only where no lightness line lies within two pixels: they fill the gaps, nothing more.
        near_line = cv2.erode(soft, _disc(5), borderType=cv2.BORDER_REFLECT_101) < 0.5
        soft = np.where(near_line, soft, np.minimum(soft, _ramp(response, params)))
    if params.stroke_width > 1:
        closed = cv2.morphologyEx(
            lightness,
            cv2.MORPH_CLOSE,
            _disc(params.stroke_width),
            borderType=cv2.BORDER_REFLECT_101,
        )
        half = np.float32(params.stroke_contrast / 2)
        stroke = 1.0 - (closed - lightness - half) / half
        soft = np.minimum(soft, stroke)
    if params.ink_level is not None:
        ink = (lightness - np.float32(params.ink_level)) / np.float32(params.ink_ramp)
        if params.ink_width > 1:
            # An opening keeps the dark areas at least ink_width across; those stay paper.
            dark = (ink < 1.0).astype(np.uint8)
            wide = cv2.morphologyEx(dark, cv2.MORPH_OPEN, _disc(params.ink_width)).astype(bool)
            ink = np.where(wide, np.float32(1.0), ink)
        soft = np.minimum(soft, ink)
    return np.clip(soft, 0.0, 1.0).astype(np.float32, copy=False)


def xdog(rgb: np.ndarray, params: LineArtParams = DEFAULT_PARAMS, **overrides) -> np.ndarray:
    """Line art of a color (or gray) frame: dark lines on white paper.

    Args:
        rgb: uint8 ``(H, W, 3)`` RGB, or uint8 ``(H, W)`` gray.
        params: the XDoG parameters (``LineArtParams``; the defaults when omitted).
        **overrides: fields of ``LineArtParams`` to change, e.g. ``sigma=1.2`` or
            ``threshold=0.5`` (binary output).

    Returns:
        uint8 ``(H, W)``: 0 on lines, 255 on paper.

    Raises:
        ValueError: wrong dtype or shape, or a parameter out of range.
    """
    if overrides:
        params = replace(params, **overrides)
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        kind = rgb.dtype if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected a uint8 image, got {kind}")
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        rgb = rgb[:, :, 0]
    if not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) gray image, got shape {rgb.shape}")
    soft = xdog_response(rgb, params)
    if params.threshold is not None:
        return np.where(soft < params.threshold, 0, 255).astype(np.uint8)
    return (soft * 255.0 + 0.5).astype(np.uint8)


def line_art_batch(frames: np.ndarray, params: LineArtParams = DEFAULT_PARAMS) -> np.ndarray:
    """Line art of a batch, as a ``celpaint.pipeline.engine.Transform`` takes and gives it.

    Args:
        frames: uint8 ``(B, H, W, 3)`` RGB.

    Returns:
        uint8 ``(B, H, W, 3)``: the line art replicated to three equal channels.
    """
    lines = [xdog(frame, params) for frame in frames]
    return np.repeat(np.stack(lines)[..., None], 3, axis=3)


# --- Does a frame look like line art? (docs/design.md#input-check-opslineartpy) -------------

InputKind = Literal["lineart", "grayscale"]
# Frames are measured at most this long (area-scaled down): cheap, and thin lines stay visible.
CHECK_SIZE = 512
# Gray levels below the frame's median that still count as paper (noise, paper texture).
PAPER_MARGIN = 24
# Line art is drawn on light paper: a median below this is footage.
MIN_PAPER_LEVEL = 128
# A frame with less ink than this (fraction of pixels) is blank and tells nothing.
MIN_INK = 0.002
# Line art's ink is thin: at most this fraction of it lies in dark areas wider than the disc.
MAX_WIDE_INK = 0.35
WIDE_DISC = 5


@dataclass(frozen=True)
class InkMeasure:
    """How a frame's dark pixels lie on its paper (``measure_ink``).

    Attributes:
        paper_level: the median gray level, 0..255 (the paper's, on line art).
        ink: fraction of pixels more than ``PAPER_MARGIN`` darker than the paper, 0..1.
        wide_ink: fraction of those in dark areas at least ``WIDE_DISC`` pixels across, 0..1.
    """

    paper_level: float
    ink: float
    wide_ink: float

    @property
    def blank(self) -> bool:
        """Too little ink to tell line art from footage (a white or black frame, a fade)."""
        return self.ink < MIN_INK


def measure_ink(rgb: np.ndarray) -> InkMeasure:
    """Measure one frame for ``guess_input_kind``.

    Args:
        rgb: uint8 RGB ``(H, W, 3)`` or gray ``(H, W)``.

    Raises:
        ValueError: not a uint8 image of those shapes.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise ValueError(
            f"expected a uint8 (H, W, 3) or (H, W) image, got {getattr(rgb, 'shape', rgb)}"
        )
    gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    scale = CHECK_SIZE / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    paper_level = float(np.median(gray))
    ink = (gray < paper_level - PAPER_MARGIN).astype(np.uint8)
    # Closing the one-pixel holes that film grain punches into dark areas keeps them wide;
    # lines stay lines.
    ink = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, _disc(3), borderType=cv2.BORDER_REPLICATE)
    ink_pixels = int(ink.sum())
    wide = cv2.erode(ink, _disc(WIDE_DISC), borderType=cv2.BORDER_REPLICATE)
    return InkMeasure(
        paper_level=paper_level,
        ink=ink_pixels / ink.size,
        wide_ink=float(wide.sum()) / ink_pixels if ink_pixels else 0.0,
    )


def guess_input_kind(frames: Iterable[np.ndarray]) -> InputKind | None:
    """Whether frames look like line art (thin dark lines on light paper) or like grayscale
    or color footage, from their ink (``measure_ink``).

    The rule: the frames are line art when their median gray level (the paper) is at least
    ``MIN_PAPER_LEVEL`` and, on average, at most ``MAX_WIDE_INK`` of their ink lies in dark
    areas wider than ``WIDE_DISC`` pixels (at ``CHECK_SIZE``): line art's ink is lines, while
    footage's dark pixels are shaded areas. Blank frames (``InkMeasure.blank``) are left out.
    Why these thresholds: docs/design.md#input-check-opslineartpy

    Args:
        frames: uint8 RGB ``(H, W, 3)`` (or gray ``(H, W)``) frames of one input, a few are
            enough.

    Returns:
        ``"lineart"``, ``"grayscale"`` (footage, gray or in color), or None when every frame
        is blank.
    """
    measures = [m for m in map(measure_ink, frames) if not m.blank]
    if not measures:
        return None
    paper_level = float(np.median([m.paper_level for m in measures]))
    wide_ink = float(np.mean([m.wide_ink for m in measures]))
    if paper_level >= MIN_PAPER_LEVEL and wide_ink <= MAX_WIDE_INK:
        return "lineart"
    return "grayscale"
