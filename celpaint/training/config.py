"""``TrainConfig``: every option of a training run, each with its one default, checked once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from celpaint.color.task import TASKS, Task, task_named
from celpaint.errors import InputError

ModelKind = Literal["pix2pix", "lab"]

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
    "size_multiple",
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
# Options of one invocation: on --resume the command line's values are used, given or not.
RUN_FIELDS = (
    "out",
    "device",
    "amp",
    "workers",
    "threads",
    "save_every",
    "samples",
    "val_limit",
    "resume",
    "overwrite",
    "ffmpeg",
)
# The U-Net options that a generator loaded with --init fixes.
GENERATOR_FIELDS = ("depth", "base_channels", "max_channels", "norm", "dropout")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved (resolved) in ``train_state.pt``.

    Data (see ``celpaint.training.data.DataSpec``): ``sketch`` + ``color`` folders,
    ``aligned`` folder, or ``color`` alone (folder or clip); ``val`` / ``val_sketch`` or
    ``val_fraction``; ``match``, ``aligned_order``, ``frame_step``, ``on_error``, ``cache``.

    Schedule: Adam (``lr``, ``beta1``, ``beta2``) for both networks, constant for the first
    ``decay_start`` share of the steps, then linearly decaying towards 0 (pix2pix).

    Networks: ``model`` names the variant (``celpaint.color.task``: ``"pix2pix"`` or ``"lab"``);
    the U-Net generator (``depth``, ``base_channels``, ``max_channels``, ``norm``,
    ``dropout``) and the PatchGAN (``disc_base_channels``, ``disc_layers``; 3 layers give the
    70x70 receptive field). ``init`` starts the generator from a shipped model name or a
    checkpoint / run directory, whose architecture then replaces the generator options.

    ``size_multiple`` (a power of two dividing ``crop``; None: ``2 ** depth``, or ``init``'s) is
    the multiple of the frame sizes the trained model is fed, saved in its checkpoint: sizes
    that are not multiples of ``2 ** depth`` go through the U-Net's per-level border padding
    (``celpaint.models.unet``), so with a smaller multiple each step trains on a random crop of
    a random size (multiples of ``size_multiple``, half to all of ``crop`` on each side) and the
    model learns those borders; ``colorize`` then feeds 16:9 frames at their own shape.

    ``pixel_loss`` / ``pixel_weight`` override the recipe's pixel loss (None: the recipe's, see
    ``celpaint.training.losses``).

    Run: ``device`` (auto, cpu, cuda, cuda:N, mps), ``amp`` (auto = mixed precision on CUDA),
    ``workers`` (loader processes), ``threads`` (torch CPU threads during the run; None keeps
    torch's default of one per core), ``save_every`` (steps between checkpoints besides epoch
    ends; 0 for epoch ends only), ``samples`` (frames in the sample grids), ``val_limit`` (most
    validation frames scored per epoch; 0 for all), ``channels_last`` (the networks' memory
    format), ``resume`` and ``overwrite`` (what to do with an existing ``out``).
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
    size_multiple: int | None = None
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

    @property
    def task(self) -> Task:
        """The model variant ``model`` names (what the generator sees and predicts)."""
        return task_named(self.model)

    def check(self) -> None:
        """Reject values that cannot work, with the option to fix (before anything is read or
        written)."""
        if self.model not in TASKS:
            raise InputError(f"--model must be {' or '.join(TASKS)}, got {self.model!r}")
        for name, (low, high) in _INT_RANGES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                limit = f"at least {low}" if high == _NO_LIMIT else f"in [{low}, {high}]"
                raise InputError(f"{option_name(name)} must be a whole number {limit}, got "
                                 f"{value!r}")  # fmt: skip
        for name, (low, high, high_open) in _FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if (
                not number
                or not math.isfinite(value)
                or not low <= value <= high
                or (high_open and value == high)
            ):
                bracket = ")" if high_open else "]"
                span = f"in [{low:g}, {high:g}{bracket}"
                if math.isinf(high):
                    span = f"at least {low:g}"
                raise InputError(f"{option_name(name)} must be a number {span}, got {value!r}")
        if not self.lr > 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.amp not in ("auto", "on", "off"):
            raise InputError(f"--amp must be auto, on or off, got {self.amp!r}")
        if self.pixel_loss not in (None, "l1", "mse"):
            raise InputError(f"--pixel-loss must be l1 or mse, got {self.pixel_loss!r}")
        if self.resume and self.overwrite:
            raise InputError("--resume continues the run in --out and --overwrite replaces it; "
                             "pass one of them")  # fmt: skip
        multiple = self.size_multiple
        if multiple is not None and (multiple & (multiple - 1) or self.crop % multiple):
            raise InputError(f"--size-multiple must be a power of two that divides --crop "
                             f"{self.crop}, got {multiple}")  # fmt: skip
        if self.norm not in ("batch", "instance", "none"):
            raise InputError(f"--norm must be batch, instance or none, got {self.norm!r}")


# Limits of the numeric options. Upper limits only where a larger value cannot be meant and
# would cost the machine's memory before failing (a 2**13-level U-Net, 10**9 channels).
_NO_LIMIT = 2**63 - 1
_MAX_CHANNELS = 8192
_INT_RANGES: dict[str, tuple[int, int]] = {
    "epochs": (1, _NO_LIMIT),
    "batch_size": (1, _NO_LIMIT),
    "crop": (1, _NO_LIMIT),
    "work_size": (1, _NO_LIMIT),
    "frame_step": (1, _NO_LIMIT),
    "seed": (0, _NO_LIMIT),
    "depth": (2, 12),
    "base_channels": (1, _MAX_CHANNELS),
    "max_channels": (1, _MAX_CHANNELS),
    "disc_base_channels": (1, _MAX_CHANNELS),
    "disc_layers": (1, 8),
    "workers": (0, _NO_LIMIT),
    "threads": (1, _NO_LIMIT),
    "save_every": (0, _NO_LIMIT),
    "samples": (0, _NO_LIMIT),
    "val_limit": (0, _NO_LIMIT),
    "size_multiple": (1, 4096),
}
# (low, high, whether high itself is excluded)
_FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {
    "val_fraction": (0.0, 1.0, True),
    "lr": (0.0, math.inf, False),
    "beta1": (0.0, 1.0, True),
    "beta2": (0.0, 1.0, True),
    "decay_start": (0.0, 1.0, False),
    "dropout": (0.0, 1.0, True),
    "pixel_weight": (0.0, math.inf, False),
}
# Numeric options whose None means "the default behaviour".
_OPTIONAL = ("threads", "pixel_weight", "size_multiple")
# TrainConfig fields whose command-line option has another name.
_OPTION_NAMES = {"disc_base_channels": "--disc-channels", "cache": "--no-cache"}


def option_name(field_name: str) -> str:
    """The command-line option of a ``TrainConfig`` field (``disc_base_channels`` ->
    ``--disc-channels``)."""
    return _OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def explicit_fields(config: TrainConfig) -> set[str]:
    """The names of the options of ``config`` that differ from their defaults."""
    defaults = TrainConfig()
    return {f.name for f in fields(TrainConfig)
            if getattr(config, f.name) != getattr(defaults, f.name)}  # fmt: skip


def generator_args(config: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the U-Net that ``config`` describes."""
    task = config.task
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
    task = config.task
    return {
        "in_channels": task.in_channels + task.out_channels,
        "base_channels": config.disc_base_channels,
        "n_layers": config.disc_layers,
        "norm": config.norm,
    }
