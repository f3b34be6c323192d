"""Closed regions of line art: the paper areas between lines, and one color per region."""

from __future__ import annotations

import cv2
import numpy as np

from celpaint.ops.flow import LINE_THRESHOLD


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

    Why these defaults: docs/design.md#flat-fill-opsregionspy

    Args:
        line_art: uint8 ``(H, W)``, dark lines on light paper, at the size of ``values``
            (at the native size the lines are crisp; at the work size thin lines may have
            faded above ``line_threshold`` and regions merge).
        values: float32 ``(H, W, C)``: the chroma a*b* (``C = 2``), or any per-pixel
            channels to flatten.
        line_threshold: gray level below which a pixel is a line.
        max_samples: the medians are taken over a regular grid of about this many pixels
            (>= 1), which bounds the cost at large sizes. Regions the grid misses entirely
            (smaller or thinner than its step) use all their pixels.

    Returns:
        float32 ``(H, W, C)``, a new array.

    Raises:
        ValueError: ``line_art`` not uint8 ``(H, W)``, ``values`` not ``(H, W, C)`` at its
            size, or ``max_samples < 1``.
    """
    _check_gray(line_art, "line_art")
    if values.ndim != 3 or values.shape[:2] != line_art.shape:
        raise ValueError(
            f"values must be (H, W, C) with (H, W) = {line_art.shape}, got {values.shape}"
        )
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


def closed_regions(
    line_art: np.ndarray,
    gap: int = 2,
    min_size: int = 24,
    line_threshold: int = LINE_THRESHOLD,
) -> np.ndarray:
    """The paint-bucket regions of a line drawing whose lines may leak.

    Lines (pixels darker than ``line_threshold``) are grown by ``gap`` px before the paper is
    split into 4-connected regions, so a gap of up to ``2 * gap`` px in an outline no longer
    joins the two sides; the band along every line, and regions smaller than ``min_size``
    pixels, belong to no region. Regions are thus the *cores* of closed areas: safe to give one
    color each, while the band and small details keep per-pixel colors.

    Args:
        line_art: uint8 ``(H, W)``, dark lines on light paper.
        gap: px by which lines are grown, >= 0.
        min_size: smallest region kept, in pixels.

    Returns:
        int32 ``(H, W)``: 0 outside every region, 1..N for the regions.

    Raises:
        ValueError: ``line_art`` not uint8 ``(H, W)``, or a negative ``gap``.
    """
    _check_gray(line_art, "line_art")
    lines = (line_art < line_threshold).astype(np.uint8)
    return _regions_between(lines, gap, min_size)


def flat_regions(
    gray: np.ndarray, edge_threshold: float = 3.0, gap: int = 0, min_size: int = 24
) -> np.ndarray:
    """The regions of near-constant gray of a grayscale frame: its flat cel areas.

    A pixel is an edge where the gray level changes by more than ``edge_threshold`` levels per
    px (Sobel gradient of the frame smoothed with a Gaussian of sigma 1 px, which already makes
    a step a band of about 4 px); edges are grown by ``gap`` px and the rest split into
    4-connected regions, as ``closed_regions`` does with lines. Smooth shading (a sky's
    gradient) stays inside one region.

    Args:
        gray: uint8 ``(H, W)`` grayscale frame.
        edge_threshold: gray levels per px (> 0) from which a pixel is an edge.
        gap: px by which edges are grown, >= 0.
        min_size: smallest region kept, in pixels.

    Returns:
        int32 ``(H, W)``: 0 on the (grown) edges and in regions smaller than ``min_size``,
        1..N for the regions.

    Raises:
        ValueError: ``gray`` not uint8 ``(H, W)``, ``edge_threshold <= 0`` or ``gap < 0``.
    """
    _check_gray(gray, "gray")
    if edge_threshold <= 0:
        raise ValueError(f"edge_threshold must be positive, got {edge_threshold}")
    smooth = cv2.GaussianBlur(gray, (0, 0), 1.0).astype(np.float32)
    # Sobel's 3x3 kernels weigh the difference of two pixels 2 px apart by 4: /8 gives levels
    # per px.
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    edges = cv2.magnitude(gx, gy) > np.float32(8.0 * edge_threshold)
    return _regions_between(edges.view(np.uint8), gap, min_size)


def _check_gray(image: np.ndarray, name: str) -> None:
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"{name} must be a uint8 (H, W) frame, got {image.dtype} {image.shape}")


def _regions_between(lines: np.ndarray, gap: int, min_size: int) -> np.ndarray:
    """4-connected regions of the pixels away from ``lines`` (uint8 0/1 ``(H, W)``) grown by
    ``gap`` px; regions under ``min_size`` px and the grown lines are 0."""
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    if gap:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
        lines = cv2.dilate(lines, disc)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        1 - lines, connectivity=4, ltype=cv2.CV_32S
    )
    small = stats[:, cv2.CC_STAT_AREA] < min_size
    small[0] = True  # the lines' own component number
    if small.any():
        keep = np.cumsum(~small).astype(np.int32) * ~small
        labels = keep[labels]
    return labels


def nearest_known(known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel, the nearest pixel where ``known`` is True.

    Args:
        known: bool ``(H, W)`` with at least one True pixel.

    Returns:
        (float32 ``(H, W)``: the distance in px, 0 on known pixels (a 3x3 chamfer
        approximation of the Euclidean distance); int64 ``(H, W)``: the flat index
        ``y * W + x`` of that pixel).

    Raises:
        ValueError: no pixel is known.
    """
    if not known.any():
        raise ValueError("no pixel is known")
    distance, seeds = cv2.distanceTransformWithLabels(
        (~known).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    # Every known pixel is a seed of its own label: map labels back to where they are.
    where = np.zeros(int(seeds.max()) + 1, np.int64)
    where[seeds[known]] = np.flatnonzero(known)
    return distance, where[seeds]


def fill_regions(
    values: np.ndarray,
    known: np.ndarray,
    labels: np.ndarray,
    min_fraction: float = 0.25,
    min_pixels: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Complete each region whose colors are known well enough from its known pixels.

    A region is *trusted* when at least ``min_fraction`` of its pixels, and ``min_pixels``, are
    ``known``. Its known pixels keep their values (a gradient stays a gradient); each of its
    other pixels takes the values of the nearest known pixel of a trusted region when that
    pixel lies in its own region, else the region's per-channel median over its known pixels.
    Other regions, and pixels outside every region (label 0), keep ``values``.

    Args:
        values: float32 ``(H, W, C)``.
        known: bool ``(H, W)``: which of ``values`` to trust.
        labels: int32 ``(H, W)`` from ``closed_regions`` or ``flat_regions``.
        min_fraction: share of a region's pixels (0..1] that must be known to trust it.

    Returns:
        (float32 ``(H, W, C)``, a new array; bool ``(H, W)``: the pixels of trusted regions).
    """
    count = int(labels.max()) + 1
    flat = labels.ravel()
    channels = values.shape[2]
    flat_values = values.reshape(-1, channels)
    chosen = known.ravel() & (flat > 0)
    sizes = np.bincount(flat, minlength=count)
    known_counts = np.bincount(flat[chosen], minlength=count)
    trusted = known_counts >= np.maximum(min_pixels, min_fraction * sizes)
    trusted[0] = False
    inside = trusted[labels]
    out = values.astype(np.float32, copy=True)
    todo = inside & ~known
    if not todo.any():
        return out, inside
    _, nearest = nearest_known(known & inside)
    targets = np.flatnonzero(todo)
    sources = nearest.ravel()[targets]
    same = flat[sources] == flat[targets]
    out_flat = out.reshape(-1, channels)
    out_flat[targets[same]] = flat_values[sources[same]]
    if not same.all():
        # Medians only of the regions that need one.
        others = targets[~same]
        needed = np.zeros(count, bool)
        needed[flat[others]] = True
        chosen &= needed[flat]
        medians = np.zeros((count, channels), np.float32)
        _region_medians(flat[chosen], flat_values[chosen], medians)
        out_flat[others] = medians[flat[others]]
    return out, inside
