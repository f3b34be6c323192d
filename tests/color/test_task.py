"""The model variants: what each network sees and predicts, described once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from celpaint.color import array, tensor
from celpaint.color.task import LAB, PIX2PIX, TASKS, task_for, task_named


def _frames(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.random((2, 3, 8, 12), dtype=np.float32))


def test_names_and_lookups():
    assert set(TASKS) == {"pix2pix", "lab"}
    assert task_named("pix2pix") is PIX2PIX and task_for("grayscale", "ab") is LAB
    assert (PIX2PIX.out_channels, LAB.out_channels) == (3, 2)
    assert not PIX2PIX.keeps_input_lightness and LAB.keeps_input_lightness
    with pytest.raises(ValueError, match="unknown task"):
        task_named("cyclegan")
    with pytest.raises(ValueError, match="no model variant"):
        task_for("lineart", "ab")


def test_network_inputs_and_targets_are_in_the_documented_ranges():
    rgb = _frames()
    gray = tensor.rgb_to_gray(rgb)
    assert torch.equal(PIX2PIX.to_network(rgb), gray * 2 - 1)
    # A line-art network sees the gray level alone: gray frames stand in for RGB.
    assert PIX2PIX.reads_gray and torch.equal(PIX2PIX.to_network(gray), gray * 2 - 1)
    lab = tensor.rgb_to_lab(rgb)
    assert torch.allclose(LAB.to_network(rgb), lab[:, :1] / 50 - 1)
    assert torch.allclose(LAB.target(rgb), lab[:, 1:] / 110)
    assert torch.equal(PIX2PIX.target(rgb), rgb * 2 - 1)
    assert PIX2PIX.to_network(rgb).shape == LAB.to_network(rgb).shape == (2, 1, 8, 12)


def test_to_lab_inverts_the_targets():
    rgb = _frames(1)
    source = LAB.to_network(rgb)
    lab = LAB.to_lab(LAB.target(rgb), source)
    expected = tensor.rgb_to_lab(rgb).permute(0, 2, 3, 1).numpy()
    assert lab.shape == (2, 8, 12, 3) and lab.dtype == np.float32
    np.testing.assert_allclose(lab, expected, atol=1e-3)
    from_rgb = PIX2PIX.to_lab(PIX2PIX.target(rgb), PIX2PIX.to_network(rgb))
    frames = rgb.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(from_rgb[0], array.rgb_to_lab(frames[0]), atol=1e-3)
