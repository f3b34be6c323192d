"""Keyframe colors carried through a shot along the motion of its input frames.

A keyframe's L*a*b* (at the work size) travels frame by frame, forward and backward: each frame
backward-warps the previous frame's colors along the optical flow between the two *input*
frames (nearest sample, so flat colors stay exact), and drops them where the
motion-compensated input changed (a disocclusion, a flow error) or where the match lies
outside the frame; there the fallback colors (the generator's) take over and travel on. Line
art adds its paint-bucket regions (``regions.closed_regions``): a region whose carried colors
are known on enough of its pixels takes their median everywhere, so flat cel colors stay flat
and a color that leaked across a line is voted out. A frame between two keyframes blends the
two carried colors by temporal distance, each where it is known; a frame no keyframe reaches
keeps the fallback.

For grayscale input ``lightness_palette`` gives the fallback the keyframes' colors: the median
a*b* of every L* level of the keyframes, which colors newly visible sky, grass or skin the way
the keyframe shows them.

Why these defaults: docs/design.md#keyframe-reference-colorization-opscarrypy
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from celpaint.ops.flow import FlowEstimator, Preset, prepare_guide, sampling_positions, warp
from celpaint.ops.regions import closed_regions, region_medians

# L* levels of the palette: one per unit of L*.
_PALETTE_LEVELS = 101
# A palette level needs this many keyframe pixels; empty levels borrow from a populated one at
# most this many L* away.
_PALETTE_MIN_PIXELS = 20
_PALETTE_REACH = 4


@dataclass(frozen=True)
class CarryParams:
    """Settings of ``carry_shot``.

    Attributes:
        change_threshold: a carried color is dropped where the blurred input frame differs
            from the motion-compensated previous one by more than this (0..255).
        gap: line art: lines are grown by this many px before regions are found, closing gaps
            of up to twice that (``regions.closed_regions``).
        min_region: line art: the smallest region, in pixels, that gets one color.
        min_known: line art: a region takes its carried median when at least this share of
            its pixels carry a keyframe color.
        preset: the DIS optical-flow preset.

    Raises:
        ValueError: a setting out of range.
    """

    change_threshold: float = 8.0
    gap: int = 2
    min_region: int = 24
    min_known: float = 0.25
    preset: Preset = "medium"

    def __post_init__(self) -> None:
        if not 0 < self.change_threshold <= 255:
            raise ValueError(
                f"change_threshold must be within (0, 255], got {self.change_threshold}"
            )
        if self.gap < 0 or self.min_region < 1:
            raise ValueError(
                f"gap must be >= 0 and min_region >= 1, got {self.gap}, {self.min_region}"
            )
        if not 0 < self.min_known <= 1:
            raise ValueError(f"min_known must be within (0, 1], got {self.min_known}")


def lightness_palette(labs: Sequence[np.ndarray]) -> np.ndarray:
    """The keyframes' a*b* per L* level: float32 ``(101, 2)``, NaN where no color is known.

    Args:
        labs: float32 L*a*b* ``(H, W, 3)`` images (the keyframes).
    """
    lightness = np.concatenate([lab[..., 0].ravel() for lab in labs])
    chroma = np.concatenate([lab[..., 1:].reshape(-1, 2) for lab in labs])
    levels = np.clip(np.rint(lightness).astype(np.int64), 0, _PALETTE_LEVELS - 1)
    order = np.argsort(levels, kind="stable")
    bounds = np.searchsorted(levels[order], np.arange(_PALETTE_LEVELS + 1))
    sorted_chroma = chroma[order]
    palette = np.full((_PALETTE_LEVELS, 2), np.nan, np.float32)
    for level in range(_PALETTE_LEVELS):
        start, end = bounds[level], bounds[level + 1]
        if end - start >= _PALETTE_MIN_PIXELS:
            palette[level] = np.median(sorted_chroma[start:end], axis=0)
    known = np.flatnonzero(~np.isnan(palette[:, 0]))
    if known.size == 0:
        return palette
    # Empty levels take the nearest populated one within reach.
    nearest = known[np.abs(np.arange(_PALETTE_LEVELS)[:, None] - known[None]).argmin(axis=1)]
    near_enough = np.abs(nearest - np.arange(_PALETTE_LEVELS)) <= _PALETTE_REACH
    filled = palette.copy()
    filled[near_enough] = palette[nearest[near_enough]]
    return filled


def palette_fill(lab: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``lab`` (float32 ``(H, W, 3)``) with the a*b* of ``palette`` (``lightness_palette``) at
    each pixel's L* where the palette knows that level; L* and the other pixels unchanged. A
    new array."""
    levels = np.clip(np.rint(lab[..., 0]).astype(np.int64), 0, _PALETTE_LEVELS - 1)
    chroma = palette[levels]
    known = ~np.isnan(chroma[..., 0])
    out = lab.copy()
    out[..., 1:][known] = chroma[known]
    return out


def carry_shot(
    grays: Sequence[np.ndarray],
    fallbacks: Sequence[np.ndarray],
    keyframes: dict[int, np.ndarray],
    line_art: bool,
    params: CarryParams | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Colors of every frame of one shot, carried from its keyframes.

    Args:
        grays: uint8 ``(h, w)`` gray input frames of the shot, in order (line art or
            grayscale), at the work size.
        fallbacks: float32 L*a*b* ``(h, w, 3)`` per frame: the colors where no keyframe color
            arrives (the generator's).
        keyframes: frame index within the shot -> float32 L*a*b* ``(h, w, 3)``.
        line_art: the frames are line art: carried colors are also flattened per closed region.
        params: ``CarryParams``; the defaults when None.

    Returns:
        (float32 L*a*b* ``(h, w, 3)`` per frame: new arrays, a keyframe's own a copy of it;
        bool ``(h, w)`` per frame: where a keyframe's color arrived, the rest being fallback).

    Raises:
        ValueError: a keyframe index outside the shot, or arrays of different sizes.
    """
    params = params or CarryParams()
    count = len(grays)
    if len(fallbacks) != count:
        raise ValueError(f"{count} frames but {len(fallbacks)} fallbacks")
    if any(not 0 <= index < count for index in keyframes):
        raise ValueError(f"keyframes {sorted(keyframes)} outside a shot of {count} frames")
    guides = [prepare_guide(gray, "blur") for gray in grays]
    labels = [closed_regions(g, params.gap, params.min_region) for g in grays] if line_art else None
    carrier = _Carrier(guides, fallbacks, labels, params)
    keys = sorted(keyframes)
    for number, key in enumerate(keys):
        after = keys[number + 1] if number + 1 < len(keys) else count
        before = keys[number - 1] if number > 0 else -1
        carrier.carry(key, keyframes[key], range(key + 1, after))
        carrier.carry(key, keyframes[key], range(key - 1, before, -1))
    out = carrier.blend()
    reached = [weight > 0 for weight in carrier.weights]
    for key in keys:
        out[key] = keyframes[key].astype(np.float32, copy=True)
        reached[key][:] = True
    return out, reached


class _Carrier:
    """The weighted sum of the colors carried into each frame, pass after pass."""

    def __init__(self, guides, fallbacks, labels, params: CarryParams):
        self.guides = guides
        self.fallbacks = fallbacks
        self.labels = labels
        self.params = params
        self.flow = FlowEstimator(params.preset)
        height, width = guides[0].shape
        self.sums = [np.zeros((height, width, 3), np.float32) for _ in guides]
        self.weights = [np.zeros((height, width), np.float32) for _ in guides]

    def carry(self, key: int, key_lab: np.ndarray, order: range) -> None:
        """Carry ``key_lab`` from frame ``key`` through ``order`` (consecutive frames moving
        away from it)."""
        lab = key_lab.astype(np.float32, copy=False)
        known = np.ones(lab.shape[:2], np.uint8)
        previous = key
        for index in order:
            lab, known = self._step(previous, index, lab, known)
            weight = known.astype(np.float32) / np.float32(1 + abs(index - key))
            self.sums[index] += lab * weight[..., None]
            self.weights[index] += weight
            previous = index

    def _step(self, previous: int, index: int, lab: np.ndarray, known: np.ndarray):
        guide, previous_guide = self.guides[index], self.guides[previous]
        positions = sampling_positions(self.flow.estimate(guide, previous_guide))
        height, width = guide.shape
        x, y = positions[..., 0], positions[..., 1]
        outside = (x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5)
        moved = warp(previous_guide, positions=positions)
        lost = outside | (cv2.absdiff(moved, guide) > self.params.change_threshold)
        carried = warp(lab, positions=positions, interpolation=cv2.INTER_NEAREST)
        still = warp(known, positions=positions, interpolation=cv2.INTER_NEAREST) > 0
        still &= ~lost
        carried = np.where(still[..., None], carried, self.fallbacks[index])
        if self.labels is not None:
            carried, trusted = region_medians(
                carried, still, self.labels[index], min_fraction=self.params.min_known
            )
            still |= trusted
        return carried, still.astype(np.uint8)

    def blend(self) -> list[np.ndarray]:
        out = []
        for total, weight, fallback in zip(self.sums, self.weights, self.fallbacks, strict=True):
            reached = weight > 0
            blended = total / np.maximum(weight, np.float32(1e-12))[..., None]
            out.append(np.where(reached[..., None], blended, fallback).astype(np.float32))
        return out
