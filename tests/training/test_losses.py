"""Each loss against a value computed by hand on small tensors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from celpaint.color import task
from celpaint.training.losses import (
    LAB,
    LAB_L1,
    PIX2PIX,
    RECIPES,
    GanRecipe,
    adversarial_loss,
    pixel_loss,
    recipe_for,
)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values).view(1, 1, 1, -1)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_mse_adversarial_loss_regresses_to_one_and_zero():
    logits = _t(0.5, -1.0, 2.0, 0.0)
    # mean((x - 1)^2) = (0.25 + 4 + 1 + 1) / 4
    assert adversarial_loss(logits, True, "mse").item() == pytest.approx(1.5625)
    # mean(x^2) = (0.25 + 1 + 4 + 0) / 4
    assert adversarial_loss(logits, False, "mse").item() == pytest.approx(1.3125)


def test_bce_adversarial_loss_treats_outputs_as_logits():
    logits = _t(2.0, 0.0)
    # -log(sigmoid(x)) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
    real = (softplus(-2.0) + math.log(2)) / 2
    fake = (softplus(2.0) + math.log(2)) / 2
    assert adversarial_loss(logits, True, "bce").item() == pytest.approx(real, rel=1e-6)
    assert adversarial_loss(logits, False, "bce").item() == pytest.approx(fake, rel=1e-6)
    # Large logits stay finite (computed from logits, not from probabilities).
    assert math.isfinite(adversarial_loss(_t(100.0), False, "bce").item())


def test_pixel_losses():
    prediction, target = _t(0.0, 0.5, -1.0), _t(1.0, 0.0, -1.0)
    assert pixel_loss(prediction, target, "l1").item() == pytest.approx(0.5)
    assert pixel_loss(prediction, target, "mse").item() == pytest.approx(1.25 / 3)
    with pytest.raises(ValueError, match="differ in shape"):
        pixel_loss(prediction, _t(1.0), "l1")


def test_pix2pix_generator_loss_is_mse_adversarial_plus_100_l1():
    losses = PIX2PIX.generator_loss(_t(0.5), _t(0.0, 0.5), _t(1.0, 0.0))
    assert losses["g_adv"].item() == pytest.approx(0.25)
    assert losses["g_pixel"].item() == pytest.approx(0.75)
    assert losses["g_total"].item() == pytest.approx(0.25 + 100 * 0.75)


def test_pix2pix_discriminator_loss_weights_real_and_fake_by_half():
    losses = PIX2PIX.discriminator_loss(real_logits=_t(0.0), fake_logits=_t(2.0))
    assert losses["d_real"].item() == pytest.approx(1.0)
    assert losses["d_fake"].item() == pytest.approx(4.0)
    assert losses["d_total"].item() == pytest.approx(0.5 * 1.0 + 0.5 * 4.0)


def test_lab_generator_loss_is_cross_entropy_plus_100_mse():
    losses = LAB.generator_loss(_t(0.0), _t(0.1, -0.2), _t(0.0, 0.0))
    assert losses["g_adv"].item() == pytest.approx(math.log(2))
    assert losses["g_pixel"].item() == pytest.approx((0.01 + 0.04) / 2)
    assert losses["g_total"].item() == pytest.approx(math.log(2) + 100 * 0.025)
    l1 = LAB_L1.generator_loss(_t(0.0), _t(0.1, -0.2), _t(0.0, 0.0))
    assert l1["g_total"].item() == pytest.approx(math.log(2) + 100 * 0.15)


def test_lab_discriminator_loss_averages_real_and_fake():
    losses = LAB.discriminator_loss(real_logits=_t(0.0), fake_logits=_t(3.0))
    expected = (math.log(2) + softplus(3.0)) / 2
    assert losses["d_total"].item() == pytest.approx(expected, rel=1e-6)


def test_gradients_reach_the_prediction():
    prediction = _t(0.2, -0.3).requires_grad_()
    fake_logits = (prediction.sum() * torch.ones(1, 1, 2, 2)).requires_grad_()
    PIX2PIX.generator_loss(fake_logits, prediction, _t(0.0, 0.0))["g_total"].backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0


def test_every_task_has_a_recipe():
    assert set(RECIPES) == set(task.TASKS)


def test_recipe_for_defaults_and_overrides():
    assert recipe_for(task.PIX2PIX) == PIX2PIX
    assert recipe_for(task.LAB) == LAB
    assert recipe_for(task.LAB, pixel="l1") == LAB_L1
    assert recipe_for(task.PIX2PIX, pixel_weight=10).pixel_weight == 10.0
    assert isinstance(recipe_for(task.LAB), GanRecipe)
    with pytest.raises(ValueError):
        recipe_for(SimpleNamespace(name="cyclegan"))
    with pytest.raises(ValueError):
        adversarial_loss(_t(0.0), True, "hinge")
