"""Keyframe colors carried along motion (ops.carry) and the regions they fill (ops.regions)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from celpaint.color.array import rgb_to_lab, to_gray
from celpaint.ops.carry import CarryParams, carry_shot, lightness_palette, palette_fill
from celpaint.ops.regions import closed_regions, fill_regions, flat_regions, nearest_known
from tests.shots import DISC, PAPER, SQUARE, TRIANGLE, interiors, shot


def _delta(lab: np.ndarray, rgb, chroma: bool = False) -> np.ndarray:
    """Euclidean L*a*b* (``chroma``: a*b*) distance of every pixel of ``lab`` to ``rgb``."""
    target = rgb_to_lab(np.array([[rgb]], np.uint8))[0, 0]
    return np.linalg.norm(lab - (target[1:] if chroma else target), axis=2)


def _carry(colors, lines, keys, fallback_rgb=(128, 128, 128), line_art=True, **params):
    grays = [to_gray(frame) for frame in lines]
    fallback = rgb_to_lab(np.full(colors.shape[1:], fallback_rgb, np.uint8))
    keyframes = {k: rgb_to_lab(colors[k]) for k in keys}
    return carry_shot(grays, [fallback] * len(grays), keyframes, line_art, CarryParams(**params))[0]


@pytest.mark.parametrize("rotate", [False, True])
def test_keyframe_colors_reach_every_later_interior(rotate):
    colors, lines = shot(12, rotate=rotate)
    carried = _carry(colors, lines, [0])
    for t in range(1, 12):
        for rgb in (PAPER, SQUARE, DISC):
            inside = interiors(colors[t], rgb)
            assert inside.sum() > 50
            # Flat and exact: the region takes the keyframe's own color (Delta E < 1).
            assert np.percentile(_delta(carried[t], rgb)[inside], 99) < 1.0, (t, rgb)


def test_colors_travel_backwards_from_a_later_keyframe():
    colors, lines = shot(10)
    carried = _carry(colors, lines, [9])
    for rgb in (SQUARE, DISC):
        inside = interiors(colors[0], rgb)
        assert np.percentile(_delta(carried[0], rgb)[inside], 99) < 1.0


def test_a_newly_appearing_region_gets_the_fallback():
    colors, lines = shot(12, entering=True)
    carried = _carry(colors, lines, [0], fallback_rgb=(128, 128, 128))
    inside = interiors(colors[11], TRIANGLE, margin=2)
    assert inside.sum() > 20
    assert np.median(_delta(carried[11], (128, 128, 128))[inside]) < 1.0
    grays = [to_gray(frame) for frame in lines]
    fallback = rgb_to_lab(np.full(colors.shape[1:], (128, 128, 128), np.uint8))
    _, reached = carry_shot(grays, [fallback] * 12, {0: rgb_to_lab(colors[0])}, True)
    assert not reached[11][inside].any() and reached[11][interiors(colors[11], SQUARE)].all()
    # ... while the regions the keyframe shows keep its colors.
    assert np.percentile(_delta(carried[11], SQUARE)[interiors(colors[11], SQUARE)], 99) < 1.0


def test_two_keyframes_blend_without_a_seam():
    colors, lines = shot(9)
    squares = [interiors(frame, SQUARE) for frame in colors]
    # The last keyframe repaints the square: the frames between move from one to the other.
    colors[8][np.all(colors[8] == np.array(SQUARE, np.uint8), axis=2)] = (230, 160, 40)
    carried = _carry(colors, lines, [0, 8])
    means = [carried[t][squares[t]].mean(axis=0) for t in range(9)]
    steps = [np.linalg.norm(b - a) for a, b in zip(means, means[1:], strict=False)]
    total = np.linalg.norm(means[-1] - means[0])
    assert total > 20
    # No jump larger than twice an even share of the change.
    assert max(steps) < 2 * total / 8


def test_the_band_along_lines_takes_its_neighbours_colors():
    colors, lines = shot(12)
    carried = _carry(colors, lines, [0], fallback_rgb=(128, 128, 128))
    # Paper-side pixels within 2 px of a line belong to no region (lines are grown by 2 px).
    paper = lines[11][..., 0] >= 250
    near_line = cv2.dilate((lines[11][..., 0] < 128).view(np.uint8), np.ones((5, 5), np.uint8))
    band = paper & (near_line > 0)
    assert band.sum() > 100
    nearest = np.min([_delta(carried[11], rgb) for rgb in (PAPER, SQUARE, DISC)], axis=0)
    # ... and they get one of the colors around them, not the fallback gray.
    assert np.percentile(nearest[band], 90) < 3.0
    assert np.percentile(_delta(carried[11], (128, 128, 128))[band], 10) > 20


def test_passes_on_threads_give_the_same_colors(monkeypatch):
    colors, lines = shot(12)
    threaded = _carry(colors, lines, [0, 5, 11])
    monkeypatch.setattr("celpaint.ops.carry.usable_cores", lambda: 1)
    one_by_one = _carry(colors, lines, [0, 5, 11])
    assert all(np.array_equal(a, b) for a, b in zip(threaded, one_by_one, strict=True))


def test_keyframes_are_returned_as_they_are():
    colors, lines = shot(4)
    carried = _carry(colors, lines, [0, 3])
    assert np.array_equal(carried[0], rgb_to_lab(colors[0]))
    assert np.array_equal(carried[3], rgb_to_lab(colors[3]))
    grays = [to_gray(frame) for frame in lines]
    with pytest.raises(ValueError, match="outside"):
        carry_shot(grays, carried, {4: carried[0]}, True)


def test_closed_regions_close_small_gaps_only():
    lines = np.full((60, 80), 255, np.uint8)
    lines[:, 40] = 0  # a wall with a 3 px gap
    lines[28:31, 40] = 255
    assert len(np.unique(closed_regions(lines, gap=0)[lines > 0])) == 1  # leaks
    labels = closed_regions(lines, gap=2)
    assert labels[30, 10] != labels[30, 70] and labels[30, 10] > 0 and labels[30, 70] > 0
    # A 12 px gap is a real opening: one region.
    lines[24:36, 40] = 255
    labels = closed_regions(lines, gap=2)
    assert labels[30, 10] == labels[30, 70]


def test_grayscale_colors_reach_every_later_interior():
    colors, _ = shot(12)
    # Grayscale input: the frames' own gray, regions of flat gray instead of lines.
    carried = _carry(colors, colors, [0], line_art=False)
    for t in range(1, 12):
        for rgb in (PAPER, SQUARE, DISC):
            inside = interiors(colors[t], rgb)
            assert np.percentile(_delta(carried[t][..., 1:], rgb, chroma=True)[inside], 99) < 1.0


def test_sub_pixel_motion_adds_up():
    """A square drifting 0.4 px a frame: after 20 frames its colors have moved 8 px with it
    (sampling the previous frame's colors at the nearest pixel would leave them where they
    were)."""
    frames = []
    for t in range(21):
        color = np.full((64, 96, 3), PAPER, np.uint8)
        left = 20 + 0.4 * t
        # Anti-aliased edges so that the input shows the sub-pixel position.
        xs = np.arange(96, dtype=np.float32)
        cover = np.clip(xs + 1 - left, 0, 1) * np.clip(left + 24 - xs, 0, 1)
        rows = slice(20, 44)
        color[rows] = (PAPER + cover[:, None] * (np.subtract(SQUARE, PAPER))).astype(np.uint8)
        frames.append(color)
    colors = np.stack(frames)
    carried = _carry(colors, colors, [0], line_art=False)
    inside = interiors(colors[20], SQUARE, margin=1)
    assert inside.sum() > 200
    assert np.percentile(_delta(carried[20][..., 1:], SQUARE, chroma=True)[inside], 95) < 2.0


def test_flat_regions_split_at_edges_and_keep_gradients():
    gray = np.zeros((60, 80), np.uint8)
    gray[:, :40] = np.linspace(100, 140, 60, dtype=np.float32)[:, None]  # a sky's gradient
    gray[:, 40:] = 30  # a step of 70+ levels: an edge
    labels = flat_regions(gray)
    assert labels[2, 10] == labels[57, 30] > 0  # the gradient is one region
    assert labels[30, 60] > 0 and labels[30, 60] != labels[30, 10]
    assert labels[30, 40] == 0  # the edge belongs to no region


def test_fill_regions_complete_trusted_regions_from_their_known_pixels():
    labels = np.zeros((10, 20), np.int32)
    labels[:, :10], labels[:, 10:] = 1, 2
    values = np.zeros((10, 20, 3), np.float32)
    values[:, :10, 0] = np.arange(10, dtype=np.float32)[:, None]  # a gradient down region 1
    known = np.zeros((10, 20), bool)
    known[:, :5] = True  # half of region 1
    known[0, 10] = True  # 1 of 100 pixels: too few to trust region 2
    values[0, 10] = 99.0
    out, trusted = fill_regions(values, known, labels)
    assert trusted[:, :10].all() and not trusted[:, 10:].any()
    # Known pixels keep their values; the others take their row's nearest known value.
    np.testing.assert_array_equal(out[:, :10, 0], np.repeat(np.arange(10.0)[:, None], 10, 1))
    assert np.array_equal(out[:, 10:], values[:, 10:])


def test_nearest_known_finds_the_closest_known_pixel():
    known = np.zeros((5, 7), bool)
    known[1, 1] = known[3, 6] = True
    distance, nearest = nearest_known(known)
    assert nearest[0, 0] == 1 * 7 + 1 and nearest[4, 5] == 3 * 7 + 6
    assert distance[1, 1] == 0 and distance[1, 3] == pytest.approx(2, abs=0.1)
    with pytest.raises(ValueError, match="no pixel"):
        nearest_known(np.zeros((3, 3), bool))


def test_lightness_palette_gives_each_level_the_keyframes_color():
    key = rgb_to_lab(np.array([[SQUARE] * 40 + [PAPER] * 40], np.uint8))
    palette = lightness_palette([key])
    # The same L* without chroma (a grayscale frame of the keyframe) gets its colors back.
    gray = key.copy()
    gray[..., 1:] = 0.0
    np.testing.assert_allclose(palette_fill(gray, palette), key, atol=1e-4)
    # A level the keyframes never show (and none within reach) keeps its own a*b*.
    dark = np.zeros((1, 1, 3), np.float32)
    dark[..., 0] = 5.0
    assert np.isnan(palette[5, 0]) and np.array_equal(palette_fill(dark, palette), dark)
