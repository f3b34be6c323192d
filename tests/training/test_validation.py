"""Validation colorizes through the pipeline's Colorizer, as a user would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from celpaint.color import tensor as color
from celpaint.io.frames import read_image
from celpaint.models.checkpoint import ModelConfig
from celpaint.training.gan import Trainer
from celpaint.training.validation import user_frame, validation_colorizer
from tests.training.test_gan import GENERATOR_ARGS, _trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _colorize(trainer: Trainer, line_art: np.ndarray | None, rgb: np.ndarray) -> np.ndarray:
    task = trainer.task
    arch_args = {**GENERATOR_ARGS, "out_channels": task.out_channels, "dropout": 0.5}
    config = ModelConfig(arch="unet", arch_args=arch_args, input_kind=task.input_kind,
                         output=task.output, size_multiple=8)  # fmt: skip
    colorizer = validation_colorizer(trainer.generator, config, trainer.device)
    return colorizer.colorize(user_frame(line_art, rgb)[None])[0]


def test_lab_colorize_keeps_the_input_lightness(pairs):
    trainer = _trainer("lab")
    rgb = read_image(pairs / "color" / "frame1.png")
    out = _colorize(trainer, None, rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8

    def lightness(image):
        return color.rgb_to_lab(torch.from_numpy(image).permute(2, 0, 1).float() / 255)[0]

    difference = (lightness(out) - lightness(rgb)).abs()
    # Only 8-bit rounding of the output (and gamut clipping of saturated guesses) moves L*.
    assert difference.mean() < 0.5


def test_validation_leaves_the_training_generator_and_the_rng_alone(pairs):
    trainer = _trainer("pix2pix")
    line_art = read_image(pairs / "sketch" / "frame1.png")[..., 0]
    rgb = read_image(pairs / "color" / "frame1.png")
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    formats = [p.is_contiguous(memory_format=torch.channels_last) for p in
               trainer.generator.parameters()]  # fmt: skip
    rng = torch.get_rng_state()
    out = _colorize(trainer, line_art, rgb)
    assert out.shape == rgb.shape
    assert torch.equal(torch.get_rng_state(), rng)
    assert trainer.generator.training
    after = list(trainer.generator.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert formats == [p.is_contiguous(memory_format=torch.channels_last) for p in after]


def test_user_frame_is_what_a_user_would_colorize():
    line_art = np.array([[0, 255]], np.uint8)
    rgb = np.zeros((1, 2, 3), np.uint8)
    assert user_frame(line_art, rgb).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    assert user_frame(None, rgb) is rgb
