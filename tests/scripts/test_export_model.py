"""scripts/export_model.py: the chroma-scale rule, its measurement, and a scale-only update."""

import json
import math
import sys

import numpy as np
import pytest

from celpaint.models.checkpoint import load_model
from tests.conftest import make_checkpoint
from tests.helpers import load_script


@pytest.fixture(scope="module")
def export_model():
    yield load_script("export_model")
    sys.modules.pop("export_model", None)


def _calibration(export_model, errors, colors, truth=100.0, input_error=20.0):
    scales = [0.0, 0.5, 1.0, 1.5]
    return export_model.Calibration(
        errors=dict(zip(scales, errors, strict=True)),
        colorfulness=dict(zip(scales, colors, strict=True)),
        truth_colorfulness=truth,
        input_error=input_error,
    )


def test_the_best_error_among_colorful_enough_scales(export_model):
    # The lowest error overall (0.5) is too muted: 40 < 0.6 * 100.
    calibration = _calibration(export_model, [20, 15, 17, 19], [0, 40, 80, 120])
    scale, rule = export_model.choose_scale(calibration)
    assert scale == 1.0 and "lowest dE2000" in rule
    assert export_model.choose_scale(calibration, min_colorfulness=0.3)[0] == 0.5
    # A gray model must also not do worse than its input: 1.0 still passes at 18.
    assert export_model.choose_scale(calibration, max_error=18)[0] == 1.0


def test_the_error_bound_wins_when_no_scale_meets_both(export_model):
    calibration = _calibration(export_model, [20, 15, 21, 23], [0, 40, 80, 120])
    scale, rule = export_model.choose_scale(calibration, max_error=20)
    assert scale == 0.5 and "no scale reaches" in rule
    # With no error bound, the most colorful of a model that never reaches the share.
    muted = _calibration(export_model, [20, 15, 17, 19], [0, 10, 20, 30])
    assert export_model.choose_scale(muted)[0] == 1.5
    assert math.isnan(_calibration(export_model, [1] * 4, [0] * 4, truth=0).ratio(1.0))


@pytest.mark.parametrize("kind", ["lineart", "grayscale"])
def test_calibrate_scores_each_scale_as_colorize_renders_it(export_model, tmp_path, kind):
    model, config = load_model(make_checkpoint(tmp_path / "model", kind))
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(2):
        truth = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
        gray = np.repeat(truth.mean(2, keepdims=True).astype(np.uint8), 3, axis=2)
        pairs.append((gray, truth))
    calibration = export_model.calibrate(model, config, pairs, scales=(0.0, 1.0, 2.0))
    assert set(calibration.errors) == {0.0, 1.0, 2.0}
    # Scale 0 leaves no color at all; more scale, more color.
    assert calibration.colorfulness[0.0] < 0.5
    assert calibration.colorfulness[0.0] < calibration.colorfulness[1.0]
    assert calibration.colorfulness[1.0] < calibration.colorfulness[2.0]
    assert calibration.truth_colorfulness > 50 and calibration.input_error > 0


def test_scale_only_changes_nothing_but_the_scale(export_model, tmp_path):
    directory = make_checkpoint(tmp_path / "model")
    config_path = directory / "config.json"
    before = json.loads(config_path.read_text())
    weights = (directory / "model.safetensors").read_bytes()
    export_model.write_scale(directory, 0.65)
    after = json.loads(config_path.read_text())
    assert after == {**before, "chroma_scale": 0.65}
    assert list(after) == list(before)
    assert (directory / "model.safetensors").read_bytes() == weights
    assert load_model(directory)[1].chroma_scale == 0.65
