"""GAN losses: adversarial losses (MSE and cross-entropy) and the two training recipes.

The recipes follow the founding report:

* **pix2pix** (Isola et al. 2017, least-squares variant): generator loss = MSE adversarial
  loss + ``100 x`` L1 between generated and target RGB (both in ``[-1, 1]``); discriminator
  loss = ``0.5 x`` MSE on real pairs + ``0.5 x`` MSE on generated pairs.
* **L*a*b* GAN**: generator loss = cross-entropy adversarial loss + ``100 x`` MSE between the
  predicted and target a*b* (both normalised as ``ab / 110``); discriminator loss = the average
  of the cross-entropy on real and on generated images.

The choice of weight 100 for the a*b* MSE is explained in docs/design.md (Training).

Discriminator outputs are raw logits ``(B, 1, h, w)`` (one per patch): the least-squares loss
regresses them towards 1 (real) and 0 (generated); the cross-entropy loss treats them as logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from celpaint.color.task import Task

AdversarialKind = Literal["mse", "bce"]
PixelKind = Literal["l1", "mse"]

# The losses a GAN step returns (``generator_loss`` and ``discriminator_loss`` together).
LOSS_NAMES = ("g_adv", "g_pixel", "g_total", "d_real", "d_fake", "d_total")


def adversarial_loss(
    logits: torch.Tensor, target_is_real: bool, kind: AdversarialKind
) -> torch.Tensor:
    """Loss of discriminator outputs against an all-real or all-generated target.

    Args:
        logits: discriminator outputs ``(B, 1, h, w)`` (any shape), unbounded.
        target_is_real: compare with label 1 (real) or 0 (generated).
        kind: ``"mse"`` (least squares on the raw outputs) or ``"bce"`` (binary cross-entropy
            on the outputs as logits, computed stably with ``binary_cross_entropy_with_logits``).

    Returns:
        A scalar tensor: the mean over every element.
    """
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    if kind == "mse":
        return F.mse_loss(logits, target)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"adversarial loss kind must be 'mse' or 'bce', got {kind!r}")


def pixel_loss(prediction: torch.Tensor, target: torch.Tensor, kind: PixelKind) -> torch.Tensor:
    """Mean L1 or squared error over every element of two same-shaped tensors."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape"
        )
    if kind == "l1":
        return F.l1_loss(prediction, target)
    if kind == "mse":
        return F.mse_loss(prediction, target)
    raise ValueError(f"pixel loss kind must be 'l1' or 'mse', got {kind!r}")


@dataclass(frozen=True)
class GanRecipe:
    """How the generator and discriminator losses are put together.

    Attributes:
        adversarial: ``"mse"`` (least squares) or ``"bce"`` (cross-entropy).
        pixel: ``"l1"`` or ``"mse"``, between generated and target network outputs.
        pixel_weight: multiplies the pixel loss in the generator loss.
        real_weight, fake_weight: multiply the discriminator's losses on real and on generated
            inputs (0.5 each: the pix2pix halving, which is also the average of the two).
    """

    adversarial: AdversarialKind
    pixel: PixelKind
    pixel_weight: float
    real_weight: float = 0.5
    fake_weight: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    def generator_loss(
        self, fake_logits: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Generator loss on one batch.

        Args:
            fake_logits: discriminator outputs for the generated pairs (gradients must reach
                the generator through them).
            prediction: the generator's output (RGB in ``[-1, 1]`` or ``ab / 110``).
            target: the ground truth in the same range and shape.

        Returns:
            ``{"g_adv", "g_pixel", "g_total"}`` scalar tensors; ``g_total`` is the one to
            back-propagate (``g_adv + pixel_weight * g_pixel``).
        """
        adversarial = adversarial_loss(fake_logits, True, self.adversarial)
        pixel = pixel_loss(prediction, target, self.pixel)
        return {
            "g_adv": adversarial,
            "g_pixel": pixel,
            "g_total": adversarial + self.pixel_weight * pixel,
        }

    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Discriminator loss on one batch.

        Args:
            real_logits: discriminator outputs for (input, ground truth) pairs.
            fake_logits: outputs for (input, generated) pairs, with the generated image
                detached so that this loss does not train the generator.

        Returns:
            ``{"d_real", "d_fake", "d_total"}`` scalar tensors;
            ``d_total = real_weight * d_real + fake_weight * d_fake``.
        """
        real = adversarial_loss(real_logits, True, self.adversarial)
        fake = adversarial_loss(fake_logits, False, self.adversarial)
        return {
            "d_real": real,
            "d_fake": fake,
            "d_total": self.real_weight * real + self.fake_weight * fake,
        }


PIX2PIX = GanRecipe(adversarial="mse", pixel="l1", pixel_weight=100.0)
"""pix2pix as in the founding report: MSE adversarial loss + 100 x L1 on RGB."""

LAB = GanRecipe(adversarial="bce", pixel="mse", pixel_weight=100.0)
"""The L*a*b* GAN: cross-entropy adversarial loss + 100 x MSE on a*b* / 110."""

LAB_L1 = GanRecipe(adversarial="bce", pixel="l1", pixel_weight=100.0)
"""The L*a*b* GAN with Nazeri et al.'s 100 x L1 instead of the MSE."""


RECIPES: dict[str, GanRecipe] = {"pix2pix": PIX2PIX, "lab": LAB}
"""The default recipe of each model variant, keyed by the ``Task``'s name."""


def recipe_for(
    task: Task, pixel: PixelKind | None = None, pixel_weight: float | None = None
) -> GanRecipe:
    """The default recipe of ``task`` (``RECIPES``), optionally adjusted.

    Args:
        task: the model variant (``celpaint.color.task``).
        pixel: replaces the pixel loss kind (e.g. ``"l1"`` for the Nazeri variant).
        pixel_weight: replaces the pixel loss weight.

    Raises:
        ValueError: a task without a recipe.
    """
    try:
        recipe = RECIPES[task.name]
    except KeyError:
        raise ValueError(f"no training recipe for {task!r}; known: {', '.join(RECIPES)}") from None
    changes = {}
    if pixel is not None:
        changes["pixel"] = pixel
    if pixel_weight is not None:
        changes["pixel_weight"] = float(pixel_weight)
    return GanRecipe(**{**recipe.to_dict(), **changes}) if changes else recipe
