"""`celpaint evaluate` through the real entry point."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.pipeline.frames import write_image


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
    assert data["mean"] == {"psnr": "inf", "ssim": 1.0, "ciede2000": 0.0, "accuracy": 1.0}
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


def test_mismatched_inputs_exit_2(tmp_path, truth, capfd):
    folder, images = truth
    shorter = _folder(tmp_path / "short", images[:2])
    assert main(["evaluate", str(shorter), str(folder)]) == 2
    assert "error:" in capfd.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing"), str(folder)]) == 2
    assert "does not exist" in capfd.readouterr().err
