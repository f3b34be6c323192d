"""Optical flow, warping, occlusion masks, scene-change scores and the warping error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from celpaint.color.array import to_gray
from celpaint.evaluation.warping import WarpingError, warping_error
from celpaint.ops.flow import (
    FlowEstimator,
    end_point_error,
    occlusion_mask,
    prepare_guide,
    sampling_positions,
    scene_change_score,
    warp,
)
from tests.ops.test_temporal import draw_frame


def texture(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 picture, easy for optical flow."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height // 8, width // 8)).astype(np.float32)
    smooth = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth * 255, 0, 255).astype(np.uint8)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by (dx, dy): ``out(p) = image(p - d)``."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    size = (image.shape[1], image.shape[0])
    return cv2.warpAffine(
        image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def test_prepare_guide_modes():
    lines, _ = draw_frame(0)
    assert prepare_guide(lines, "gray") is lines
    blurred = prepare_guide(lines, "blur", blur_sigma=2.0)
    assert np.array_equal(blurred, cv2.GaussianBlur(lines, (0, 0), 2.0))
    distance = prepare_guide(lines, "distance", distance_max=10.0)
    assert distance.dtype == np.uint8 and distance.shape == lines.shape
    assert (distance[lines < 128] == 0).all()
    # The middle of the static rectangle is more than 10 px from any line: saturated.
    assert distance[34, 26] == 255
    assert 0 < distance[34, 12] < 255  # a few px inside the outline: on the ramp
    with pytest.raises(ValueError, match="unknown guide"):
        prepare_guide(lines, "edges")
    with pytest.raises(ValueError, match="uint8"):
        prepare_guide(lines.astype(np.float32))


def test_to_gray():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 200
    gray = to_gray(rgb)
    assert gray.shape == (4, 5) and gray.dtype == np.uint8
    assert gray[0, 0] == round(0.587 * 200)
    assert to_gray(gray) is gray


def test_flow_recovers_a_translation_and_warp_aligns():
    previous = texture()
    current = shifted(previous, 3.0, -2.0)
    flow = FlowEstimator("medium").estimate(current, previous)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    # current(p) = previous(p - d): the flow to the previous frame is -d.
    interior = (slice(16, -16), slice(16, -16))
    median = np.median(flow[interior].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(median, [-3.0, 2.0], atol=0.25)
    aligned = warp(previous, flow)
    error = np.abs(aligned[interior].astype(int) - current[interior]).mean()
    unaligned = np.abs(previous[interior].astype(int) - current[interior]).mean()
    assert error < 0.2 * unaligned


def test_warp_with_zero_flow_is_the_identity():
    image = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    assert np.array_equal(warp(image, np.zeros((20, 30, 2), np.float32)), image)
    with pytest.raises(ValueError, match="differ in size"):
        warp(image, np.zeros((10, 30, 2), np.float32))


def test_warp_shifts_by_the_flow_and_reuses_positions():
    image = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    flow = np.zeros((20, 30, 2), np.float32)
    flow[..., 0] = 2.0  # every pixel takes the value 2 px to its right
    shifted = warp(image, flow)
    np.testing.assert_array_equal(shifted[:, :-2], image[:, 2:])
    positions = sampling_positions(flow)
    np.testing.assert_array_equal(warp(image, positions=positions), shifted)
    with pytest.raises(ValueError, match="either flow or positions"):
        warp(image, flow, positions=positions)
    with pytest.raises(ValueError, match="either flow or positions"):
        warp(image)


def test_flow_on_tiny_frames_is_zero():
    tiny = texture(8, 12)
    assert not FlowEstimator().estimate(tiny, tiny).any()


def test_occlusion_mask():
    height, width = 40, 60
    flow = np.zeros((height, width, 2), np.float32)
    flow[...] = (2.0, 0.0)
    back = -flow
    assert not occlusion_mask(flow, back).any()
    # A patch whose backward flow does not return to the start is occluded.
    bad_back = back.copy()
    bad_back[10:20, 30:40] = (5.0, 5.0)
    occluded = occlusion_mask(flow, bad_back, motion_boundaries=False)
    assert occluded[12:18, 29:37].all()  # p + flow lands in the bad patch
    assert occluded.sum() < 0.1 * occluded.size
    # Matches that leave the frame: the last two columns look 2 px to the right.
    outside = occlusion_mask(flow, back, outside=True)
    assert outside[:, -2:].all() and not outside[:, :-2].any()
    # A motion boundary (flow jumps between two halves) is marked by the gradient test.
    split = np.zeros((height, width, 2), np.float32)
    split[:, 30:] = (1.0, 0.0)
    boundary = occlusion_mask(split, -split, motion_boundaries=True, alpha2=100.0)
    assert boundary[:, 29].all() and not boundary[:, :28].any()


def test_scene_change_score_separates_shots_from_cuts():
    estimator = FlowEstimator("fast")

    def score(current, previous):
        current = prepare_guide(current, "blur")
        previous = prepare_guide(previous, "blur")
        return scene_change_score(current, previous, estimator.estimate(current, previous))

    within = [score(draw_frame(t)[0], draw_frame(t - 1)[0]) for t in range(1, 6)]
    cuts = [score(draw_frame(3, 1)[0], draw_frame(3, 0)[0]),
            score(draw_frame(0, 0)[0], draw_frame(5, 1)[0])]  # fmt: skip
    assert max(within) < 0.1
    assert min(cuts) > 0.2
    assert score(draw_frame(2)[0], draw_frame(2)[0]) == 0.0
    blank = np.full((96, 160), 255, np.uint8)
    assert score(blank, blank) == 0.0
    assert score(blank // 4, blank) > 0.5


def test_end_point_error():
    flow = np.zeros((4, 4, 2), np.float32)
    true = np.full((4, 4, 2), 3.0, np.float32)
    true[..., 1] = 4.0
    assert end_point_error(flow, true) == pytest.approx(5.0)


def test_warping_error_of_a_known_change():
    # A static input (the flow is zero, nothing occluded): outputs that brighten by 0.1 per
    # frame have a warping error of exactly 0.1 ** 2.
    inputs = [texture()] * 3
    outputs = [np.full((96, 128, 3), 0.2 + 0.1 * t, np.float32) for t in range(3)]
    per_pair, mean = warping_error(outputs, inputs)
    np.testing.assert_allclose(per_pair, [0.01, 0.01], rtol=1e-5)
    assert mean == pytest.approx(0.01, rel=1e-5)
    # The same in uint8 with a change in one channel only: (10 / 255) ** 2 / 3.
    frames = [np.full((96, 128, 3), 100, np.uint8), np.full((96, 128, 3), 100, np.uint8)]
    frames[1][..., 0] = 110
    _, mean = warping_error(frames, inputs[:2])
    assert mean == pytest.approx((10 / 255) ** 2 / 3, rel=1e-4)


def test_warping_error_follows_the_motion():
    # The true colors of a moving drawing are consistent along the motion; flickering ones are
    # not, and a static copy of the first frame does not follow the motion.
    drawn = [draw_frame(t) for t in range(6)]
    inputs = [lines for lines, _ in drawn]
    truth = [rgb for _, rgb in drawn]
    rng = np.random.default_rng(0)
    flicker = [np.clip(rgb + rng.integers(-20, 21, 3), 0, 255).astype(np.uint8) for rgb in truth]
    truth_error = warping_error(truth, inputs)[1]
    assert truth_error < 0.5 * warping_error(flicker, inputs)[1]
    assert truth_error < 0.5 * warping_error([truth[0]] * 6, inputs)[1]
    assert warping_error(truth[:1], inputs[:1]) == ([], pytest.approx(float("nan"), nan_ok=True))


def test_warping_error_streams_share_one_flow():
    drawn = [draw_frame(t) for t in range(4)]
    inputs = [lines for lines, _ in drawn]
    first = [rgb for _, rgb in drawn]
    second = [np.roll(rgb, 1, axis=2) for rgb in first]
    meter = WarpingError(streams=2)
    assert meter.add(inputs[0], first[0], second[0]) is None
    for t in range(1, 4):
        errors = meter.add(inputs[t], first[t], second[t])
        assert len(errors) == 2
    assert meter.per_pair[0] == warping_error(first, inputs)[0]
    assert meter.per_pair[1] == warping_error(second, inputs)[0]
    assert meter.means() == [warping_error(first, inputs)[1], warping_error(second, inputs)[1]]
    meter.reset()
    assert meter.per_pair == [[], []]


def test_warping_error_rejects_mismatches():
    inputs = [texture()] * 2
    good = np.zeros((96, 128, 3), np.uint8)
    with pytest.raises(ValueError, match="fewer output"):
        warping_error([good], inputs)
    with pytest.raises(ValueError, match="more output"):
        warping_error([good] * 3, inputs)
    with pytest.raises(ValueError, match="differ in size"):
        warping_error([np.zeros((50, 128, 3), np.uint8)] * 2, inputs)
    with pytest.raises(ValueError, match="expected 2"):
        WarpingError(streams=2).add(inputs[0], good)
