"""Keyframe reference colorization through the library and the real CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.color.array import lightness, rgb_to_lab
from celpaint.io.frames import list_images, read_image, write_image
from celpaint.pipeline.api import colorize
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer
from celpaint.pipeline.engine import Progress
from celpaint.pipeline.reference import KeyframeColorizer, adapt, colorize_clip
from tests.shots import DISC, PAPER, SQUARE, interiors, shot


def write_frames(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        write_image(folder / f"f{index + 1:03d}.png", frame)
    return folder


def read_frames(folder: Path) -> list[np.ndarray]:
    return [read_image(path) for path in list_images(folder)]


def _max_delta(rgb: np.ndarray, target, mask: np.ndarray) -> float:
    lab = rgb_to_lab(rgb)
    goal = rgb_to_lab(np.array([[target]], np.uint8))[0, 0]
    return float(np.percentile(np.linalg.norm(lab - goal, axis=2)[mask], 99))


@pytest.fixture(scope="module")
def line_shot(tmp_path_factory):
    colors, lines = shot(10, rotate=True)
    root = tmp_path_factory.mktemp("shot")
    write_frames(root / "lines", lines)
    write_image(root / "f001.png", colors[0])
    return root, colors, lines


def test_keyframe_colors_travel_through_the_clip(tmp_path, line_shot, lineart_model):
    root, colors, _ = line_shot
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu")
    colorize(root / "lines", tmp_path / "out", colorizer, references=[root / "f001.png"])
    out = read_frames(tmp_path / "out")
    assert len(out) == 10
    # The keyframe's own frame is the reference (its lines are the input's own).
    paper = read_image(root / "lines" / "f001.png")[..., 0] == 255
    assert np.abs(out[0].astype(int) - colors[0])[paper].max() <= 1
    for t in range(1, 10):
        for rgb in (PAPER, SQUARE, DISC):
            assert _max_delta(out[t], rgb, interiors(colors[t], rgb)) < 1.5, (t, rgb)


def test_batches_and_memory_give_the_same_frames(tmp_path, line_shot, lineart_model):
    root, colors, lines = line_shot
    outputs = []
    for batch in (1, 4):
        colorizer = Colorizer.from_pretrained(lineart_model, device="cpu", batch_size=batch)
        colorize(
            root / "lines", tmp_path / f"b{batch}", colorizer, references=[f"1={root}/f001.png"]
        )
        outputs.append(read_frames(tmp_path / f"b{batch}"))
    assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu")
    in_memory = colorize_clip(colorizer, lines, {0: colors[0]})
    assert all(np.array_equal(a, b) for a, b in zip(in_memory, outputs[0], strict=True))


def test_each_pass_is_half_of_the_progress(tmp_path, line_shot, lineart_model, monkeypatch):
    root, _, _ = line_shot

    class Recorder(Progress):
        def __init__(self):
            self.frames, self.starts, self.ends = 0, 0, []

        def job_start(self, job):
            self.starts += 1

        def advance(self, frames):
            self.frames += frames

        def job_end(self, result):
            self.ends.append(result)

    recorder = Recorder()
    at_carry = []
    carry = KeyframeColorizer.carry
    monkeypatch.setattr(KeyframeColorizer, "carry",
                        lambda self: (at_carry.append(recorder.frames), carry(self)))  # fmt: skip
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu", batch_size=3)
    colorize(root / "lines", tmp_path / "out", colorizer, progress=recorder,
             references=[root / "f001.png"])  # fmt: skip
    # 10 frames: 5 reported by the analysis, before the colors are carried, 5 by rendering.
    assert at_carry == [5] and recorder.frames == 10
    assert recorder.starts == 1 and len(recorder.ends) == 1 and recorder.ends[0].frames == 10


def test_a_scene_cut_stops_the_keyframe(tmp_path, lineart_model):
    colors, lines = shot(6)
    other = np.stack([cv2.rotate(frame, cv2.ROTATE_180) for frame in shot(5, entering=True)[1]])
    other = other[:, ::-1].copy()
    write_frames(tmp_path / "both", np.concatenate([lines, other]))
    write_frames(tmp_path / "alone", other)
    write_image(tmp_path / "f001.png", colors[0])
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu")
    colorize(tmp_path / "both", tmp_path / "out", colorizer, references=[tmp_path / "f001.png"])
    colorize(tmp_path / "alone", tmp_path / "plain", colorizer)
    both, alone = read_frames(tmp_path / "out"), read_frames(tmp_path / "plain")
    # After the cut the frames are what the clip gives without any keyframe.
    assert all(np.array_equal(a, b) for a, b in zip(both[6:], alone, strict=True))
    assert _max_delta(both[5], SQUARE, interiors(colors[5], SQUARE)) < 1.5


def test_grayscale_keeps_the_input_lightness(tmp_path, gray_model):
    colors, _ = shot(6)
    grays = np.stack(
        [np.repeat(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)[..., None], 3, 2) for c in colors]
    )
    colorizer = Colorizer.from_pretrained(gray_model, device="cpu")
    out = colorize_clip(colorizer, grays, {0: colors[0]}, ColorizeOptions())
    for frame, gray in zip(out, grays, strict=True):
        assert np.abs(lightness(frame) - lightness(gray)).max() < 1.0
    # ... and the keyframe's a*b* arrive (under the gray frame's own L*, which differs from
    # the colors' L* by the luma formula): the square is red again in the last frame.
    inside = interiors(colors[5], SQUARE)
    chroma = rgb_to_lab(out[5])[..., 1:][inside] - rgb_to_lab(colors[5])[..., 1:][inside]
    assert np.percentile(np.linalg.norm(chroma, axis=1), 99) < 3.0


def _run(*args) -> int:
    return main(["colorize", *map(str, args), "-q", "--device", "cpu"])


def test_bad_references_are_refused_before_anything_is_written(
    tmp_path, line_shot, lineart_model, capsys
):
    root, colors, _ = line_shot
    model = ["-m", lineart_model]
    out = tmp_path / "out"
    write_image(tmp_path / "nomatch.png", colors[0])
    write_image(
        tmp_path / "f002.png",
        cv2.cvtColor(cv2.cvtColor(colors[1], cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB),
    )
    (tmp_path / "wide").mkdir()
    write_image(tmp_path / "wide" / "f003.png", np.zeros((40, 200, 3), np.uint8))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "f004.png").write_text("not an image")
    cases = {
        "nomatch.png": "f001, f002",
        "f002.png": "carries no color",
        "wide/f003.png": "another shape",
        "text/f004.png": "f004.png",
        "11=" + str(root / "f001.png"): "1..10",
        "missing.png": "does not exist",
    }
    for reference, message in cases.items():
        path = reference if "=" in reference else tmp_path / reference
        assert _run(root / "lines", "-o", out, "-r", path, *model) == 2, reference
        err = capsys.readouterr().err
        assert message in err and "unexpected" not in err, (reference, err)
        assert not out.exists()
    # Several inputs, and a single image with another image's name.
    assert _run(root / "lines", root / "f001.png", "-o", out, "-r", root / "f001.png", *model) == 2
    assert "one input" in capsys.readouterr().err
    single = write_image(tmp_path / "single.png", read_image(root / "lines" / "f001.png"))
    assert _run(single, "-o", tmp_path / "s.png", "-r", root / "f001.png", *model) == 2
    assert (
        "not the single image single.png's own" in capsys.readouterr().err
        and not (tmp_path / "s.png").exists()
    )


def test_a_reference_of_another_resolution_is_scaled(tmp_path, line_shot, lineart_model):
    root, colors, _ = line_shot
    big = cv2.resize(colors[0], (256, 192), interpolation=cv2.INTER_NEAREST)
    write_image(tmp_path / "f001.png", big)
    assert (
        _run(
            root / "lines", "-o", tmp_path / "out", "-r", tmp_path / "f001.png", "-m", lineart_model
        )
        == 0
    )
    out = read_frames(tmp_path / "out")
    assert _max_delta(out[4], SQUARE, interiors(colors[4], SQUARE)) < 1.5


def test_resume_with_references_finishes_the_same_frames(tmp_path, line_shot, lineart_model):
    root, _, _ = line_shot
    args = (root / "lines", "-o", tmp_path / "out", "-r", root / "f001.png", "-m", lineart_model)
    assert _run(*args) == 0
    full = read_frames(tmp_path / "out")
    for path in list_images(tmp_path / "out")[3:7]:
        path.unlink()
    assert _run(*args, "--resume") == 0
    again = read_frames(tmp_path / "out")
    assert len(again) == 10 and all(np.array_equal(a, b) for a, b in zip(full, again, strict=True))


def test_adaptation_learns_the_keyframe_colors(tmp_path, line_shot, lineart_model):
    root, colors, lines = line_shot
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu")
    before = colorizer.colorize(lines[:1])
    losses = adapt(colorizer, [(lines[0], colors[0])], steps=30, seed=0, learning_rate=1e-3)
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    after = colorizer.colorize(lines[:1])
    truth = colors[0].astype(int)
    assert np.abs(after.astype(int) - truth).mean() < np.abs(before.astype(int) - truth).mean()
    # Through the CLI: the option runs and writes every frame.
    args = (root / "lines", "-o", tmp_path / "out", "-r", root / "f001.png", "-m", lineart_model)
    assert _run(*args, "--adapt-steps", "3") == 0
    assert len(list_images(tmp_path / "out")) == 10
