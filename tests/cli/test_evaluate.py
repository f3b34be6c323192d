"""`celpaint evaluate` through the real entry point."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.io.frames import write_image


def _folder(path, images):
    path.mkdir()
    for index, image in enumerate(images):
        write_image(path / f"frame{index + 1}.png", image)
    return path


@pytest.fixture
def truth(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(20, 230, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    return _folder(tmp_path / "truth", images), images


def test_identical_inputs_are_perfect(tmp_path, truth, capfd):
    folder, _ = truth
    report = tmp_path / "report.json"
    assert main(["evaluate", str(folder), str(folder), "--json", str(report)]) == 0
    table = capfd.readouterr().out
    assert "inf" in table and "mean of 3" in table and "frame2" in table
    data = json.loads(report.read_text())
    assert data["frame_count"] == 3 and len(data["frames"]) == 3
    mean = data["mean"]
    assert {k: mean[k] for k in ("psnr", "ssim", "ciede2000", "accuracy")} == {
        "psnr": "inf", "ssim": 1.0, "ciede2000": 0.0, "accuracy": 1.0,
    }  # fmt: skip
    assert mean["colorfulness"] == mean["colorfulness_truth"] > 0
    assert mean["colorfulness_ratio"] == 1.0
    assert "colorfulness" in table and "ratio 1.00" in table
    assert data["frames"][0]["name"] == "frame1"


def test_known_values_for_a_constructed_prediction(tmp_path, truth, capfd):
    folder, images = truth
    predicted = _folder(tmp_path / "pred", [image + 10 for image in images])
    assert main(["evaluate", str(predicted), str(folder), "--json", "-"]) == 0
    data = json.loads(capfd.readouterr().out)
    expected = 10 * math.log10(255**2 / 100)  # MSE of a constant offset of 10 is 100
    assert data["mean"]["psnr"] == pytest.approx(expected, abs=1e-9)
    assert all(row["psnr"] == pytest.approx(expected) for row in data["frames"])
    assert 0 < data["mean"]["ciede2000"] < 10
    assert data["accuracy_threshold"] == 0.05


def test_colorfulness_of_a_gray_prediction_and_its_truth(tmp_path, truth, capfd):
    folder, images = truth
    gray = _folder(tmp_path / "gray", [np.repeat(i.mean(2, keepdims=True), 3, 2).astype(np.uint8)
                                       for i in images])  # fmt: skip
    assert main(["evaluate", str(gray), str(folder), "--json", "-"]) == 0
    data = json.loads(capfd.readouterr().out)
    rows = data["frames"]
    assert all(row["colorfulness"] == 0 and row["colorfulness_ratio"] == 0 for row in rows)
    truths = [row["colorfulness_truth"] for row in rows]
    assert min(truths) > 20  # uniform random RGB is very colorful
    assert data["mean"]["colorfulness_truth"] == pytest.approx(sum(truths) / 3)
    assert data["mean"]["colorfulness"] == data["mean"]["colorfulness_ratio"] == 0
    # A gray truth has no ratio: null in the JSON, a dash in the summary.
    assert main(["evaluate", str(folder), str(gray), "--json", "-"]) == 0
    assert json.loads(capfd.readouterr().out)["mean"]["colorfulness_ratio"] is None
    assert main(["evaluate", str(folder), str(gray)]) == 0
    assert "ratio -" in capfd.readouterr().out


def test_mismatched_inputs_exit_2(tmp_path, truth, capfd):
    folder, images = truth
    shorter = _folder(tmp_path / "short", images[:2])
    assert main(["evaluate", str(shorter), str(folder)]) == 2
    assert "error:" in capfd.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing"), str(folder)]) == 2
    assert "does not exist" in capfd.readouterr().err


def _moving_square(frames: int = 5, flicker: float = 0.0):
    """(input line art, colored frames): a red square outlined in black moving 3 px a frame
    over a light background, with the square's color shifting by ``flicker`` levels per frame.
    """
    rng = np.random.default_rng(1)
    inputs, colored = [], []
    for t in range(frames):
        line_art = np.full((48, 64, 3), 255, np.uint8)
        color = np.empty((48, 64, 3), np.uint8)
        color[:] = (230, 220, 190)
        x = 10 + 3 * t
        shift = int(rng.integers(-1, 2) * flicker)
        color[14:34, x : x + 20] = np.clip(np.array([200, 40, 40]) + shift, 0, 255)
        for image in (line_art, color):
            image[14:34, x : x + 2] = image[14:34, x + 18 : x + 20] = 0
            image[14:16, x : x + 20] = image[32:34, x : x + 20] = 0
        inputs.append(line_art)
        colored.append(color)
    return inputs, colored


def test_warping_error_with_the_input_clip(tmp_path, capfd):
    inputs, truth_frames = _moving_square()
    _, flickering = _moving_square(flicker=40)
    source = _folder(tmp_path / "input", inputs)
    truth = _folder(tmp_path / "truth", truth_frames)
    predicted = _folder(tmp_path / "pred", flickering)
    report = tmp_path / "report.json"
    args = ["evaluate", str(predicted), str(truth), "--input", str(source)]
    assert main([*args, "--json", str(report)]) == 0
    table = capfd.readouterr().out
    assert "warping error" in table and "floor" in table and "a*b* warping error" in table
    data = json.loads(report.read_text())
    assert data["input"] == str(source)
    warping = data["warping_error"]
    # The truth moves with the input: only interpolation at its edges remains.
    assert warping["ground_truth"] < 1e-3
    assert warping["prediction"] > 5 * warping["ground_truth"]
    rows = data["frames"]
    assert rows[0]["warping_error"] is None and rows[0]["warping_error_truth"] is None
    pairs = [row["warping_error"] for row in rows[1:]]
    assert warping["prediction"] == pytest.approx(sum(pairs) / len(pairs))
    # The same measure on a*b* / 100: the flicker is one of hue and chroma too.
    warping_ab = data["warping_error_ab"]
    assert warping_ab["ground_truth"] < 1e-3
    assert warping_ab["prediction"] > 5 * warping_ab["ground_truth"]
    assert rows[0]["warping_error_ab"] is None and rows[0]["warping_error_ab_truth"] is None
    pairs = [row["warping_error_ab"] for row in rows[1:]]
    assert warping_ab["prediction"] == pytest.approx(sum(pairs) / len(pairs))
    # Without --input there is no warping error.
    assert main(["evaluate", str(predicted), str(truth), "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert "warping_error" not in data and "warping_error_ab" not in data


def test_an_input_clip_of_another_length_or_size_exits_2(tmp_path, capfd):
    inputs, truth_frames = _moving_square()
    truth = _folder(tmp_path / "truth", truth_frames)
    short = _folder(tmp_path / "short", inputs[:3])
    assert main(["evaluate", str(truth), str(truth), "--input", str(short)]) == 2
    assert "ended after 3 frames" in capfd.readouterr().err
    small = _folder(tmp_path / "small", [image[:24] for image in inputs])
    assert main(["evaluate", str(truth), str(truth), "--input", str(small)]) == 2
    assert "same size" in capfd.readouterr().err


def test_json_never_goes_over_an_input(tmp_path, truth, capfd):
    import os

    folder, images = truth
    predicted = _folder(tmp_path / "pred", [image + 10 for image in images])
    single = write_image(tmp_path / "single.png", images[0])
    (tmp_path / "link.png").symlink_to(single)
    os.link(folder / "frame2.png", tmp_path / "hard.png")
    cases = [
        ([single, single], single),  # the ground truth itself
        ([single, folder / "frame1.png"], tmp_path / "link.png"),  # the prediction via a link
        ([predicted, folder], tmp_path / "hard.png"),  # a truth frame via a hard link
        ([predicted, folder, "--input", folder], folder / "frame3.png"),
    ]
    files = sorted(tmp_path.rglob("*"))
    before = {path: path.read_bytes() for path in files if path.is_file()}
    for sources, target in cases:
        args = ["evaluate", *map(str, sources), "--json", str(target)]
        assert main(args) == 2
        assert "--json" in capfd.readouterr().err
    assert sorted(tmp_path.rglob("*")) == files
    assert {path: path.read_bytes() for path in before} == before


def test_frames_smaller_than_the_ssim_window_exit_2(tmp_path, capfd):
    tiny = _folder(tmp_path / "tiny", [np.zeros((2, 5, 3), np.uint8)])
    assert main(["evaluate", str(tiny), str(tiny)]) == 2
    err = capfd.readouterr().err
    assert "at least 3x3" in err and "unexpected" not in err
