"""--model auto: a shipped model per input, and a warning when an input does not fit the model."""

import logging

import numpy as np
import pytest

from celpaint.errors import CheckpointError, InputError
from celpaint.io.frames import write_image
from celpaint.io.sinks import EncodeOptions
from celpaint.models import zoo
from celpaint.pipeline.auto import AutoColorizer, choose
from celpaint.pipeline.colorizer import Colorizer
from celpaint.pipeline.jobs import plan
from tests.conftest import make_clip

# ffmpeg's test pattern as line art (dark edges on white) and as gray footage.
LINE_ART = ["-vf", "edgedetect=low=0.1:high=0.3,negate"]
GRAY = ["-vf", "format=gray"]


def make_line_art_clip(path, ffmpeg, frames=6):
    return make_clip(path, ffmpeg, frames=frames, size=(64, 48), audio=False, extra=LINE_ART)


def make_gray_clip(path, ffmpeg, frames=6):
    return make_clip(path, ffmpeg, frames=frames, size=(64, 48), audio=False, extra=GRAY)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ffmpeg):
    folder = tmp_path_factory.mktemp("inputs")
    make_line_art_clip(folder / "drawn.mp4", ffmpeg)
    make_gray_clip(folder / "film.mp4", ffmpeg)
    make_line_art_clip(folder / "drawn too.mkv", ffmpeg)
    write_image(folder / "white.png", np.full((48, 64, 3), 255, np.uint8))
    return folder


def _plan(inputs, tmp_path):
    names = ["drawn.mp4", "film.mp4", "drawn too.mkv", "white.png"]
    return plan([inputs / name for name in names], tmp_path / "out", EncodeOptions())


def test_auto_picks_a_shipped_model_per_input_and_loads_each_once(inputs, tmp_path, caplog):
    jobs = _plan(inputs, tmp_path)
    caplog.set_level(logging.INFO, logger="celpaint")
    chosen = choose(jobs, AutoColorizer(device="cpu"))
    assert [job.model for job in jobs] == [
        "lineart (looks like line art)",
        "gray (looks like grayscale or color footage)",
        "lineart (looks like line art)",
        "lineart (blank first frames)",  # nothing to go by: the default model
    ]
    assert [chosen[i].task.input_kind for i in range(4)] == ["lineart", "grayscale"] + [
        "lineart"
    ] * 2
    assert chosen[0] is chosen[2] is chosen[3]
    assert (
        "film.mp4 looks like grayscale or color footage: colorizing with the gray model"
        in caplog.text
    )
    # The sources read from their start again once looked at.
    assert len(list(jobs[1].source.frames())) == 6
    for job in jobs:
        job.source.close()


def test_a_given_model_only_warns_about_inputs_that_do_not_fit(
    inputs, tmp_path, lineart_model, caplog
):
    jobs = _plan(inputs, tmp_path)
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu")
    chosen = choose(jobs, colorizer)
    assert all(chosen[i] is colorizer for i in range(4)) and all(job.model is None for job in jobs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        "film.mp4 looks like grayscale or color footage but the model expects line art"
        in warnings[0]
    )
    assert "use --model gray" in warnings[0]
    for job in jobs:
        job.source.close()


def test_auto_is_no_checkpoint_and_bad_settings_fail_before_any_work():
    with pytest.raises(CheckpointError, match="picks a shipped model per input"):
        zoo.resolve("auto")
    with pytest.raises(InputError, match="toaster"):
        AutoColorizer(device="toaster")
    assert zoo.model_for("lineart") == "lineart" and zoo.model_for("grayscale") == "gray"
    assert zoo.model_for(None) == zoo.DEFAULT_MODEL


def test_the_python_api_defaults_to_auto(inputs, tmp_path):
    from celpaint import colorize

    results = colorize([inputs / "drawn.mp4", inputs / "film.mp4"], tmp_path / "out")
    assert [(r.status, r.model) for r in results] == [
        ("written", "lineart (looks like line art)"),
        ("written", "gray (looks like grayscale or color footage)"),
    ]
    assert [r.frames for r in results] == [6, 6]
