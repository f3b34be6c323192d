"""XDoG line art on constructed flat-colored images; telling line art from footage."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from celpaint.io.frames import read_image
from celpaint.io.media import find_ffmpeg
from celpaint.io.video import VideoReader
from celpaint.ops.lineart import (
    DEFAULT_PARAMS,
    LineArtParams,
    guess_input_kind,
    line_art_batch,
    measure_ink,
    xdog,
)


def flat_shapes(height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A cartoon-like frame (sky-blue background, a red disc, a green box) and its region map."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (150, 190, 230)
    regions = np.zeros((height, width), np.uint8)
    cv2.circle(image, (40, 48), 24, (210, 60, 50), -1)
    cv2.circle(regions, (40, 48), 24, 1, -1)
    cv2.rectangle(image, (75, 20), (115, 80), (70, 150, 60), -1)
    cv2.rectangle(regions, (75, 20), (115, 80), 2, -1)
    return image, regions


def boundary_and_interior(regions: np.ndarray, margin: int = 4) -> tuple[np.ndarray, np.ndarray]:
    kernel = np.ones((3, 3), np.uint8)
    edges = np.zeros(regions.shape, bool)
    for label in np.unique(regions):
        mask = (regions == label).astype(np.uint8)
        edges |= cv2.dilate(mask, kernel).astype(bool) & ~cv2.erode(mask, kernel).astype(bool)
    near = cv2.dilate(edges.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8))
    return edges, ~near.astype(bool)


def assert_outlines(lines: np.ndarray, regions: np.ndarray) -> None:
    """``lines`` outline every region of ``regions`` and leave their insides white."""
    assert lines.shape == regions.shape and lines.dtype == np.uint8
    edges, interior = boundary_and_interior(regions)
    # Every flat region stays paper white, whatever its color.
    assert lines[interior].min() >= 250
    # Along each boundary there is a dark line within a pixel or two.
    darkest_near_edge = cv2.erode(lines, np.ones((3, 3), np.uint8))
    assert np.mean(darkest_near_edge[edges] < 128) > 0.95


def test_lines_on_boundaries_white_inside_flat_regions():
    image, regions = flat_shapes()
    lines = xdog(image)
    assert_outlines(lines, regions)
    assert lines.min() == 0


def test_deterministic_bit_identical():
    image, _ = flat_shapes()
    rng = np.random.default_rng(1)
    noisy = np.clip(image.astype(int) + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
    first = xdog(noisy)
    for _ in range(2):
        np.testing.assert_array_equal(xdog(noisy.copy()), first)


def test_faint_texture_stays_clean():
    """Low-amplitude noise on a flat area must not turn into speckle."""
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 160, np.int16) + rng.integers(-4, 5, (64, 64, 3))
    lines = xdog(flat.astype(np.uint8))
    assert lines.min() >= 230


def test_gray_input_outlines_the_regions_as_rgb_input_does():
    image, regions = flat_shapes()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    lines_gray = xdog(gray)
    assert_outlines(lines_gray, regions)
    # The same gray as an RGB frame outlines the same regions (its lightness goes through
    # L*, a gray frame's does not, so line shades differ a little).
    lines_rgb = xdog(np.repeat(gray[:, :, None], 3, axis=2))
    assert_outlines(lines_rgb, regions)
    assert np.mean(np.abs(lines_rgb.astype(int) - lines_gray) <= 12) == 1.0
    # A (H, W, 1) array is treated as gray too.
    np.testing.assert_array_equal(xdog(gray[:, :, None]), lines_gray)


def test_isoluminant_color_edge_gets_a_line_only_with_chroma():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :30] = (200, 90, 90)
    lightness = cv2.cvtColor(image[:1, :1].astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[0, 0, 0]
    # Search a green of the same L* so the lightness channel sees no edge.
    greens = np.array([[(g, 0, 0) for g in range(256)]], np.uint8)
    greens[..., 1] = greens[..., 0]
    greens[..., 0] = 60
    greens[..., 2] = 60
    lab = cv2.cvtColor(greens.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[0, :, 0]
    image[:, 30:] = greens[0, int(np.argmin(np.abs(lab - lightness)))]
    assert xdog(image, chroma_weight=0.0)[:, 26:34].min() > 200
    assert xdog(image)[:, 26:34].min() < 100


def test_thick_black_outline_stays_solid():
    image = np.full((64, 64, 3), 255, np.uint8)
    cv2.rectangle(image, (10, 10), (50, 50), (0, 0, 0), 6)
    lines = xdog(image)
    # The middle of the 6 px stroke is ink, not a hole between two edge lines.
    assert lines[30, 10] == 0 and lines[10, 30] == 0
    assert xdog(image, ink_level=None)[30, 10] > 128


def test_threshold_gives_binary_output():
    image, _ = flat_shapes()
    binary = xdog(image, threshold=0.5)
    assert set(np.unique(binary)) == {0, 255}
    soft = xdog(image)
    assert len(np.unique(soft)) > 2
    np.testing.assert_array_equal(binary == 0, soft < 127.5)


def test_sigma_widens_lines():
    image, _ = flat_shapes()
    thin = (xdog(image, sigma=0.6) < 128).sum()
    thick = (xdog(image, sigma=1.6) < 128).sum()
    assert thick > 1.5 * thin


def test_params_and_batch():
    image, _ = flat_shapes()
    params = LineArtParams(sigma=1.0)
    np.testing.assert_array_equal(xdog(image, params), xdog(image, sigma=1.0))
    assert DEFAULT_PARAMS.to_dict()["method"] == "xdog"
    batch = line_art_batch(np.stack([image, image[::-1].copy()]))
    assert batch.shape == (2, 96, 128, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0, :, :, 2], xdog(image))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((2, 8, 8, 3), np.uint8),
    ],
)
def test_rejects_wrong_arrays(bad):
    with pytest.raises(ValueError, match="expected"):
        xdog(bad)


@pytest.mark.parametrize("kwargs", [{"sigma": 0}, {"k": 1.0}, {"threshold": 2.0}, {"phi": -1}])
def test_rejects_bad_params(kwargs):
    with pytest.raises(ValueError):
        LineArtParams(**kwargs)


def test_small_dark_features_are_ink_wide_dark_areas_are_outlined():
    image = np.full((96, 96, 3), 235, np.uint8)
    image[:48] = (10, 12, 30)  # a night sky: wide and nearly black
    cv2.circle(image, (48, 72), 5, (5, 5, 5), -1)  # a pupil: small and black
    lines = xdog(image)
    assert lines[20, 48] == 255  # the sky stays paper
    assert lines[72, 48] == 0  # the pupil is solid ink
    assert lines[44:52, 48].min() < 64  # the sky's edge is a line
    assert xdog(image, ink_width=0)[20, 48] == 0  # without the width limit the sky is filled


# --- guess_input_kind: line art or footage? -------------------------------------------------

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _first_frames(path: Path, count: int = 5) -> list[np.ndarray]:
    frames = []
    for frame in VideoReader(path, find_ffmpeg()):
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


def _scan(line_art: np.ndarray, rng, paper=(236, 230, 215), ink=40, noise=6.0) -> np.ndarray:
    """Line art as a scanner sees it: tinted paper, grey ink, sensor noise, uneven light."""
    height, width = line_art.shape
    y, x = np.mgrid[0:height, 0:width]
    light = 1 - 0.1 * (((x - width / 2) / width) ** 2 + ((y - height / 2) / height) ** 2)
    soft = line_art.astype(np.float32)[..., None] / 255
    image = (soft * np.float32(paper) + (1 - soft) * ink) * light[..., None]
    image = image + rng.normal(0, noise, (height, width, 1))
    return cv2.GaussianBlur(image.clip(0, 255), (0, 0), 0.7).astype(np.uint8)


def test_the_samples_are_told_apart():
    assert guess_input_kind(_first_frames(SAMPLES / "clip_lineart.mp4")) == "lineart"
    assert guess_input_kind(_first_frames(SAMPLES / "clip_gray.mp4")) == "grayscale"
    assert guess_input_kind(_first_frames(SAMPLES / "clip_color.mp4")) == "grayscale"


def test_drawn_and_scanned_line_art_against_footage():
    rng = np.random.default_rng(1)
    color = [read_image(p) for p in sorted((SAMPLES / "pairs" / "color").glob("*.png"))[:6]]
    sketches = [read_image(p) for p in sorted((SAMPLES / "pairs" / "sketch").glob("*.png"))[:6]]
    lines = [xdog(frame) for frame in color]
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in color]
    line_art = {
        "sketches": sketches,
        "xdog": lines,
        "binary xdog": [xdog(frame, threshold=0.5) for frame in color],
        "scans": [_scan(frame, rng) for frame in lines],
        "dim scans": [_scan(frame, rng, (210, 205, 190), ink=60, noise=10) for frame in lines],
        "pencil": [
            (255 - (255 - frame.astype(np.float32)) * 0.45).astype(np.uint8) for frame in lines
        ],
    }
    footage = {
        "color": color,
        "gray": gray,
        "grainy gray": [
            np.clip(g + rng.normal(0, 8, g.shape), 0, 255).astype(np.uint8) for g in gray
        ],
        "dark gray": [(g * 0.35).astype(np.uint8) for g in gray],
        "bright gray": [(255 - (255 - g.astype(np.float32)) * 0.5).astype(np.uint8) for g in gray],
        "flat cels on white": [flat_shapes()[0]],
    }
    for name, frames in line_art.items():
        for frame in frames:
            assert guess_input_kind([frame]) == "lineart", name
    for name, frames in footage.items():
        for frame in frames:
            assert guess_input_kind([frame]) == "grayscale", name


def test_blank_frames_tell_nothing_and_are_skipped():
    white = np.full((48, 64, 3), 255, np.uint8)
    black = np.zeros((48, 64, 3), np.uint8)
    assert measure_ink(white).blank and measure_ink(black).blank
    assert guess_input_kind([white, black]) is None
    assert guess_input_kind([]) is None
    # A fade from white into line art: the blank frames do not outvote the drawing.
    drawing = np.full((96, 128), 255, np.uint8)
    cv2.circle(drawing, (64, 48), 30, 0, 1)
    assert guess_input_kind([white, white, drawing]) == "lineart"
    with pytest.raises(ValueError, match="uint8"):
        measure_ink(np.zeros((4, 4, 3), np.float32))


def test_large_frames_are_measured_at_the_check_size():
    drawing = np.full((1080, 1920), 255, np.uint8)
    for x in range(100, 1900, 150):
        cv2.line(drawing, (x, 50), (x + 60, 1000), 0, 3)
    assert guess_input_kind([drawing]) == "lineart"
    footage = cv2.resize(cv2.cvtColor(flat_shapes()[0], cv2.COLOR_RGB2GRAY), (1920, 1080))
    assert guess_input_kind([footage]) == "grayscale"
