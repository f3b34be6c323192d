"""The GAN ``Trainer``: a U-Net generator against a PatchGAN discriminator that sees the
generator's input with an output; one discriminator step and one generator step per batch, each
returning its losses (``celpaint.training.losses``).

What the networks see and predict is the run's ``Task`` (``celpaint.color.task``): line art
``(B, 1, h, w)`` as ``gray * 2 - 1`` -> RGB in ``[-1, 1]`` (pix2pix), or L* as ``L / 50 - 1`` ->
a*b* as ``ab / 110`` (lab). The Trainer is pure torch: no files, no progress reporting.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from celpaint.color.task import Task, task_named
from celpaint.errors import InputError
from celpaint.models.checkpoint import unwrap
from celpaint.training.config import TrainConfig
from celpaint.training.losses import GanRecipe, recipe_for


def config_task(config: TrainConfig) -> Task:
    """The model variant ``config.model`` names (what the generator sees and predicts)."""
    return task_named(config.model)


def generator_args(config: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the U-Net that ``config`` describes."""
    task = config_task(config)
    return {
        "in_channels": task.in_channels,
        "out_channels": task.out_channels,
        "depth": config.depth,
        "base_channels": config.base_channels,
        "max_channels": config.max_channels,
        "norm": config.norm,
        "dropout": config.dropout,
    }


def discriminator_args(config: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the PatchGAN: it sees the input and an output together."""
    task = config_task(config)
    return {
        "in_channels": task.in_channels + task.out_channels,
        "base_channels": config.disc_base_channels,
        "n_layers": config.disc_layers,
        "norm": config.norm,
    }


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix's initialisation: convolutions ~ N(0, 0.02), norm scales ~ N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d | nn.InstanceNorm2d) and layer.weight is not None:
            nn.init.normal_(layer.weight, 1.0, std)
            nn.init.zeros_(layer.bias)


def linear_decay(total_steps: int, decay_start: float) -> Callable[[int], float]:
    """Learning-rate factor per step: 1 until ``decay_start * total_steps``, then linearly
    down to ``1 / (decay steps + 1)`` at the last step (pix2pix's ``linear`` policy)."""
    start = int(round(total_steps * decay_start))
    span = max(1, total_steps - start)

    def factor(step: int) -> float:
        if step < start:
            return 1.0
        return max(0.0, 1.0 - (step - start) / (span + 1))

    return factor


@dataclass
class TrainBatch:
    """One batch in network space.

    Attributes:
        source: generator input ``(B, 1, h, w)`` (``Task.to_network``).
        target: ground truth output ``(B, C, h, w)`` (``Task.target``).
        prediction: the generator's output, computed once by the first step that needs it and
            shared by the discriminator and generator steps of the same batch.
    """

    source: torch.Tensor
    target: torch.Tensor
    prediction: torch.Tensor | None = None


def _random_shape(
    batch: dict[str, torch.Tensor], multiple: int, smallest: int = 1
) -> dict[str, torch.Tensor]:
    """The same random window of every tensor of a loader batch: height and width each drawn
    from the multiples of ``multiple`` between half (at least ``smallest``) and all of the
    batch's, at a random place (``random``'s state is the run's, saved in its checkpoints)."""
    height, width = batch["rgb"].shape[-2:]

    def side(size: int) -> tuple[int, int]:
        least = max(size // 2, smallest, multiple)
        choices = range(-(-least // multiple) * multiple, size + 1, multiple) or [size]
        length = random.choice(choices)
        return random.randint(0, size - length), length

    (top, rows), (left, cols) = side(height), side(width)
    return {
        name: tensor[..., top : top + rows, left : left + cols] for name, tensor in batch.items()
    }


class Trainer:
    """The two networks, their optimizers and schedulers, and one GAN step.

    Args:
        config: the run's options (model variant, learning rate, betas, schedule, AMP).
        generator, discriminator: freshly built or loaded networks (moved to ``device`` here).
        device: where to train.
        total_steps: optimizer steps of the whole run (for the learning-rate schedule).
        distributed: wrap both networks in DistributedDataParallel (the process group must be
            initialised); on CUDA, batch norm layers become SyncBatchNorm first.

    A step is ``d_step`` then ``g_step`` on the same batch (``train_step`` does both and advances
    the schedule). Both accept a loader batch (a dict of uint8 tensors, see
    ``celpaint.training.data``) or a ``TrainBatch`` from ``prepare``; they return their losses
    as floats.

    Raises:
        InputError: ``amp="on"`` on a device other than CUDA.
    """

    def __init__(
        self,
        config: TrainConfig,
        generator: nn.Module,
        discriminator: nn.Module,
        device: torch.device | str = "cpu",
        total_steps: int = 1,
        distributed: bool = False,
    ):
        self.config = config
        self.task = config_task(config)
        self.device = torch.device(device)
        self.recipe: GanRecipe = recipe_for(self.task, config.pixel_loss, config.pixel_weight)
        self.memory_format = (
            torch.channels_last if config.channels_last else torch.contiguous_format
        )
        generator = generator.to(self.device, memory_format=self.memory_format).train()
        discriminator = discriminator.to(self.device, memory_format=self.memory_format).train()
        if distributed:
            if self.device.type == "cuda":
                # SyncBatchNorm runs only on GPU modules; on the CPU each process keeps its own.
                generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
                discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
            ids = [self.device.index] if self.device.type == "cuda" else None
            generator = DistributedDataParallel(generator, device_ids=ids)
            discriminator = DistributedDataParallel(discriminator, device_ids=ids)
        self.generator = generator
        self.discriminator = discriminator
        betas = (config.beta1, config.beta2)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.optimizer_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.lr, betas=betas
        )
        schedule = linear_decay(total_steps, config.decay_start)
        self.scheduler_g = torch.optim.lr_scheduler.LambdaLR(self.optimizer_g, schedule)
        self.scheduler_d = torch.optim.lr_scheduler.LambdaLR(self.optimizer_d, schedule)
        self.amp = self.device.type == "cuda" and config.amp != "off"
        if config.amp == "on" and self.device.type != "cuda":
            raise InputError("--amp on needs a CUDA device; mixed precision is CUDA-only here")
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0

    # -- data ------------------------------------------------------------------------------

    def prepare(self, batch: dict[str, torch.Tensor] | TrainBatch) -> TrainBatch:
        """A loader batch (uint8 ``"rgb"`` ``(B, 3, h, w)`` and, for line-art models,
        ``"line_art"`` ``(B, 1, h, w)``) -> normalised network tensors on the device."""
        if isinstance(batch, TrainBatch):
            return batch
        if self.config.size_multiple is not None:
            # The discriminator needs crops of at least 3 * 2**layers (see training.loop).
            smallest = 3 * 2**self.config.disc_layers
            batch = _random_shape(batch, self.config.size_multiple, smallest)
        non_blocking = self.device.type == "cuda"
        rgb = batch["rgb"].to(self.device, non_blocking=non_blocking).float().div_(255.0)
        # The network sees the line art where the loader gives it, else the color frame's L*.
        seen = rgb
        if "line_art" in batch:
            seen = batch["line_art"].to(self.device, non_blocking=non_blocking).float()
            seen = seen.div_(255.0)
        source = self.task.to_network(seen)
        target = self.task.target(rgb)
        return TrainBatch(
            source.contiguous(memory_format=self.memory_format),
            target.contiguous(memory_format=self.memory_format),
        )

    def _autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def _generate(self, batch: TrainBatch) -> torch.Tensor:
        if batch.prediction is None:
            with self._autocast():
                batch.prediction = self.generator(batch.source)
        return batch.prediction

    # -- steps -----------------------------------------------------------------------------

    def d_step(self, batch: dict[str, torch.Tensor] | TrainBatch) -> dict[str, float]:
        """One discriminator update on real and generated pairs; returns its losses."""
        batch = self.prepare(batch)
        prediction = self._generate(batch)
        with self._autocast():
            real_logits = self.discriminator(torch.cat([batch.source, batch.target], 1))
            # Detached: this loss trains the discriminator only.
            fake_logits = self.discriminator(torch.cat([batch.source, prediction.detach()], 1))
            losses = self.recipe.discriminator_loss(real_logits.float(), fake_logits.float())
        self.optimizer_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(losses["d_total"]).backward()
        self.scaler_d.step(self.optimizer_d)
        self.scaler_d.update()
        return {name: value.item() for name, value in losses.items()}

    def g_step(self, batch: dict[str, torch.Tensor] | TrainBatch) -> dict[str, float]:
        """One generator update: fool the discriminator and match the target; returns losses."""
        batch = self.prepare(batch)
        prediction = self._generate(batch)
        # The discriminator is only a judge here: calling the bare module (not its DDP
        # wrapper) skips a gradient all-reduce that nothing would use, and freezing its
        # parameters keeps their gradients from being computed at all.
        judge = unwrap(self.discriminator)
        for parameter in judge.parameters():
            parameter.requires_grad_(False)
        try:
            with self._autocast():
                fake_logits = judge(torch.cat([batch.source, prediction], 1))
                losses = self.recipe.generator_loss(
                    fake_logits.float(), prediction.float(), batch.target
                )
            self.optimizer_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(losses["g_total"]).backward()
            self.scaler_g.step(self.optimizer_g)
            self.scaler_g.update()
        finally:
            for parameter in judge.parameters():
                parameter.requires_grad_(True)
        return {name: value.item() for name, value in losses.items()}

    def train_step(self, batch: dict[str, torch.Tensor] | TrainBatch) -> dict[str, float]:
        """``d_step`` + ``g_step`` on one batch, then one step of both schedules."""
        batch = self.prepare(batch)
        losses = self.d_step(batch)
        losses.update(self.g_step(batch))
        self.scheduler_g.step()
        self.scheduler_d.step()
        self.step += 1
        return losses

    @property
    def lr(self) -> float:
        return self.optimizer_g.param_groups[0]["lr"]

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: weights, optimizers, schedulers, scalers, RNG."""
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step,
            "generator": _cpu_state(unwrap(self.generator).state_dict()),
            "discriminator": _cpu_state(unwrap(self.discriminator).state_dict()),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "scheduler_g": self.scheduler_g.state_dict(),
            "scheduler_d": self.scheduler_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any], restore_rng: bool = True) -> None:
        """Continue from ``state_dict()``'s result (``restore_rng``: also the RNG states)."""
        unwrap(self.generator).load_state_dict(state["generator"])
        unwrap(self.discriminator).load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.scheduler_g.load_state_dict(state["scheduler_g"])
        self.scheduler_d.load_state_dict(state["scheduler_d"])
        # The optimizers kept the learning rate of the saved schedule; a run resumed with other
        # --epochs goes on with the schedule of its new length (``total_steps``) at once.
        for scheduler in (self.scheduler_g, self.scheduler_d):
            for group, base, factor in zip(
                scheduler.optimizer.param_groups,
                scheduler.base_lrs,
                scheduler.lr_lambdas,
                strict=True,
            ):
                group["lr"] = base * factor(scheduler.last_epoch)
        if self.amp:
            if state.get("scaler_g"):
                self.scaler_g.load_state_dict(state["scaler_g"])
            if state.get("scaler_d"):
                self.scaler_d.load_state_dict(state["scaler_d"])
        self.step = int(state["step"])
        if restore_rng:
            rng = state.get("rng", {})
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if "python" in rng:
                random.setstate(_as_tuple(rng["python"]))
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _as_tuple(value):
    # random.setstate wants tuples; a state that went through a list-producing path is fixed.
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
