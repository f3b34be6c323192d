"""Keyframe colors carried through a shot along the motion of its input frames.

A keyframe's L*a*b* (at the work size) travels frame by frame, forward and backward, along the
optical flow between consecutive *input* frames. Each pixel remembers where in the keyframe it
came from (the flows chained, with bilinear steps, so sub-pixel motion adds up instead of being
rounded away) and takes the keyframe's color there (nearest sample, so flat colors stay
exact). A pixel is dropped where the motion-compensated input changed (a disocclusion, a flow
error) or its match left the frame; there the fallback colors (the generator's) take over.

Regions then complete what the flow lost: the paint-bucket regions of line art
(``regions.closed_regions``) or the flat regions of a grayscale frame
(``regions.flat_regions``). A region whose carried colors are known on enough of its pixels
keeps them and gives each of its other pixels the nearest known color of the region, so a
region's colors come back whole after a flow error and a gradient stays a gradient. The band
along lines and edges, which belongs to no region, takes the nearest carried color within a
few px (at half weight) instead of the fallback. A frame between two keyframes blends the
colors carried from both by temporal distance (weights ``1 / (1 + d) ** blend_power``), each
where it arrived; a frame no keyframe reaches keeps the fallback.

For grayscale input ``lightness_palette`` gives the fallback the keyframes' colors: the median
a*b* of every L* level of the keyframes, which colors newly visible sky, grass or skin the way
the keyframe shows them.

Why these defaults: docs/design.md#keyframe-reference-colorization-opscarrypy
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from celpaint.device import usable_cores
from celpaint.ops.flow import FlowEstimator, Preset, prepare_guide, sampling_positions, warp
from celpaint.ops.regions import closed_regions, fill_regions, flat_regions, nearest_known

# L* levels of the palette: one per unit of L*.
_PALETTE_LEVELS = 101
# A palette level needs this many keyframe pixels; empty levels borrow from a populated one at
# most this many L* away.
_PALETTE_MIN_PIXELS = 20
_PALETTE_REACH = 4
# Colors filled into the band along lines from a neighbour count this much of a carried color.
_BAND_WEIGHT = 0.5
# A chained position whose bilinear and nearest samples differ by more than this (px) lies on
# a motion boundary: it takes the nearest one rather than a mix of two objects' positions.
_JUMP = 1.0
# Flows estimated ahead of the pass that uses them, on a thread of their own.
_LOOKAHEAD = 2


@dataclass(frozen=True)
class CarryParams:
    """Settings of ``carry_shot``.

    Attributes:
        change_threshold: a carried color is dropped where the blurred input frame differs
            from the motion-compensated previous one by more than this (0..255).
        gap: line art: lines are grown by this many px before regions are found, closing gaps
            of up to twice that (``regions.closed_regions``).
        min_region: the smallest region, in pixels, that is completed from its known pixels.
        min_known: a region is completed when at least this share of its pixels carry a
            keyframe color.
        edge_threshold: grayscale: gray levels per px from which a pixel is an edge between
            flat regions (``regions.flat_regions``).
        band_reach: px within which a pixel outside every region takes the nearest carried
            color (0: never).
        blend_power: frames between two keyframes weigh each keyframe's colors by
            ``1 / (1 + distance) ** blend_power`` (> 0; larger favours the nearer keyframe).
        line_blur: line art: sigma (px) of the Gaussian that smooths the frames the flow runs
            on (``flow.prepare_guide``'s ``blur``); grayscale frames are used as they are, their
            shading being texture enough.
        preset: the DIS optical-flow preset.

    Raises:
        ValueError: a setting out of range.
    """

    change_threshold: float = 8.0
    gap: int = 2
    min_region: int = 24
    min_known: float = 0.25
    edge_threshold: float = 3.0
    band_reach: float = 3.0
    blend_power: float = 2.0
    line_blur: float = 2.0
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
        if min(self.edge_threshold, self.blend_power, self.line_blur) <= 0:
            raise ValueError(
                "edge_threshold, blend_power and line_blur must be positive, got "
                f"{self.edge_threshold}, {self.blend_power}, {self.line_blur}"
            )
        if self.band_reach < 0:
            raise ValueError(f"band_reach must be >= 0, got {self.band_reach}")


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
    # L* + 0.5 truncated: the nearest level (one uint8 index per pixel, cheap to gather with).
    levels = np.clip(lab[..., 0] + np.float32(0.5), 0, _PALETTE_LEVELS - 1).astype(np.uint8)
    known = ~np.isnan(palette[:, 0])
    out = lab.copy()
    np.copyto(out[..., 1:], np.nan_to_num(palette)[levels], where=known[levels][..., None])
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
        line_art: the frames are line art (regions between lines), else grayscale (regions of
            flat gray).
        params: ``CarryParams``; the defaults when None.

    Returns:
        (float32 L*a*b* ``(h, w, 3)`` per frame: new arrays, a keyframe's own a copy of it;
        bool ``(h, w)`` per frame: *settled* pixels, inside a region that a keyframe's colors
        reached (all of a keyframe's own frame). The rest hold colors carried per pixel along
        lines and edges, filled in from a neighbour, or the fallback: the colors that still
        flicker, which temporal smoothing should calm while keeping settled ones exact).

    Raises:
        ValueError: a keyframe index outside the shot, or arrays of different sizes.
    """
    params = params or CarryParams()
    count = len(grays)
    if len(fallbacks) != count:
        raise ValueError(f"{count} frames but {len(fallbacks)} fallbacks")
    if any(not 0 <= index < count for index in keyframes):
        raise ValueError(f"keyframes {sorted(keyframes)} outside a shot of {count} frames")
    if any(gray.shape != grays[0].shape for gray in grays) or any(
        lab.shape[:2] != grays[0].shape for lab in (*fallbacks, *keyframes.values())
    ):
        raise ValueError("the frames, fallbacks and keyframes of a shot must share one size")
    if line_art:
        guides = [prepare_guide(gray, "blur", blur_sigma=params.line_blur) for gray in grays]
        labels = [closed_regions(gray, params.gap, params.min_region) for gray in grays]
    else:
        guides = list(grays)
        labels = [
            flat_regions(gray, params.edge_threshold, min_size=params.min_region) for gray in grays
        ]
    carrier = _Carrier(guides, fallbacks, labels, params)
    keys = sorted(keyframes)
    passes = []
    for number, key in enumerate(keys):
        after = keys[number + 1] if number + 1 < len(keys) else count
        before = keys[number - 1] if number > 0 else -1
        passes += [(key, range(key + 1, after)), (key, range(key - 1, before, -1))]
    passes = [(key, order) for key, order in passes if len(order)]
    # Passes are independent (a frame gets at most two, whose sums commute): they run side by
    # side, each with its flows estimated ahead on another thread.
    if len(passes) < 2:
        for key, order in passes:
            carrier.carry(key, keyframes[key], order)
    else:
        workers = min(len(passes), usable_cores())
        with concurrent.futures.ThreadPoolExecutor(workers, "celpaint-carry") as pool:
            futures = [pool.submit(carrier.carry, key, keyframes[key], order)
                       for key, order in passes]  # fmt: skip
            for future in futures:
                future.result()
    settled = carrier.settled
    out = carrier.blend()
    for key in keys:
        out[key] = keyframes[key].astype(np.float32, copy=True)
        settled[key][:] = True
    return out, settled


class _Trail:
    """What travels from a keyframe: per pixel of the current frame, where in the keyframe
    its color came from, whether it came straight from there, and the colors carried."""

    def __init__(self, key_lab: np.ndarray, guide: np.ndarray):
        height, width = key_lab.shape[:2]
        self.key_lab = key_lab
        self.guide = guide  # uint8 (h, w): the current frame's flow guide
        # float32 (h, w, 2) keyframe positions: each pixel's own at the keyframe (no motion).
        self.source = sampling_positions(np.zeros((height, width, 2), np.float32))
        self.direct = np.ones((height, width), np.uint8)  # followed from the keyframe
        self.known = np.ones((height, width), np.uint8)  # a keyframe color (direct or filled)
        self.lab = key_lab  # float32 (h, w, 3)


class _Carrier:
    """The weighted sum of the colors carried into each frame, pass after pass."""

    def __init__(self, guides, fallbacks, labels, params: CarryParams):
        self.guides = guides
        self.fallbacks = fallbacks
        self.labels = labels
        self.params = params
        height, width = guides[0].shape
        self.sums = [np.zeros((height, width, 3), np.float32) for _ in guides]
        self.weights = [np.zeros((height, width), np.float32) for _ in guides]
        self.settled = [np.zeros((height, width), bool) for _ in guides]
        self._lock = threading.Lock()

    def carry(self, key: int, key_lab: np.ndarray, order: range) -> None:
        """Carry ``key_lab`` from frame ``key`` through ``order`` (consecutive frames moving
        away from it). Passes may run on several threads at once."""
        trail = _Trail(key_lab.astype(np.float32, copy=False), self.guides[key])
        for index, positions in zip(order, self._positions(key, order), strict=True):
            weight = self._step(index, positions, trail)
            settled = (trail.known > 0) & (self.labels[index] > 0)
            weight *= np.float32(1.0 / (1 + abs(index - key)) ** self.params.blend_power)
            contribution = trail.lab * weight[..., None]
            with self._lock:
                self.sums[index] += contribution
                self.weights[index] += weight
                self.settled[index] |= settled

    def _positions(self, key: int, order: range) -> Iterator[np.ndarray]:
        """The sampling positions (``flow.sampling_positions``) of each frame of ``order`` in
        the frame before it in the pass, estimated a few frames ahead on another thread."""
        estimator = FlowEstimator(self.params.preset)  # used by the pool's one thread only

        def positions(index: int, previous: int) -> np.ndarray:
            flow = estimator.estimate(self.guides[index], self.guides[previous])
            return sampling_positions(flow)

        with concurrent.futures.ThreadPoolExecutor(1, "celpaint-carry-flow") as pool:
            pending = collections.deque()
            for index, previous in zip(order, [key, *order[:-1]], strict=True):
                pending.append(pool.submit(positions, index, previous))
                if len(pending) > _LOOKAHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _step(self, index: int, positions: np.ndarray, trail: _Trail) -> np.ndarray:
        """Move ``trail`` to frame ``index`` along ``positions`` (its pixels' places in the
        frame before); returns the weight (0..1) of each pixel's carried color."""
        guide = self.guides[index]
        height, width = guide.shape
        inside = cv2.inRange(positions, (-0.5, -0.5), (width - 0.5, height - 0.5))
        moved = warp(trail.guide, positions=positions)
        lost = (inside == 0) | (cv2.absdiff(moved, guide) > self.params.change_threshold)
        trail.guide = guide
        # Keyframe positions follow the flow bilinearly (sub-pixel motion accumulates), except
        # across motion boundaries, where they follow the nearest pixel.
        smooth = warp(trail.source, positions=positions)
        near = warp(trail.source, positions=positions, interpolation=cv2.INTER_NEAREST)
        difference = cv2.absdiff(smooth, near)
        jump = np.maximum(difference[..., 0], difference[..., 1]) > _JUMP
        np.copyto(smooth, near, where=jump[..., None])
        trail.source = smooth
        direct = warp(trail.direct, positions=positions, interpolation=cv2.INTER_NEAREST) > 0
        known = warp(trail.known, positions=positions, interpolation=cv2.INTER_NEAREST) > 0
        direct &= ~lost
        known &= ~lost
        # Colors filled in earlier travel as colors; followed ones come from the keyframe.
        lab = warp(trail.lab, positions=positions, interpolation=cv2.INTER_NEAREST)
        from_key = warp(trail.key_lab, positions=smooth, interpolation=cv2.INTER_NEAREST)
        np.copyto(lab, from_key, where=direct[..., None])
        np.copyto(lab, self.fallbacks[index], where=~known[..., None])
        weight = known.astype(np.float32)
        if known.any():
            labels = self.labels[index]
            lab, trusted = fill_regions(lab, known, labels, self.params.min_known)
            known |= trusted
            weight[trusted] = 1.0
            # The band along lines takes its nearest neighbour's color, completed regions
            # included.
            distance, nearest = nearest_known(known)
            band = ~known & (labels == 0) & (distance <= self.params.band_reach)
            lab.reshape(-1, 3)[np.flatnonzero(band)] = lab.reshape(-1, 3)[nearest[band]]
            weight[band] = _BAND_WEIGHT
        trail.lab = lab
        trail.direct = direct.view(np.uint8)
        trail.known = known.view(np.uint8)
        return weight

    def blend(self) -> list[np.ndarray]:
        """Each frame's weighted mean of what arrived, the fallback where nothing did; made in
        the sums' own arrays (a shot's worth of frames is the largest thing the carry holds)."""
        out = []
        for total, weight, fallback in zip(self.sums, self.weights, self.fallbacks, strict=True):
            missing = weight <= 0
            np.maximum(weight, np.float32(1e-12), out=weight)
            total /= weight[..., None]
            np.copyto(total, fallback, where=missing[..., None])
            out.append(total)
        self.sums = self.weights = None
        return out
