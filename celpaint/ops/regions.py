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
