"""TemporalSmoother and flat_fill on generated line-art clips with a noisy oracle generator."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch
from skimage.measure import label
from torch import nn

from celpaint.color.array import lab_to_rgb, rgb_to_lab
from celpaint.errors import InputError
from celpaint.evaluation.warping import warping_error
from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.sinks import EncodeOptions
from celpaint.models.checkpoint import ModelConfig
from celpaint.ops.regions import flat_fill
from celpaint.ops.temporal import TemporalParams, TemporalSmoother
from celpaint.pipeline.api import colorize
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer
from celpaint.pipeline.jobs import is_clip, plan

HEIGHT, WIDTH = 96, 160
PAPER = (235, 225, 200)


def draw_frame(t: int, scene: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` of a small cel clip: (line art uint8 (H, W), ground truth uint8 (H, W, 3)).

    Scene 0: a static outlined rectangle on the left, a horizon line, and a square moving
    3 px right and 1 px down per frame on the right. Scene 1 (for cuts): different shapes.
    """
    color = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    color[:] = PAPER
    lines = np.full((HEIGHT, WIDTH), 255, np.uint8)
    if scene == 0:
        color[70:] = (90, 110, 160)
        cv2.line(lines, (0, 70), (WIDTH, 70), 0, 2)
        cv2.rectangle(color, (8, 12), (44, 56), (230, 140, 40), -1)
        cv2.rectangle(lines, (8, 12), (44, 56), 0, 2)
        x, y = 80 + 3 * t, 14 + t
        cv2.rectangle(color, (x, y), (x + 28, y + 28), (60, 170, 80), -1)
        lines[y : y + 29, x : x + 29] = 255
        cv2.rectangle(lines, (x, y), (x + 28, y + 28), 0, 2)
    else:
        cv2.line(lines, (100, 0), (100, HEIGHT), 0, 2)
        color[:, 101:] = (200, 90, 120)
        center = (40 - 2 * t, 50)
        cv2.circle(color, center, 22, (120, 60, 200), -1)
        cv2.circle(lines, center, 22, 0, 2)
        cv2.rectangle(color, (115, 30), (150, 80), (240, 220, 60), -1)
        cv2.rectangle(lines, (115, 30), (150, 80), 0, 2)
    truth = (color.astype(np.float32) * (lines[..., None] / 255.0)).astype(np.uint8)
    return lines, truth


def make_clip(frames: int, scene: int = 0):
    drawn = [draw_frame(t, scene) for t in range(frames)]
    return [d[0] for d in drawn], [rgb_to_lab(d[1]) for d in drawn]


def noisy_oracle(truth_lab: list[np.ndarray], seed: int, quiet: np.ndarray | None = None):
    """A generator that flickers: per frame, a smooth random chroma field (std 8) plus pixel
    noise (std 2) on top of the truth; zero noise where ``quiet`` is True."""
    rng = np.random.default_rng(seed)
    predictions = []
    for lab in truth_lab:
        field = rng.normal(0, 8, (3, 5, 2)).astype(np.float32)
        field = cv2.resize(field, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
        noise = field + rng.normal(0, 2, (HEIGHT, WIDTH, 2)).astype(np.float32)
        if quiet is not None:
            noise[quiet] = 0
        prediction = lab.copy()
        prediction[..., 1:] += noise
        predictions.append(prediction)
    return predictions


def smooth(grays, labs, smoother=None, chunk: int | None = None, workers: int = 1):
    smoother = smoother or TemporalSmoother()
    if chunk is None:
        return [smoother.process(g, lab) for g, lab in zip(grays, labs, strict=True)]
    outputs = []
    for start in range(0, len(grays), chunk):
        batch = smoother.process_batch(
            np.stack(grays[start : start + chunk]), np.stack(labs[start : start + chunk]),
            workers,
        )  # fmt: skip
        outputs.extend(batch)
    return outputs


@pytest.fixture(scope="module")
def clip():
    grays, truth = make_clip(12)
    return grays, truth, noisy_oracle(truth, seed=1)


def test_smoothing_lowers_warping_error_and_error_against_truth(clip):
    grays, truth, predictions = clip
    smoothed = smooth(grays, predictions)
    _, raw_error = warping_error([lab_to_rgb(p) for p in predictions], grays)
    per_pair, smooth_error = warping_error([lab_to_rgb(s) for s in smoothed], grays)
    assert len(per_pair) == len(grays) - 1
    # The target is 30% lower; the oracle's flicker is removed far more than that.
    assert smooth_error < 0.5 * raw_error

    def chroma_error(labs):
        pairs = zip(labs, truth, strict=True)
        return np.mean([np.abs(a[..., 1:] - t[..., 1:]).mean() for a, t in pairs])

    assert chroma_error(smoothed) < 0.8 * chroma_error(predictions)


def test_luminance_is_untouched(clip):
    grays, _, predictions = clip
    for prediction, out in zip(predictions, smooth(grays, predictions), strict=True):
        assert out.dtype == np.float32 and out.shape == prediction.shape
        assert np.array_equal(out[..., 0], prediction[..., 0])


def test_lightness_smoothing_spares_the_lines(clip):
    grays, truth, predictions = clip
    rng = np.random.default_rng(7)
    # The oracle's paint flickers in L* too.
    flickering = []
    for prediction in predictions:
        noisy = prediction.copy()
        noisy[..., 0] += rng.normal(0, 4, (HEIGHT, WIDTH)).astype(np.float32)
        flickering.append(noisy)
    smoother = TemporalSmoother(TemporalParams(lightness=True))
    outputs = smooth(grays, flickering, smoother)
    chroma_only = smooth(grays, flickering)

    def l_error(labs):
        pairs = zip(labs, truth, strict=True)
        return np.mean([np.abs(a[..., 0] - t[..., 0]).mean() for a, t in pairs])

    assert l_error(outputs) < 0.7 * l_error(flickering)
    assert np.allclose(l_error(chroma_only), l_error(flickering))
    for gray, out, prediction, plain in zip(grays, outputs, flickering, chroma_only, strict=True):
        lines = gray < 128
        assert np.array_equal(out[..., 0][lines], prediction[..., 0][lines])
        # Chroma is smoothed exactly as without lightness.
        assert np.array_equal(out[..., 1:], plain[..., 1:])


def test_static_regions_are_left_unchanged():
    grays, truth = make_clip(10)
    # The static rectangle and the paper around it; the moving square stays right of x = 75.
    static = np.zeros((HEIGHT, WIDTH), bool)
    static[:, :60] = True
    predictions = noisy_oracle(truth, seed=2, quiet=static)
    for prediction, out in zip(predictions, smooth(grays, predictions), strict=True):
        np.testing.assert_allclose(out[static], prediction[static], atol=1e-3)


def test_batching_does_not_change_the_result(clip):
    grays, _, predictions = clip
    one = smooth(grays, predictions, chunk=1)
    for chunk in (3, 8):
        other = smooth(grays, predictions, chunk=chunk)
        assert all(np.array_equal(a, b) for a, b in zip(one, other, strict=True))
    # And frame by frame through process() is the same as batches.
    single = smooth(grays, predictions)
    assert all(np.array_equal(a, b) for a, b in zip(one, single, strict=True))


def test_motion_on_several_threads_changes_nothing():
    # A cut inside a batch, batches of different lengths, and a first frame with no past.
    grays_a, truth_a = make_clip(7, scene=0)
    grays_b, truth_b = make_clip(6, scene=1)
    grays, truth = grays_a + grays_b, truth_a + truth_b
    predictions = noisy_oracle(truth, seed=5)
    expected = smooth(grays, predictions)
    smoother = TemporalSmoother()
    for chunk in (4, 5):
        smoother.reset()
        threaded = smooth(grays, predictions, smoother, chunk=chunk, workers=3)
        assert all(np.array_equal(a, b) for a, b in zip(expected, threaded, strict=True))
    assert smoother.last_cut is False and np.isfinite(smoother.last_score)


def test_a_cut_resets_the_state_exactly():
    grays_a, truth_a = make_clip(8, scene=0)
    grays_b, truth_b = make_clip(6, scene=1)
    predictions_a = noisy_oracle(truth_a, seed=3)
    predictions_b = noisy_oracle(truth_b, seed=4)
    smoother = TemporalSmoother()
    cuts = []
    outputs = []
    for gray, lab in zip(grays_a + grays_b, predictions_a + predictions_b, strict=True):
        outputs.append(smoother.process(gray, lab))
        cuts.append(smoother.last_cut)
    assert cuts == [True] + [False] * 7 + [True] + [False] * 5
    alone = smooth(grays_b, predictions_b)
    assert all(np.array_equal(a, b) for a, b in zip(outputs[8:], alone, strict=True))
    # The first frame after the cut is the prediction itself: nothing carried over.
    assert np.array_equal(outputs[8], predictions_b[0])


def test_reset_starts_a_new_clip(clip):
    grays, _, predictions = clip
    smoother = TemporalSmoother()
    smooth(grays[:5], predictions[:5], smoother)
    smoother.reset()
    again = smooth(grays[5:], predictions[5:], smoother)
    fresh = smooth(grays[5:], predictions[5:])
    assert all(np.array_equal(a, b) for a, b in zip(again, fresh, strict=True))
    assert np.array_equal(again[0], predictions[5])


def test_scene_threshold_controls_cuts(clip):
    grays, _, predictions = clip
    smoother = TemporalSmoother(TemporalParams(scene_threshold=0.0))
    outputs = smooth(grays, predictions, smoother)
    # Every frame counts as a cut: nothing is smoothed.
    assert all(np.array_equal(a, b) for a, b in zip(outputs, predictions, strict=True))


def test_strength_zero_is_a_pass_through_and_strength_raises_smoothing(clip):
    grays, _, predictions = clip
    off = smooth(grays, predictions, TemporalSmoother(TemporalParams(strength=0.0)))
    assert all(np.array_equal(a, b) for a, b in zip(off, predictions, strict=True))

    def flicker(outputs):
        return warping_error([lab_to_rgb(o) for o in outputs], grays)[1]

    weak = smooth(grays, predictions, TemporalSmoother(TemporalParams(strength=0.3)))
    strong = smooth(grays, predictions, TemporalSmoother(TemporalParams(strength=0.8)))
    assert flicker(strong) < flicker(weak) < flicker(predictions)


def test_a_new_frame_size_starts_a_new_shot(clip):
    grays, _, predictions = clip
    smoother = TemporalSmoother()
    smooth(grays[:3], predictions[:3], smoother)
    small_gray = np.ascontiguousarray(grays[3][:64, :100])
    small_lab = np.ascontiguousarray(predictions[3][:64, :100])
    out = smoother.process(small_gray, small_lab)
    assert smoother.last_cut
    assert np.array_equal(out, small_lab)


def test_flow_at_reduced_size_still_smooths(clip):
    grays, _, predictions = clip
    smoother = TemporalSmoother(TemporalParams(flow_size=80))
    outputs = smooth(grays, predictions, smoother)
    assert not smoother.last_cut
    raw = warping_error([lab_to_rgb(p) for p in predictions], grays)[1]
    assert warping_error([lab_to_rgb(o) for o in outputs], grays)[1] < 0.7 * raw


def test_bad_input_is_rejected():
    smoother = TemporalSmoother()
    gray = np.full((32, 48), 255, np.uint8)
    lab = np.zeros((32, 48, 3), np.float32)
    with pytest.raises(ValueError, match="uint8"):
        smoother.process(gray.astype(np.float32), lab)
    with pytest.raises(ValueError, match="float32"):
        smoother.process(gray, lab.astype(np.float64))
    with pytest.raises(ValueError, match="differ in size"):
        smoother.process(gray, lab[:16])
    for bad in (dict(strength=1.5), dict(scene_threshold=-0.1), dict(change_threshold=0.0)):
        with pytest.raises(ValueError):
            TemporalParams(**bad)


def constructed_drawing() -> np.ndarray:
    """Line art with closed regions: a frame border, a rectangle split by a one-pixel
    diagonal, a nested rectangle, and a thick circle."""
    lines = np.full((90, 140), 255, np.uint8)
    cv2.rectangle(lines, (0, 0), (139, 89), 0, 1)
    cv2.rectangle(lines, (10, 10), (60, 70), 0, 2)
    cv2.line(lines, (11, 11), (59, 69), 0, 1)  # 8-connected diagonal: still a separator
    cv2.rectangle(lines, (75, 10), (130, 50), 0, 2)
    cv2.rectangle(lines, (90, 20), (115, 40), 0, 1)
    cv2.circle(lines, (105, 72), 12, 0, 3)
    return lines


def test_flat_fill_gives_one_color_per_closed_region():
    lines = constructed_drawing()
    rng = np.random.default_rng(0)
    regions = label(lines >= 128, connectivity=1)
    # Paper, two triangles (the one-pixel diagonal separates them), ring, inner box, disc.
    assert regions.max() == 6
    # Every region has its own color, with noise and a few wild speckles on top.
    base = rng.uniform(-60, 60, (regions.max() + 1, 2)).astype(np.float32)
    ab = base[regions] + rng.normal(0, 4, (*lines.shape, 2)).astype(np.float32)
    speckle = rng.random(lines.shape) < 0.03
    ab[speckle] = 100.0
    filled = flat_fill(lines, ab)
    assert filled.dtype == np.float32 and filled.shape == ab.shape
    for region in range(1, regions.max() + 1):
        inside = filled[regions == region]
        assert len(np.unique(inside, axis=0)) == 1, f"region {region} has several colors"
        # The median ignores the speckles: close to the region's true color.
        np.testing.assert_allclose(inside[0], base[region], atol=2.0)
    # Line pixels keep their own values.
    assert np.array_equal(filled[regions == 0], ab[regions == 0])


def test_flat_fill_sampling_covers_small_regions():
    lines = constructed_drawing()
    # Tiny closed regions the sampling grid can miss: 2x2 holes in a solid black block.
    lines[60:80, 20:40] = 0
    lines[65:67, 25:27] = 255
    lines[70:72, 31:33] = 255
    rng = np.random.default_rng(1)
    ab = rng.normal(0, 10, (*lines.shape, 2)).astype(np.float32)
    sampled = flat_fill(lines, ab, max_samples=500)
    regions = label(lines >= 128, connectivity=1)
    for region in range(1, regions.max() + 1):
        assert len(np.unique(sampled[regions == region], axis=0)) == 1
    # The tiny holes took the median of their own four pixels.
    np.testing.assert_allclose(sampled[65, 25], np.median(ab[65:67, 25:27].reshape(-1, 2), 0))
    np.testing.assert_allclose(sampled[70, 31], np.median(ab[70:72, 31:33].reshape(-1, 2), 0))


def test_flat_fill_without_lines_is_one_region():
    ab = np.random.default_rng(2).normal(0, 5, (20, 30, 2)).astype(np.float32)
    filled = flat_fill(np.full((20, 30), 255, np.uint8), ab)
    expected = np.median(ab.reshape(-1, 2), axis=0)
    np.testing.assert_allclose(filled.reshape(-1, 2), np.broadcast_to(expected, (600, 2)))
    with pytest.raises(ValueError):
        flat_fill(np.full((20, 30), 255, np.uint8), ab[:10])


# --- The whole path: Colorizer.stream and run.colorize with a noisy oracle for a generator ---


class OracleGenerator(nn.Module):
    """Stands in for the network: answers each network input with the stored output of the
    frame whose input it is (nearest stored input), whatever the batch it comes in."""

    def __init__(self, inputs: torch.Tensor, outputs: torch.Tensor):
        super().__init__()
        self.register_buffer("inputs", inputs)
        self.register_buffer("outputs", outputs)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        distance = (source[:, None] - self.inputs[None]).abs().flatten(2).mean(-1)
        return self.outputs[distance.argmin(1)]


def oracle_colorizer(grays: list[np.ndarray], predictions: list[np.ndarray]) -> Colorizer:
    """A line-art Colorizer (RGB output, at the clip's own size) whose generator returns
    ``predictions`` (float32 L*a*b*) for the frames ``grays``."""
    config = ModelConfig("oracle", {}, "lineart", "rgb", size_multiple=16, work_size=WIDTH)
    placeholder = OracleGenerator(torch.zeros(1, 1, 1, 1), torch.zeros(1, 3, 1, 1))
    colorizer = Colorizer(placeholder, config, device="cpu")
    frames = np.stack([np.repeat(g[..., None], 3, axis=2) for g in grays])
    inputs = colorizer.network_input(colorizer.to_tensor(frames), colorizer.geometry(HEIGHT, WIDTH))
    rgb = np.stack([lab_to_rgb(p) for p in predictions]).astype(np.float32) / 255
    outputs = torch.from_numpy(rgb).permute(0, 3, 1, 2) * 2 - 1  # the network's [-1, 1]
    outputs = torch.nn.functional.pad(
        outputs, (0, inputs.shape[-1] - WIDTH, 0, inputs.shape[-2] - HEIGHT), mode="replicate"
    )
    colorizer.model = OracleGenerator(inputs, outputs).eval()
    return colorizer


def write_folder(folder, grays) -> str:
    folder.mkdir()
    for index, gray in enumerate(grays):
        write_image(folder / f"frame_{index + 1:03d}.png", np.repeat(gray[..., None], 3, 2))
    return str(folder)


def colorize_folder(
    folder, output, colorizer, temporal=True, batch_size=None, **params
) -> list[np.ndarray]:
    """``colorize`` a folder with smoothing ``params`` (``TemporalParams`` fields) and a batch
    size (the colorizer's when None); returns the frames written."""
    if batch_size is not None:
        colorizer = copy.copy(colorizer)
        colorizer.batch_size = batch_size
    options = ColorizeOptions(temporal=TemporalParams(**params) if temporal else None)
    colorize(folder, output, colorizer, options)
    return [read_image(path) for path in list_images(output)]


@pytest.fixture(scope="module")
def scene_clips():
    grays_a, truth_a = make_clip(8, scene=0)
    grays_b, truth_b = make_clip(6, scene=1)
    # Quiet (noise-free) left part: static regions of scene 0.
    quiet = np.zeros((HEIGHT, WIDTH), bool)
    quiet[:, :60] = True
    predictions_a = noisy_oracle(truth_a, seed=5, quiet=quiet)
    predictions_b = noisy_oracle(truth_b, seed=6)
    colorizer = oracle_colorizer(grays_a + grays_b, predictions_a + predictions_b)
    return colorizer, grays_a, grays_b


def test_clip_smoothing_through_the_colorizer(tmp_path, scene_clips):
    colorizer, grays, _ = scene_clips
    folder = write_folder(tmp_path / "clip", grays)
    smoothed = colorize_folder(folder, tmp_path / "smoothed", colorizer)
    raw = colorize_folder(folder, tmp_path / "raw", colorizer, temporal=False)
    # Without smoothing the output is the oracle's own flicker.
    assert np.array_equal(raw[3], colorizer.colorize(np.repeat(grays[3][..., None], 3, 2)))
    raw_error = warping_error(raw, grays)[1]
    assert warping_error(smoothed, grays)[1] < 0.5 * raw_error
    # The static, noise-free left part comes out as without smoothing (8-bit rounding aside).
    for a, b in zip(smoothed, raw, strict=True):
        assert np.abs(a[:, :60].astype(int) - b[:, :60]).max() <= 1
    # Lower strength, less smoothing; strength 0 is no smoothing at all.
    weak = colorize_folder(folder, tmp_path / "weak", colorizer, strength=0.3)
    assert warping_error(smoothed, grays)[1] < warping_error(weak, grays)[1] < raw_error
    off = colorize_folder(folder, tmp_path / "off", colorizer, strength=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(off, raw, strict=True))


def test_batching_does_not_change_the_colorized_clip(tmp_path, scene_clips):
    colorizer, grays_a, grays_b = scene_clips
    folder = write_folder(tmp_path / "clip", grays_a + grays_b)
    one = colorize_folder(folder, tmp_path / "one", colorizer, batch_size=1)
    eight = colorize_folder(folder, tmp_path / "eight", colorizer, batch_size=8)
    assert len(one) == len(grays_a) + len(grays_b)
    assert all(np.array_equal(a, b) for a, b in zip(one, eight, strict=True))


def test_a_cut_in_a_clip_resets_the_colors_exactly(tmp_path, scene_clips):
    colorizer, grays_a, grays_b = scene_clips
    both = colorize_folder(
        write_folder(tmp_path / "both", grays_a + grays_b), tmp_path / "out", colorizer,
        batch_size=3,
    )  # fmt: skip
    alone = colorize_folder(write_folder(tmp_path / "b", grays_b), tmp_path / "b_out", colorizer)
    after_cut = both[len(grays_a) :]
    assert all(np.array_equal(a, b) for a, b in zip(after_cut, alone, strict=True))
    # The next input starts afresh too: a stream is made per input.
    outputs = tmp_path / "several"
    colorize([tmp_path / "both", tmp_path / "b"], outputs, colorizer)
    again = [read_image(path) for path in list_images(outputs / "b")]
    assert all(np.array_equal(a, b) for a, b in zip(again, alone, strict=True))


def test_single_images_and_one_frame_folders_are_not_clips(tmp_path, scene_clips):
    colorizer, grays, _ = scene_clips
    folder = write_folder(tmp_path / "one", grays[:1])
    image = tmp_path / "frame.png"
    write_image(image, np.repeat(grays[0][..., None], 3, 2))
    jobs = plan([folder, image, write_folder(tmp_path / "two", grays[:2])], tmp_path / "o",
                EncodeOptions())  # fmt: skip
    assert [is_clip(job.source) for job in jobs] == [False, False, True]
    for job in jobs:
        job.source.close()


def test_bad_temporal_options_are_refused_before_anything_is_written(tmp_path, scene_clips):
    colorizer, grays, _ = scene_clips
    folder = write_folder(tmp_path / "clip", grays[:2])
    # Each setting is checked once, where it is owned: the smoothing's by TemporalParams, the
    # work size by the Colorizer.
    for bad in (dict(strength=1.5), dict(scene_threshold=-1)):
        with pytest.raises(ValueError):
            colorize_folder(folder, tmp_path / "out", colorizer, **bad)
    with pytest.raises(InputError):
        Colorizer(colorizer.model, colorizer.config, device="cpu", work_size=8)
    assert not (tmp_path / "out").exists()


def test_scene_cuts_are_where_the_smoothing_cuts():
    grays_a, _ = make_clip(6, scene=0)
    grays_b, _ = make_clip(5, scene=1)
    grays = np.stack(grays_a + grays_b)
    smoother = TemporalSmoother()
    assert smoother.scene_cuts(grays) == [len(grays_a)]
    assert smoother.scene_cuts(grays, workers=2) == [len(grays_a)]  # threads: the same
    smoother.process_batch(grays, np.zeros((*grays.shape, 3), np.float32))
    assert smoother.last_cut is False  # unchanged by scene_cuts, and the clip ends mid-shot
    assert TemporalSmoother().scene_cuts(grays[:1]) == []
    assert TemporalSmoother().scene_cuts(grays[:1], workers=2) == []
