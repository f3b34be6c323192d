"""The models shipped in the package: they load by name, colorize on CPU, deterministically,
reproduce the model card's numbers on the sample clip, and can be fine-tuned with --init."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from celpaint.io.frames import read_image, write_image
from celpaint.models import zoo
from celpaint.models.checkpoint import load_model
from celpaint.ops.metrics import ciede2000, colorfulness
from celpaint.pipeline.colorizer import Colorizer
from celpaint.training.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
CARD = ROOT / "docs" / "model_card.json"
# CIEDE2000 of the whole sample clip moves by far less than this between runs of the same
# weights (only float rounding differs between machines); a retrained or re-exported model
# moves it by much more.
CARD_TOLERANCE = 0.1
# The same for the colorfulness ratio (prediction / truth); a change of calibration moves it by
# tenths.
CARD_RATIO_TOLERANCE = 0.01
# Mean CIEDE2000 between a frame colorized at its own shape and padded (measured: see
# docs/models.md, "Frames at their own shape").
UNPADDED_TOLERANCE = 2.0


def _sample_pair(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The first pair of the fine-tuning set as the model's input and the truth, uint8 RGB."""
    truth = cv2.cvtColor(cv2.imread(str(SAMPLES / "pairs/color/000.png")), cv2.COLOR_BGR2RGB)
    if kind == "lineart":
        sketch = cv2.imread(str(SAMPLES / "pairs/sketch/000.png"), cv2.IMREAD_GRAYSCALE)
    else:
        sketch = cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY)
    return np.repeat(sketch[..., None], 3, axis=2), truth


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "celpaint", *map(str, args)], capture_output=True, text=True
    )


def test_both_defaults_are_shipped_small_and_listed():
    models = zoo.shipped_models()
    assert {"lineart", "gray"} <= set(models)
    assert zoo.DEFAULT_MODEL == "lineart"  # what auto takes for blank frames
    for name in ("lineart", "gray"):
        size = sum(p.stat().st_size for p in models[name].iterdir())
        assert size <= 20 * 2**20, f"{name} is {size / 2**20:.1f} MiB"
    _, lineart = load_model(models["lineart"])
    _, gray = load_model(models["gray"])
    assert (lineart.input_kind, lineart.output) == ("lineart", "rgb")
    assert (gray.input_kind, gray.output) == ("grayscale", "ab")
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert "lineart" in result.stdout and "gray" in result.stdout


@pytest.mark.parametrize("name", ["lineart", "gray"])
def test_shipped_model_colorizes_a_sample_frame_deterministically(name):
    source, truth = _sample_pair("lineart" if name == "lineart" else "gray")
    colorizer = Colorizer.from_pretrained(name, device="cpu")
    first = colorizer.colorize(source[None])[0]
    second = Colorizer.from_pretrained(name, device="cpu").colorize(source[None])[0]
    assert first.shape == truth.shape and first.dtype == np.uint8
    assert np.array_equal(first, second)
    # It paints: the output has color where the input had none.
    lab = cv2.cvtColor(first, cv2.COLOR_RGB2LAB).astype(int)
    assert np.hypot(lab[..., 1] - 128, lab[..., 2] - 128).mean() > 2
    if name == "gray":
        # L* is the input's within 8-bit rounding.
        source_l = cv2.cvtColor(source, cv2.COLOR_RGB2LAB)[..., 0].astype(int)
        assert np.abs(lab[..., 0] - source_l).mean() < 1.0


@pytest.mark.parametrize("name", ["lineart", "gray"])
def test_model_card_sample_clip_numbers_are_reproduced(name, tmp_path):
    card = json.loads(CARD.read_text())
    expected = card["models"][name]["sample"]["model"]
    kind = "lineart" if name == "lineart" else "gray"
    out = tmp_path / "colored.mp4"
    result = run_cli("colorize", SAMPLES / f"clip_{kind}.mp4", "-o", out, "--model", name,
                     "--lossless", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = tmp_path / "scores.json"
    result = run_cli("evaluate", out, SAMPLES / "clip_color.mp4", "--json", scores, "--quiet")
    assert result.returncode == 0, result.stderr
    mean = json.loads(scores.read_text())["mean"]
    measured = mean["ciede2000"]
    assert measured == pytest.approx(expected["ciede2000"], abs=CARD_TOLERANCE)
    ratio = mean["colorfulness_ratio"]
    assert ratio == pytest.approx(expected["colorfulness_ratio"], abs=CARD_RATIO_TOLERANCE)
    # The colors are visible: not the near-gray of a calibration by CIEDE2000 alone.
    assert ratio > 0.45
    # And the model beats its baselines there, as the card says.
    baselines = card["models"][name]["sample"]
    assert measured < baselines["input"]["ciede2000"]
    if "flat" in baselines:
        assert measured < baselines["flat"]["ciede2000"]


@pytest.mark.parametrize("name", ["lineart", "gray"])
def test_unpadded_inference_matches_padded_inference_inside_the_frame(name):
    """The shipped models were trained on crops of varied sizes (``--size-multiple 16``), so a
    16:9 frame runs at its own shape (its deep levels padded by the U-Net) and gives what the
    padded frame gives, away from the border the padding used to extend."""
    model, config = load_model(zoo.shipped_models()[name])
    assert config.size_multiple == 16
    exact = 2 ** config.arch_args["depth"]
    source, _ = _sample_pair(name)
    frame = source[:144]  # 256x144, 16:9: padded to 256x256, unpadded 256x144
    padded_config = dataclasses.replace(config, size_multiple=exact)
    padded = Colorizer(model, padded_config, device="cpu").colorize(frame[None])[0]
    own = Colorizer(model, config, device="cpu").colorize(frame[None])[0]
    inside = (slice(0, 144 - 32), slice(0, 256))  # the padding was added at the bottom
    assert ciede2000(own[inside], padded[inside]) < UNPADDED_TOLERANCE
    assert ciede2000(own, padded) < 2 * UNPADDED_TOLERANCE


@pytest.mark.parametrize("name", ["lineart", "gray"])
def test_saturation_scales_the_calibrated_colors(name, tmp_path):
    source, _ = _sample_pair("lineart" if name == "lineart" else "gray")
    image = write_image(tmp_path / "input.png", source)
    outputs = {}
    for saturation in ("0", "1", "2"):
        out = tmp_path / f"s{saturation}.png"
        result = run_cli("colorize", image, "-o", out, "--model", name,
                         "--saturation", saturation, "--quiet")  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs[saturation] = read_image(out)
    lab = cv2.cvtColor(outputs["0"], cv2.COLOR_RGB2LAB).astype(int)
    # No chroma at all: a* = b* = 0 (128 in OpenCV's uint8 L*a*b*) within 8-bit rounding.
    assert np.abs(lab[..., 1:] - 128).max() <= 1
    if name == "gray":
        source_l = cv2.cvtColor(source, cv2.COLOR_RGB2LAB)[..., 0].astype(int)
        assert np.abs(lab[..., 0] - source_l).max() <= 1
    assert colorfulness(outputs["0"]) < 1
    assert colorfulness(outputs["2"]) > 1.3 * colorfulness(outputs["1"])
    for bad in ("-0.5", "4.5"):
        result = run_cli("colorize", image, "-o", tmp_path / "bad.png", "--model", name,
                         f"--saturation={bad}", "--quiet")  # fmt: skip
        assert result.returncode == 2 and "within 0..4" in result.stderr
        assert not (tmp_path / "bad.png").exists()


def test_fine_tuning_starts_from_a_shipped_model(tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(
        model="pix2pix", init="lineart", sketch=str(SAMPLES / "pairs/sketch"),
        color=str(SAMPLES / "pairs/color"), out=str(out), epochs=1, batch_size=4, crop=128,
        val_fraction=0.125, workers=0, save_every=0, samples=2, val_limit=2,
    )  # fmt: skip
    result = train(config, explicit={"init"}, handle_signals=False)
    assert result.step == result.total_steps == 7  # 28 training pairs in batches of 4
    tuned, tuned_config = load_model(out / "generator")
    shipped, shipped_config = load_model(zoo.resolve("lineart"))
    assert tuned_config.arch_args == shipped_config.arch_args
    changed = [
        name
        for name, value in tuned.state_dict().items()
        if value.is_floating_point() and not value.equal(shipped.state_dict()[name])
    ]
    assert changed, "fine-tuning did not change the weights"
    result = run_cli("colorize", SAMPLES / "pairs/sketch/000.png", "-o", tmp_path / "x.png",
                     "--model", out, "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
