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
    if line_art.dtype != np.uint8 or line_art.ndim != 2:
        raise ValueError(
            f"line_art must be a uint8 (H, W) frame, got {line_art.dtype} {line_art.shape}"
        )
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
    if line_art.dtype != np.uint8 or line_art.ndim != 2:
        raise ValueError(
            f"line_art must be a uint8 (H, W) frame, got {line_art.dtype} {line_art.shape}"
        )
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    lines = (line_art < line_threshold).astype(np.uint8)
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


def region_medians(
    values: np.ndarray,
    known: np.ndarray,
    labels: np.ndarray,
    min_fraction: float = 0.25,
    min_pixels: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill each region whose colors are known well enough with their median.

    A region is *trusted* when at least ``min_fraction`` of its pixels, and ``min_pixels``, are
    ``known``; it then takes, on every pixel, the per-channel median of ``values`` over its
    known pixels. Other regions, and pixels outside every region (label 0), keep ``values``.

    Args:
        values: float32 ``(H, W, C)``.
        known: bool ``(H, W)``: which of ``values`` to trust.
        labels: int32 ``(H, W)`` from ``closed_regions``.

    Returns:
        (float32 ``(H, W, C)``, a new array; bool ``(H, W)``: the pixels of trusted regions).
    """
    count = int(labels.max()) + 1
    flat = labels.ravel()
    channels = values.shape[2]
    chosen = known.ravel() & (flat > 0)
    sizes = np.bincount(flat, minlength=count)
    known_labels = flat[chosen]
    order = np.argsort(known_labels, kind="stable")
    sorted_labels = known_labels[order]
    sorted_values = values.reshape(-1, channels)[chosen][order]
    bounds = np.searchsorted(sorted_labels, np.arange(count + 1))
    medians = np.zeros((count, channels), np.float32)
    trusted = np.zeros(count, bool)
    for region in range(1, count):
        start, end = bounds[region], bounds[region + 1]
        if end - start >= max(min_pixels, min_fraction * sizes[region]):
            medians[region] = np.median(sorted_values[start:end], axis=0)
            trusted[region] = True
    inside = trusted[labels]
    out = values.astype(np.float32, copy=True)
    out[inside] = medians[labels[inside]]
    return out, inside
