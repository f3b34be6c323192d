"""Training: the GAN ``Trainer`` (one discriminator step, one generator step) and ``train()``, a
whole run that writes a run directory.

Two models, both a U-Net generator against a 70x70 PatchGAN discriminator that sees the
generator's input with an output (see ``celpaint.models.losses`` for the losses):

* ``pix2pix``: line art ``(B, 1, h, w)`` in ``[-1, 1]`` (``gray * 2 - 1``) -> RGB
  ``(B, 3, h, w)`` in ``[-1, 1]`` (``rgb * 2 - 1``). Saved with ``input_kind="lineart"``,
  ``output="rgb"``.
* ``lab``: L* ``(B, 1, h, w)`` as ``L / 50 - 1`` -> a*b* ``(B, 2, h, w)`` as ``ab / 110``; the
  output image keeps the input's L* exactly. Saved with ``input_kind="grayscale"``,
  ``output="ab"``. L*a*b* conversions are kornia's (``celpaint.color``).

A run directory (``TrainConfig.out``) holds::

    generator/         the generator in the checkpoint format (what `colorize --model` loads)
    discriminator/     the discriminator, same format
    train_state.pt     everything --resume needs: step, epoch, both networks' weights, optimizers,
                       schedulers, gradient scalers, RNG states, the resolved config. Tensors and
                       plain values only: it loads with torch.load(weights_only=True).
    losses.csv         step, epoch, every loss, the learning rate
    loss_curves.png    the losses over the steps
    samples/epoch_NNN.png  rows: input, generated, ground truth, for fixed validation frames
    metrics.json       validation PSNR, SSIM, mean CIEDE2000 and pixel accuracy per epoch

Every file is replaced atomically (written beside its target, then renamed), so a crash while
saving keeps the previous checkpoint. The weights live in ``train_state.pt`` too, so that the
state it describes is always self-consistent, whatever happened between two files.

Under ``torchrun`` (``WORLD_SIZE`` > 1) ``train()`` uses DistributedDataParallel (gloo on the CPU,
nccl on CUDA), a distributed sampler, SyncBatchNorm on CUDA only (on the CPU each process keeps
its own batch statistics; the buffers of rank 0 are broadcast at each forward), and only rank 0
writes files or reports progress.

This module imports the pipeline's datasets and metrics only inside ``train()``: the Trainer
itself is pure torch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from celpaint import color
from celpaint.errors import CelpaintError, CheckpointError, InputError
from celpaint.models import registry
from celpaint.models.checkpoint import CONFIG_NAME, ModelConfig, load_model, save_model, unwrap
from celpaint.models.losses import GanRecipe, recipe_for
from celpaint.pipeline.frames import atomic_path, write_image, write_text

log = logging.getLogger("celpaint")

ModelKind = Literal["pix2pix", "lab"]

STATE_NAME = "train_state.pt"
STATE_FORMAT = 1
LOSS_NAMES = ("g_adv", "g_pixel", "g_total", "d_real", "d_fake", "d_total")
# The columns of losses.csv.
LOSS_COLUMNS = ["step", "epoch", *LOSS_NAMES, "lr"]
RUN_FILES = (
    "generator",
    "discriminator",
    STATE_NAME,
    "losses.csv",
    "loss_curves.png",
    "samples",
    "metrics.json",
)

# Options that change the networks: a resumed run must keep them.
ARCH_FIELDS = (
    "model",
    "depth",
    "base_channels",
    "max_channels",
    "norm",
    "dropout",
    "disc_base_channels",
    "disc_layers",
    "init",
)
# Options that change the schedule: --resume continues the one the run started with.
SCHEDULE_FIELDS = (
    "epochs",
    "batch_size",
    "crop",
    "work_size",
    "lr",
    "beta1",
    "beta2",
    "decay_start",
    "seed",
    "pixel_loss",
    "pixel_weight",
)


@dataclass
class TrainConfig:
    """Everything a training run needs; saved (resolved) in ``train_state.pt``.

    Data (see ``celpaint.pipeline.datasets.DataSpec``): ``sketch`` + ``color`` folders,
    ``aligned`` folder, or ``color`` alone (folder or clip); ``val`` / ``val_sketch`` or
    ``val_fraction``; ``match``, ``aligned_order``, ``frame_step``, ``on_error``, ``cache``.

    Schedule: Adam (``lr``, ``beta1``, ``beta2``) for both networks, constant for the first
    ``decay_start`` share of the steps, then linearly decaying towards 0 (pix2pix).

    Networks: the U-Net generator (``depth``, ``base_channels``, ``max_channels``, ``norm``,
    ``dropout``) and the PatchGAN (``disc_base_channels``, ``disc_layers``; 3 layers give the
    70x70 receptive field). ``init`` starts the generator from a shipped model name or a
    checkpoint / run directory, whose architecture then replaces the generator options.

    ``pixel_loss`` / ``pixel_weight`` override the recipe's pixel loss (None: the report's).

    Run: ``device`` (auto, cpu, cuda, cuda:N, mps), ``amp`` (auto = mixed precision on CUDA),
    ``workers`` (loader processes), ``threads`` (torch CPU threads during the run; None keeps
    torch's default of one per core; on a machine busy with other work fewer threads can be
    much faster, as torch's threads wait for each other), ``save_every`` (steps between
    checkpoints besides epoch ends; 0 for epoch ends only), ``samples`` (frames in the sample
    grids), ``val_limit`` (most validation frames scored per epoch; 0 for all),
    ``channels_last`` (faster convolutions on CPU and GPU), ``resume`` and ``overwrite`` (what
    to do with an existing ``out``).
    """

    model: ModelKind = "pix2pix"
    out: str = "runs/celpaint"
    sketch: str | None = None
    color: str | None = None
    aligned: str | None = None
    val: str | None = None
    val_sketch: str | None = None
    val_fraction: float = 0.05
    match: str = "name"
    aligned_order: str = "sketch-color"
    frame_step: int = 1
    on_error: str = "skip"
    cache: bool = True
    epochs: int = 20
    batch_size: int = 4
    crop: int = 256
    work_size: int = 512
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5
    seed: int = 0
    depth: int = 7
    base_channels: int = 32
    max_channels: int = 192
    norm: str = "batch"
    dropout: float = 0.5
    disc_base_channels: int = 32
    disc_layers: int = 3
    pixel_loss: str | None = None
    pixel_weight: float | None = None
    init: str | None = None
    device: str = "auto"
    amp: str = "auto"
    workers: int = 2
    threads: int | None = None
    save_every: int = 500
    samples: int = 4
    val_limit: int = 64
    channels_last: bool = True
    resume: bool = False
    overwrite: bool = False
    trained_on: str = ""
    ffmpeg: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def check(self) -> None:
        """Reject values that cannot work, with the option to fix."""
        if self.model not in ("pix2pix", "lab"):
            raise InputError(f"--model must be pix2pix or lab, got {self.model!r}")
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "crop": self.crop,
            "work_size": self.work_size,
            "frame_step": self.frame_step,
        }
        for name, value in positive.items():
            if value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not self.lr > 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.decay_start <= 1:
            raise InputError(f"--decay-start must be in [0, 1], got {self.decay_start}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")
        if self.workers < 0 or self.save_every < 0 or self.samples < 0 or self.val_limit < 0:
            raise InputError("--workers, --save-every, --samples and --val-limit must be >= 0")
        if self.amp not in ("auto", "on", "off"):
            raise InputError(f"--amp must be auto, on or off, got {self.amp!r}")
        if self.pixel_loss not in (None, "l1", "mse"):
            raise InputError(f"--pixel-loss must be l1 or mse, got {self.pixel_loss!r}")
        if self.resume and self.overwrite:
            raise InputError("--resume continues the run in --out and --overwrite replaces it; "
                             "pass one of them")  # fmt: skip
        if self.norm not in ("batch", "instance", "none"):
            raise InputError(f"--norm must be batch, instance or none, got {self.norm!r}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"--dropout must be in [0, 1), got {self.dropout}")

    @property
    def input_kind(self) -> str:
        return "lineart" if self.model == "pix2pix" else "grayscale"

    @property
    def output_kind(self) -> str:
        return "rgb" if self.model == "pix2pix" else "ab"


def generator_args(config: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the U-Net that ``config`` describes."""
    return {
        "in_channels": 1,
        "out_channels": 3 if config.model == "pix2pix" else 2,
        "depth": config.depth,
        "base_channels": config.base_channels,
        "max_channels": config.max_channels,
        "norm": config.norm,
        "dropout": config.dropout,
    }


def discriminator_args(config: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the PatchGAN: it sees the input and an output together."""
    return {
        "in_channels": 1 + (3 if config.model == "pix2pix" else 2),
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
        source: generator input ``(B, 1, h, w)`` (line art ``* 2 - 1`` or ``L / 50 - 1``).
        target: ground truth output ``(B, C, h, w)`` (RGB ``* 2 - 1`` or ``ab / 110``).
        prediction: the generator's output, computed once by the first step that needs it and
            shared by the discriminator and generator steps of the same batch.
    """

    source: torch.Tensor
    target: torch.Tensor
    prediction: torch.Tensor | None = None


class Trainer:
    """The two networks, their optimizers and schedulers, and one GAN step.

    Args:
        config: the run's options (model kind, learning rate, betas, schedule, AMP).
        generator, discriminator: freshly built or loaded networks (moved to ``device`` here).
        device: where to train.
        total_steps: optimizer steps of the whole run (for the learning-rate schedule).
        distributed: wrap both networks in DistributedDataParallel (the process group must be
            initialised); on CUDA, batch norm layers become SyncBatchNorm first.

    A step is ``d_step`` then ``g_step`` on the same batch (``train_step`` does both and advances
    the schedule). Both accept a loader batch (a dict of uint8 tensors, see
    ``celpaint.pipeline.datasets``) or a ``TrainBatch`` from ``prepare``; they return their losses
    as floats.
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
        self.device = torch.device(device)
        self.recipe: GanRecipe = recipe_for(config.model, config.pixel_loss, config.pixel_weight)
        self.memory_format = (
            torch.channels_last if config.channels_last else torch.contiguous_format
        )
        generator = generator.to(self.device, memory_format=self.memory_format).train()
        discriminator = discriminator.to(self.device, memory_format=self.memory_format).train()
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

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
        """A loader batch (uint8 ``"rgb"`` ``(B, 3, h, w)`` and, for pix2pix, ``"line_art"``
        ``(B, 1, h, w)``) -> normalised network tensors on the device."""
        if isinstance(batch, TrainBatch):
            return batch
        non_blocking = self.device.type == "cuda"
        rgb = batch["rgb"].to(self.device, non_blocking=non_blocking).float().div_(255.0)
        if self.config.model == "pix2pix":
            line_art = batch["line_art"].to(self.device, non_blocking=non_blocking).float()
            source = color.normalize_unit(line_art.div_(255.0))
            target = color.normalize_unit(rgb)
        else:
            lab = color.rgb_to_lab(rgb)
            source = color.normalize_l(lab[:, :1])
            target = color.normalize_ab(lab[:, 1:])
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

    # -- inference for validation ----------------------------------------------------------

    @torch.no_grad()
    def colorize(self, line_art: np.ndarray | None, rgb: np.ndarray) -> np.ndarray:
        """Colorize one whole frame as the ``Colorizer`` would (eval mode, padded input).

        Args:
            line_art: uint8 ``(H, W)`` (pix2pix) or None (lab).
            rgb: uint8 ``(H, W, 3)`` the color frame (its L* is the lab model's input).

        Returns:
            uint8 ``(H, W, 3)`` RGB.
        """
        generator = unwrap(self.generator)
        was_training = generator.training
        generator.eval()
        try:
            height, width = rgb.shape[:2]
            # torch.tensor copies: decoded frames may be read-only numpy buffers.
            frame = torch.tensor(rgb, device=self.device).permute(2, 0, 1)[None].float() / 255
            if self.config.model == "pix2pix":
                lines = torch.tensor(line_art, device=self.device)[None, None].float() / 255
                source = color.normalize_unit(lines)
            else:
                source = color.normalize_l(color.rgb_to_lab(frame)[:, :1])
            multiple = generator.size_multiple if hasattr(generator, "size_multiple") else 1
            pad_h, pad_w = -height % multiple, -width % multiple
            padded = source
            if pad_h or pad_w:
                # Replicated borders, as in the Colorizer: zeros would read as a black line.
                padded = F.pad(source, (0, pad_w, 0, pad_h), mode="replicate")
            padded = padded.contiguous(memory_format=self.memory_format)
            output = generator(padded).float()[..., :height, :width]
            if self.config.model == "pix2pix":
                result = color.denormalize_unit(output)
            else:
                lab = torch.cat([color.denormalize_l(source), color.denormalize_ab(output)], 1)
                result = color.lab_to_rgb(lab)
        finally:
            generator.train(was_training)
        out = (result[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0)
        return out.cpu().numpy()

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
        unwrap(self.generator).load_state_dict(state["generator"])
        unwrap(self.discriminator).load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.scheduler_g.load_state_dict(state["scheduler_g"])
        self.scheduler_d.load_state_dict(state["scheduler_d"])
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


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _as_tuple(value):
    # random.setstate wants tuples; a state that went through a list-producing path is fixed.
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


# -- train state file ------------------------------------------------------------------------


def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temp file beside it, then a rename)."""
    path = Path(path)
    with atomic_path(path) as temp:
        torch.save(state, temp)
    return path


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``train_state.pt`` without executing pickled code (``weights_only=True``).

    Raises:
        CheckpointError: missing, corrupt, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent} holds no {STATE_NAME}: there is no run to resume there"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(
            f"{path} is corrupt or not a celpaint training state ({type(error).__name__}); "
            "start over with --overwrite"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != STATE_FORMAT:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise CheckpointError(
            f"{path} has training-state format {version!r}; this celpaint resumes format "
            f"{STATE_FORMAT}. Start a new run with --init {path.parent} instead"
        )
    return state


# -- progress --------------------------------------------------------------------------------


@dataclass
class TrainInfo:
    """What a run is about to do (given to ``TrainProgress.start``)."""

    out: Path
    model: str
    device: str
    world_size: int
    train_count: int
    val_count: int
    skipped: list[str]
    steps_per_epoch: int
    total_steps: int
    start_step: int
    epochs: int
    generator_parameters: int
    discriminator_parameters: int
    resumed: bool


@dataclass
class StepUpdate:
    """One finished optimizer step (given to ``TrainProgress.step``)."""

    step: int
    total_steps: int
    epoch: int
    epochs: int
    batch: int
    steps_per_epoch: int
    losses: dict[str, float]
    lr: float
    images_per_second: float
    eta_seconds: float


@dataclass
class TrainResult:
    """How a run ended."""

    out: Path
    step: int
    total_steps: int
    epochs_done: int
    interrupted: bool
    seconds: float
    images_per_second: float
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class TrainProgress:
    """Callbacks a run reports through (only on rank 0). Override what you need."""

    def loading(self, done: int, total: int) -> None:
        """Training data being decoded."""

    def start(self, info: TrainInfo) -> None:
        """The data is read and the networks are built; training starts."""

    def step(self, update: StepUpdate) -> None:
        """An optimizer step finished."""

    def validating(self, epoch: int) -> None:
        """Validation of ``epoch`` (1-based) starts."""

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Epoch ``epoch`` (1-based) finished; ``metrics`` is empty without validation data."""

    def saved(self, step: int, reason: str) -> None:
        """A checkpoint was written (``reason``: "every", "epoch", "stop" or "end")."""

    def stopping(self) -> None:
        """An interrupt was received: the current step finishes, then everything is saved."""

    def end(self, result: TrainResult) -> None:
        """The run finished or was interrupted; everything is saved."""


# -- the run directory -----------------------------------------------------------------------


def check_output_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an output folder that holds something else, before anything is read or written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder for the run")
    state = out / STATE_NAME
    if resume:
        if not state.is_file():
            raise InputError(
                f"--resume: {out} holds no {STATE_NAME}, so there is no run to continue; drop "
                "--resume to start one"
            )
        return
    if not out.exists() or overwrite:
        return
    entries = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if state.is_file():
        raise InputError(
            f"{out} holds another training run; pass --resume to continue it, --overwrite to "
            "replace it, or another --out"
        )
    if entries:
        raise InputError(
            f"{out} is not empty ({', '.join(sorted(entries)[:5])}); pass another --out, or "
            "--overwrite to write the run there (files of a previous run are replaced)"
        )


def clear_run_files(out: Path) -> None:
    """Remove a previous run's files from ``out`` (other files are left alone)."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class RunWriter:
    """Writes the run directory's logs (rank 0 only)."""

    def __init__(self, out: Path, resume_step: int | None):
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        if resume_step is not None:
            self._load_previous(resume_step)

    @property
    def losses_path(self) -> Path:
        return self.out / "losses.csv"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.json"

    def _load_previous(self, step: int) -> None:
        # Rows or metrics written after the saved state (a crash between files) are dropped,
        # so the logs describe exactly the steps the resumed run continues from.
        if self.losses_path.is_file():
            with self.losses_path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    try:
                        parsed = {k: float(v) for k, v in row.items()}
                    except (TypeError, ValueError):
                        continue
                    if parsed["step"] <= step:
                        parsed["step"], parsed["epoch"] = int(parsed["step"]), int(parsed["epoch"])
                        self.rows.append(parsed)
        self._write_losses(self.rows)
        if self.metrics_path.is_file():
            try:
                data = json.loads(self.metrics_path.read_text())
                self.metrics = [e for e in data.get("epochs", []) if e.get("step", 0) <= step]
            except (json.JSONDecodeError, AttributeError):
                self.metrics = []

    def _write_losses(self, rows: Iterable[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=LOSS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        write_text(self.losses_path, buffer.getvalue())

    def log(self, step: int, epoch: int, losses: dict[str, float], lr: float) -> None:
        row = {"step": step, "epoch": epoch, **{k: losses[k] for k in LOSS_NAMES}, "lr": lr}
        self.rows.append(row)
        self.pending.append(row)

    def flush(self) -> None:
        """Append the rows logged since the last flush (at each checkpoint)."""
        if not self.pending:
            return
        if not self.losses_path.is_file():
            self._write_losses(self.rows)
        else:
            with self.losses_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=LOSS_COLUMNS)
                for row in self.pending:
                    writer.writerow(row)
        self.pending.clear()

    def add_metrics(self, entry: dict[str, Any], model: str) -> None:
        from celpaint.pipeline.metrics import json_safe

        self.metrics = [e for e in self.metrics if e["epoch"] != entry["epoch"]] + [entry]
        data = {"model": model, "metrics": ["psnr", "ssim", "ciede2000", "accuracy"],
                "epochs": self.metrics}  # fmt: skip
        write_text(self.metrics_path, json.dumps(json_safe(data), indent=2) + "\n")

    def plot(self) -> None:
        """Draw ``loss_curves.png`` (matplotlib's Agg canvas; pyplot's global state untouched)."""
        if not self.rows:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        steps = np.array([row["step"] for row in self.rows])
        figure = Figure(figsize=(10, 4), dpi=100)
        FigureCanvasAgg(figure)
        panels = (
            ("generator", ("g_total", "g_adv", "g_pixel")),
            ("discriminator", ("d_total", "d_real", "d_fake")),
        )
        for index, (title, names) in enumerate(panels):
            axes = figure.add_subplot(1, 2, index + 1)
            positive = True
            for name in names:
                values = np.array([row[name] for row in self.rows], dtype=float)
                positive = positive and values.min() > 0
                axes.plot(steps, values, alpha=0.25, linewidth=0.8)
                axes.plot(steps, _smooth(values), label=name, color=axes.lines[-1].get_color())
            axes.set_title(title)
            axes.set_xlabel("step")
            # A log scale only where every series drawn on it is positive.
            axes.set_yscale("log" if title == "generator" and positive else "linear")
            axes.legend(loc="upper right", fontsize="small")
            axes.grid(alpha=0.3)
        figure.tight_layout()
        with atomic_path(self.out / "loss_curves.png") as temp:
            figure.savefig(temp, format="png")


def _smooth(values: np.ndarray, window: int = 0) -> np.ndarray:
    window = window or max(1, len(values) // 50)
    if window <= 1:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size x size`` window of ``image`` (mirror-padded when smaller)."""
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
        image = np.pad(image, padding, mode="symmetric")
        height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def sample_grid(columns: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    """A uint8 RGB grid: one column per frame; rows input, generated, ground truth."""
    gap = 4
    rows, count = 3, len(columns)
    grid = np.full((rows * size + (rows - 1) * gap, count * size + (count - 1) * gap, 3), 255,
                   np.uint8)  # fmt: skip
    for column, images in enumerate(columns):
        for row, image in enumerate(images):
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            top, left = row * (size + gap), column * (size + gap)
            grid[top : top + size, left : left + size] = _tile(image, size)
    return grid


# -- signals and distribution ----------------------------------------------------------------


@contextmanager
def _stop_on_signals(stop: threading.Event, on_stop: Callable[[], None]):
    """First SIGINT/SIGTERM: ask the loop to stop after the current step; second: raise."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            return
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        on_stop()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process if ``flag`` is True on any (so all stop at the same step)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def gather_errors(self, error: BaseException | None) -> list[tuple[int, str]]:
        """``(rank, message)`` of every process whose preparation failed."""
        if not self.enabled:
            return [(0, str(error))] if error is not None else []
        messages: list[str | None] = [None] * self.world_size
        torch.distributed.all_gather_object(messages, None if error is None else str(error))
        return [(rank, m) for rank, m in enumerate(messages) if m is not None]


def _distributed_setup(device_text: str) -> tuple[_Dist, str]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist(), device_text
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_text.startswith("cuda") or (
        device_text == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        device_text = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    else:
        device_text = "cpu"
    owns = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return _Dist(rank, world_size, local_rank, owns), device_text


# -- the run ---------------------------------------------------------------------------------


def _explicit_fields(config: TrainConfig) -> set[str]:
    defaults = TrainConfig()
    return {f.name for f in fields(TrainConfig) if getattr(config, f.name) != getattr(defaults,
            f.name)}  # fmt: skip


def resolve_resume(config: TrainConfig, saved: dict[str, Any], explicit: set[str]) -> TrainConfig:
    """The config a resumed run continues with: the saved one, with run-time options
    (device, workers, data paths, save interval...) taken from ``config`` where given.

    Raises:
        CheckpointError: an architecture option differs from the run's.
        InputError: a schedule option differs (the run would not continue its schedule).
    """
    previous = TrainConfig.from_dict(saved)
    for name in ARCH_FIELDS:
        if name in explicit and getattr(config, name) != getattr(previous, name):
            raise CheckpointError(
                f"--resume: the run in {config.out} was trained with {name} = "
                f"{getattr(previous, name)!r}, not {getattr(config, name)!r}; a resumed run keeps "
                "its architecture (drop the option, or start a new run with --init "
                f"{config.out})"
            )
    for name in SCHEDULE_FIELDS:
        if name in explicit and getattr(config, name) != getattr(previous, name):
            raise InputError(
                f"--resume continues the run's schedule, which has {name} = "
                f"{getattr(previous, name)!r}; drop --{name.replace('_', '-')}, or start a new "
                f"run with --init {config.out} to train further with other settings"
            )
    merged = previous.to_dict()
    for name in explicit:
        if name not in ARCH_FIELDS and name not in SCHEDULE_FIELDS:
            merged[name] = getattr(config, name)
    merged["resume"] = True
    merged["overwrite"] = False
    merged["out"] = config.out
    return TrainConfig.from_dict(merged)


def _load_init(config: TrainConfig, explicit: set[str]):
    """Load ``--init``: the generator (and a matching discriminator of a run directory)."""
    from celpaint.models import zoo

    directory = zoo.generator_directory(config.init)
    generator, model_config = load_model(directory)
    wanted = (config.input_kind, config.output_kind)
    if (model_config.input_kind, model_config.output) != wanted:
        other = "pix2pix" if model_config.output == "rgb" else "lab"
        raise InputError(
            f"--init {config.init} is a {model_config.input_kind} -> {model_config.output} model, "
            f"but --model {config.model} trains {wanted[0]} -> {wanted[1]}; use --model {other}"
        )
    if model_config.arch == "unet":
        for name in ("depth", "base_channels", "max_channels", "norm", "dropout"):
            value = model_config.arch_args.get(name, getattr(config, name))
            if name in explicit and value != getattr(config, name):
                raise InputError(
                    f"--init {config.init} fixes the generator's {name} to {value!r}; drop "
                    f"--{name.replace('_', '-')}"
                )
            setattr(config, name, value)
    discriminator = None
    disc_dir = directory.parent / "discriminator"
    if directory.name == "generator" and (disc_dir / CONFIG_NAME).is_file():
        try:
            candidate, disc_config = load_model(disc_dir)
        except CheckpointError as error:
            log.warning("--init: ignoring the discriminator of %s (%s)", config.init, error)
        else:
            if disc_config.arch_args == discriminator_args(config):
                discriminator = candidate
    return generator, model_config, discriminator


def train(
    config: TrainConfig,
    progress: TrainProgress | None = None,
    explicit: set[str] | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> TrainResult:
    """Train a model and write the run directory ``config.out``.

    Args:
        config: the options; ``config.resume`` continues the run in ``config.out``.
        progress: callbacks (rank 0 only).
        explicit: names of the options the user set; on resume, only those may override the
            saved run's (default: those that differ from ``TrainConfig()``).
        stop: set it to stop after the current step (everything is saved first).
        handle_signals: in the main thread, Ctrl-C (or SIGTERM) sets ``stop`` instead of
            killing the run; a second one raises ``KeyboardInterrupt`` at once (the last
            checkpoint stays valid). The previous handlers are restored on return.

    Returns:
        How the run ended (``interrupted`` when stopped early).

    Raises:
        InputError: bad options or data, an output folder holding something else.
        CheckpointError: a corrupt state or an architecture that does not match on resume.
    """
    progress = progress or TrainProgress()
    stop = stop or threading.Event()
    explicit = set(_explicit_fields(config) if explicit is None else explicit)
    config = replace(config)  # resolving --init or --resume must not change the caller's
    config.check()
    dist, device_text = _distributed_setup(config.device)
    reporter = progress if dist.main else TrainProgress()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        # Every process checks the options and reads the data; a failure on any of them stops
        # all of them (instead of leaving the others waiting at the first collective).
        error: CelpaintError | None = None
        try:
            run, info = _prepare(config, explicit, dist, device_text, reporter, stop)
        except CelpaintError as caught:
            error = caught
        failures = dist.gather_errors(error)
        if error is not None:
            raise error
        if failures:
            rank, message = failures[0]
            raise InputError(f"process {rank} of the distributed run failed: {message}")
        reporter.start(info)
        signals = _stop_on_signals(stop, reporter.stopping) if handle_signals else nullcontext()
        with signals:
            result = run.fit()
        result.skipped = list(info.skipped)
        reporter.end(result)
        if dist.owns_group:
            # Every process reaches the teardown before any starts it: gloo can abort a process
            # whose peer closes the connection under it.
            dist.barrier()
        return result
    finally:
        torch.set_num_threads(threads)
        if dist.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _prepare(
    config: TrainConfig,
    explicit: set[str],
    dist: _Dist,
    device_text: str,
    reporter: TrainProgress,
    stop: threading.Event,
) -> tuple[_Run, TrainInfo]:
    """Check the output folder, resolve the config, read the data, build the networks."""
    from celpaint.pipeline.colorizer import resolve_device
    from celpaint.pipeline.datasets import DataSpec, EpochSampler, build_datasets

    out = Path(config.out)
    check_output_folder(out, config.resume, config.overwrite)
    saved_state = None
    if config.resume:
        saved_state = load_train_state(out / STATE_NAME)
        config = resolve_resume(config, saved_state["config"], explicit)
        config.check()
    device = resolve_device(device_text)
    torch.manual_seed(config.seed + dist.rank)
    random.seed(config.seed + dist.rank)

    init_generator = init_discriminator = init_config = None
    if config.init and saved_state is None:
        init_generator, init_config, init_discriminator = _load_init(config, explicit)

    if saved_state is not None:
        saved_generator = ModelConfig.from_dict(saved_state["generator_config"], STATE_NAME)
        arch, arch_args = saved_generator.arch, dict(saved_generator.arch_args)
        size_multiple = saved_generator.size_multiple
        generator = registry.build(arch, **arch_args)
    elif init_generator is not None:
        generator = init_generator.train()
        arch, arch_args = init_config.arch, dict(init_config.arch_args)
        size_multiple = init_config.size_multiple
    else:
        arch, arch_args = "unet", generator_args(config)
        generator = registry.build(arch, **arch_args)
        size_multiple = 2**config.depth
        init_weights(generator)
    if config.crop % size_multiple:
        larger = -(-config.crop // size_multiple) * size_multiple
        raise InputError(
            f"--crop {config.crop} is not a multiple of the generator's size multiple "
            f"{size_multiple} (2**depth); use --crop {larger} or a shallower --depth"
        )
    smallest = 3 * 2**config.disc_layers
    if config.crop < smallest:
        raise InputError(
            f"--crop {config.crop} is too small for a discriminator with {config.disc_layers} "
            f"layers (at least {smallest}); use a larger --crop or fewer --disc-layers"
        )

    # TrainConfig carries DataSpec's fields under the same names (one flat set of options).
    spec = DataSpec(**{data.name: getattr(config, data.name) for data in fields(DataSpec)})
    train_set, val_set, report = build_datasets(
        spec, config.model == "pix2pix", config.crop, config.work_size,
        min_train=config.batch_size * dist.world_size, ffmpeg=config.ffmpeg,
        progress=reporter.loading,
    )  # fmt: skip

    if init_discriminator is not None:
        discriminator = init_discriminator.train()
    else:
        discriminator = registry.build("patchgan", **discriminator_args(config))
        if saved_state is None:
            init_weights(discriminator)

    sampler = EpochSampler(
        len(train_set), config.batch_size, config.seed, dist.rank, dist.world_size
    )
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = steps_per_epoch * config.epochs
    if saved_state is not None:
        previous = int(saved_state.get("steps_per_epoch", steps_per_epoch))
        if previous != steps_per_epoch:
            raise InputError(
                f"--resume: the training data now gives {steps_per_epoch} steps per epoch, the "
                f"run had {previous}; resume with the same data and batch size, or start a new "
                f"run with --init {out}"
            )
    trainer = Trainer(config, generator, discriminator, device, total_steps, dist.enabled)
    if saved_state is not None:
        try:
            trainer.load_state_dict(saved_state, restore_rng=dist.rank == 0)
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(
                f"{out / STATE_NAME} does not fit the run's networks ({str(error)[:200]}); "
                "start over with --overwrite"
            ) from None
        if dist.rank > 0:
            # Only rank 0's generator state is saved; the others draw fresh dropout masks.
            torch.manual_seed(config.seed * 7919 + trainer.step * 31 + dist.rank)

    description = f"celpaint train --model {config.model} on {spec.describe()}"
    gen_config = ModelConfig(
        arch=arch, arch_args=arch_args, input_kind=config.input_kind,
        output=config.output_kind, size_multiple=size_multiple, work_size=config.work_size,
        trained_on=config.trained_on or description,
    )  # fmt: skip
    disc_config = ModelConfig(
        arch="patchgan", arch_args=discriminator_args(config), input_kind=config.input_kind,
        output=config.output_kind, size_multiple=1, work_size=config.work_size,
        trained_on=f"discriminator of {description}",
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=config.workers > 0,
        # Its own generator: by default each new iterator draws a seed from the global RNG,
        # which a resumed run (a new iterator mid-epoch) would draw at another moment, so
        # dropout masks after --resume would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(config.seed),
    )
    run = _Run(
        config=config, trainer=trainer, loader=loader, sampler=sampler, val_set=val_set,
        train_set=train_set, out=out, progress=reporter, dist=dist, stop=stop,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, gen_config=gen_config,
        disc_config=disc_config, resume_step=trainer.step if saved_state is not None else None,
        epochs_validated=int(saved_state.get("epochs_validated", 0)) if saved_state else 0,
    )  # fmt: skip
    info = TrainInfo(
        out=out, model=config.model, device=str(device), world_size=dist.world_size,
        train_count=report.train_count, val_count=report.val_count,
        skipped=list(report.skipped), steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, start_step=trainer.step, epochs=config.epochs,
        generator_parameters=parameter_count(generator),
        discriminator_parameters=parameter_count(discriminator),
        resumed=saved_state is not None,
    )  # fmt: skip
    return run, info


@dataclass
class _Run:
    """The loop of ``train()``: steps, periodic checkpoints, validation, stopping."""

    config: TrainConfig
    trainer: Trainer
    loader: Any
    sampler: Any
    val_set: Any
    train_set: Any
    out: Path
    progress: TrainProgress
    dist: _Dist
    stop: threading.Event
    steps_per_epoch: int
    total_steps: int
    gen_config: ModelConfig
    disc_config: ModelConfig
    resume_step: int | None = None
    epochs_validated: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)
    writer: RunWriter | None = None
    saved_step: int = -1

    def fit(self) -> TrainResult:
        trainer, config = self.trainer, self.config
        if self.dist.main:
            # Only now, with everything checked, is anything of a previous run replaced.
            if config.overwrite:
                clear_run_files(self.out)
            self.writer = RunWriter(self.out, self.resume_step)
        self.dist.barrier()
        if self.resume_step is not None:
            self.saved_step = trainer.step
        started = time.perf_counter()
        start_step = trainer.step
        images = config.batch_size * self.dist.world_size
        speed = 0.0
        interrupted = False
        # A run stopped right after an epoch's last step still owes that epoch's report.
        self._finish_epochs(trainer.step // self.steps_per_epoch)
        while trainer.step < self.total_steps and not interrupted:
            epoch, batch_index = divmod(trainer.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, batch_index)
            tick = time.perf_counter()
            for batch in self.loader:
                if self.dist.any(self.stop.is_set(), trainer.device):
                    interrupted = True
                    break
                lr = trainer.lr
                losses = trainer.train_step(batch)
                now = time.perf_counter()
                current = images / max(now - tick, 1e-9)
                tick = now
                # The first step includes warm-up; a running average keeps the rate steady.
                speed = current if trainer.step - start_step == 1 else 0.9 * speed + 0.1 * current
                batch_index = (trainer.step - 1) % self.steps_per_epoch + 1
                if self.writer is not None:
                    self.writer.log(trainer.step, epoch + 1, losses, lr)
                remaining = (self.total_steps - trainer.step) * images / max(speed, 1e-9)
                self.progress.step(
                    StepUpdate(
                        step=trainer.step, total_steps=self.total_steps, epoch=epoch + 1,
                        epochs=config.epochs, batch=batch_index,
                        steps_per_epoch=self.steps_per_epoch, losses=losses, lr=lr,
                        images_per_second=speed, eta_seconds=remaining,
                    )
                )  # fmt: skip
                if batch_index == self.steps_per_epoch:
                    break
                if config.save_every and trainer.step % config.save_every == 0:
                    self.save("every")
            if not interrupted:
                self._finish_epochs(trainer.step // self.steps_per_epoch)
        self.save("stop" if interrupted else "end")
        seconds = time.perf_counter() - started
        trained = (trainer.step - start_step) * images
        return TrainResult(
            out=self.out, step=trainer.step, total_steps=self.total_steps,
            epochs_done=trainer.step // self.steps_per_epoch, interrupted=interrupted,
            seconds=seconds, images_per_second=trained / seconds if seconds > 0 else 0.0,
            metrics=dict(self.last_metrics),
        )  # fmt: skip

    def _finish_epochs(self, epochs_done: int) -> None:
        """Validate, draw samples and save for each finished epoch not yet reported."""
        while self.epochs_validated < epochs_done:
            epoch = self.epochs_validated + 1
            metrics: dict[str, float] = {}
            if self.dist.main:
                self.progress.validating(epoch)
                metrics = self.validate(epoch)
            self.epochs_validated = epoch
            self.last_metrics = metrics
            self.save("epoch", force=True)
            self.progress.epoch_end(epoch, metrics)

    def validate(self, epoch: int) -> dict[str, float]:
        """Score the validation frames and write ``samples/epoch_NNN.png`` and metrics.json."""
        from celpaint.pipeline.metrics import frame_metrics, mean_metrics

        trainer, config = self.trainer, self.config
        validating = len(self.val_set) > 0
        # Without validation data the grid shows training frames (whole, not cropped).
        grid_set = self.val_set if validating else self.train_set
        shown = min(config.samples, len(grid_set))
        scored = 0
        if validating:
            scored = len(self.val_set) if config.val_limit == 0 else config.val_limit
            scored = min(scored, len(self.val_set))
        # The grid's frames are the first validation frames: each is colorized once for both.
        columns, rows = [], []
        for index in range(max(shown, scored)):
            line_art, rgb = grid_set.pair(index)
            generated = trainer.colorize(line_art, rgb)
            if index < shown:
                columns.append(
                    (line_art if line_art is not None else _l_as_rgb(rgb), generated, rgb)
                )
            if index < scored:
                rows.append(frame_metrics(generated, rgb))
        if columns and self.writer is not None:
            grid = sample_grid(columns, config.crop)
            write_image(self.out / "samples" / f"epoch_{epoch:03d}.png", grid)
        if not validating:
            return {}
        metrics = mean_metrics(rows)
        if self.writer is not None:
            entry = {"epoch": epoch, "step": trainer.step, "frames": len(rows), **metrics}
            self.writer.add_metrics(entry, config.model)
        return metrics

    def save(self, reason: str, force: bool = False) -> None:
        """Write the training state, both networks and the logs (rank 0), atomically each."""
        trainer = self.trainer
        if trainer.step == self.saved_step and not force:
            return
        if self.dist.main and self.writer is not None:
            state = trainer.state_dict()
            state.update(
                format_version=STATE_FORMAT,
                config=self.config.to_dict(),
                steps_per_epoch=self.steps_per_epoch,
                total_steps=self.total_steps,
                epoch=trainer.step // self.steps_per_epoch,
                epochs_validated=self.epochs_validated,
                generator_config=self.gen_config.to_dict(),
                discriminator_config=self.disc_config.to_dict(),
            )
            # The state first: it alone is what --resume reads, and it is complete by itself.
            save_train_state(self.out / STATE_NAME, state)
            save_model(trainer.generator, self.out / "generator", self.gen_config)
            save_model(trainer.discriminator, self.out / "discriminator", self.disc_config)
            self.writer.flush()
            if reason != "every":
                self.writer.plot()
            self.progress.saved(trainer.step, reason)
        self.saved_step = trainer.step
        self.dist.barrier()


def _l_as_rgb(rgb: np.ndarray) -> np.ndarray:
    """The L* of a frame shown as gray (what the lab model sees)."""
    frame = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    lab = color.rgb_to_lab(frame)
    gray = color.lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1))
    return (gray[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "LOSS_NAMES",
    "STATE_NAME",
    "StepUpdate",
    "TrainBatch",
    "TrainConfig",
    "TrainInfo",
    "TrainProgress",
    "TrainResult",
    "Trainer",
    "discriminator_args",
    "generator_args",
    "init_weights",
    "linear_decay",
    "load_train_state",
    "save_train_state",
    "train",
]
