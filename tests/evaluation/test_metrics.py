"""Metrics on constructed images with known values, and the frame-by-frame comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from celpaint.errors import InputError
from celpaint.evaluation.compare import Evaluation, evaluate, json_safe
from celpaint.io.frames import write_image
from celpaint.ops.metrics import ciede2000, frame_metrics, pixel_accuracy, psnr, ssim
from tests.conftest import make_clip


def _image(seed: int = 0, size=(24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (*size, 3), dtype=np.uint8)


def test_identical_images_are_perfect():
    image = _image()
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0)
    assert ciede2000(image, image) == 0.0
    assert pixel_accuracy(image, image) == 1.0


def test_psnr_of_a_constant_offset():
    target = _image()
    prediction = target + 10  # no overflow: values are below 230
    # MSE = 100 -> 10 * log10(255^2 / 100)
    assert psnr(prediction, target) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-9)


def test_ciede2000_of_black_against_white_is_100():
    # Neutral colors differ only in L*; at mean L* = 50 the lightness weight S_L is exactly 1,
    # so Delta E 2000 = Delta L* = 100.
    black = np.zeros((8, 8, 3), np.uint8)
    white = np.full((8, 8, 3), 255, np.uint8)
    assert ciede2000(black, white) == pytest.approx(100.0, abs=1e-3)
    half = black.copy()
    half[:4] = 255
    assert ciede2000(half, white) == pytest.approx(50.0, abs=1e-3)


def test_pixel_accuracy_counts_pixels_within_the_threshold():
    target = np.full((10, 10, 3), 128, np.uint8)
    prediction = target.copy()
    prediction[:, :3] = [255, 0, 0]  # 30 pixels far off in a* and b*
    assert pixel_accuracy(prediction, target) == pytest.approx(0.7)
    # A small gray shift changes only L*, by about 1 unit: within 5% of 100, not within 0.5%.
    shifted = target + 2
    assert pixel_accuracy(shifted, target, threshold=0.05) == 1.0
    assert pixel_accuracy(shifted, target, threshold=0.005) == 0.0
    with pytest.raises(ValueError):
        pixel_accuracy(shifted, target, threshold=-1)


def test_ssim_drops_as_noise_grows_and_works_on_small_images():
    ramp = np.linspace(40, 200, 32).astype(np.uint8)
    target = np.repeat(np.repeat(ramp[None, :, None], 24, axis=0), 3, axis=2)
    noise = np.random.default_rng(2).integers(-1, 2, target.shape)
    scores = [
        ssim(np.clip(target.astype(int) + amount * noise, 0, 255).astype(np.uint8), target)
        for amount in (0, 5, 20, 40)
    ]
    assert scores[0] == pytest.approx(1.0)
    assert scores[0] > scores[1] > scores[2] > scores[3]
    small = _image(3, size=(4, 5))
    assert ssim(small, small) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3x3"):
        ssim(small[:2], small[:2])


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="differ in size"):
        psnr(_image(size=(8, 8)), _image(size=(8, 9)))
    with pytest.raises(ValueError, match="uint8"):
        psnr(_image().astype(np.float32), _image())


def test_frame_metrics_agree_with_the_single_metrics():
    a, b = _image(4), _image(5)
    values = frame_metrics(a, b)
    assert values["psnr"] == pytest.approx(psnr(a, b))
    assert values["ssim"] == pytest.approx(ssim(a, b))
    assert values["ciede2000"] == pytest.approx(ciede2000(a, b))
    assert values["accuracy"] == pytest.approx(pixel_accuracy(a, b))


def test_json_safe_writes_infinity_as_a_string():
    assert json_safe({"psnr": math.inf, "rows": [1.0, -math.inf]}) == {
        "psnr": "inf",
        "rows": [1.0, "-inf"],
    }


def _frames(folder, images):
    folder.mkdir()
    for index, image in enumerate(images):
        write_image(folder / f"f{index + 1}.png", image)
    return folder


def test_evaluate_compares_folders_frame_by_frame(tmp_path):
    truth = [_image(i) for i in range(3)]
    predicted = [truth[0], truth[1] + 10, truth[2]]
    result = evaluate(_frames(tmp_path / "pred", predicted), _frames(tmp_path / "gt", truth))
    assert isinstance(result, Evaluation)
    assert [row["name"] for row in result.frames] == ["f1", "f2", "f3"]
    assert result.frames[0]["psnr"] == math.inf
    assert result.frames[1]["psnr"] == pytest.approx(28.1308, abs=1e-4)
    assert result.mean["psnr"] == math.inf
    assert result.mean["ciede2000"] == pytest.approx(result.frames[1]["ciede2000"] / 3)
    data = result.to_dict()
    assert data["frame_count"] == 3 and data["mean"]["psnr"] == "inf"


def test_evaluate_refuses_different_lengths_and_sizes(tmp_path):
    gt = _frames(tmp_path / "gt", [_image(i) for i in range(3)])
    shorter = _frames(tmp_path / "short", [_image(i) for i in range(2)])
    with pytest.raises(InputError, match="has 2 frames"):
        evaluate(shorter, gt)
    other = _frames(tmp_path / "other", [_image(i, size=(20, 32)) for i in range(3)])
    with pytest.raises(InputError, match="same size"):
        evaluate(other, gt)


def test_evaluate_reads_clips(tmp_path, ffmpeg):
    clip = make_clip(tmp_path / "a.mkv", ffmpeg, frames=4, size=(32, 24), audio=False,
                     extra=["-c:v", "ffv1"])  # fmt: skip
    result = evaluate(clip, clip, ffmpeg=ffmpeg)
    assert len(result.frames) == 4
    assert result.mean["psnr"] == math.inf and result.mean["ciede2000"] == 0.0
