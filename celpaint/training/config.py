"""``TrainConfig``: every option of a training run, each with its one default, checked once.

Pure data (no torch): the CLI reads its defaults and choices while drawing ``--help``. The
choice types below are the lists of allowed values; ``celpaint train`` offers exactly these.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from celpaint.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

# The model variants (``celpaint.color.task.TASKS``, pinned by a test).
ModelKind = Literal["pix2pix", "lab"]
# Normalisation layers (``celpaint.models.layers.NORM_KINDS``, pinned by a test).
NormKind = Literal["batch", "instance", "none"]
AmpMode = Literal["auto", "on", "off"]
PixelLoss = Literal["l1", "mse"]
# How training data is paired and read (``celpaint.training.data.DataSpec``).
MatchMode = Literal["name", "order"]
AlignedOrder = Literal["sketch-color", "color-sketch"]
OnError = Literal["skip", "stop"]

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


# What one invocation does with ``out``: not an option of the run, so not in a config file.
ACTION_FIELDS = ("resume", "overwrite")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved (resolved) in ``train_state.pt`` and, readable,
    in the run's ``config.json`` (``run_options``).

    Data (see ``celpaint.training.data.DataSpec``): ``sketch`` + ``color`` folders,
    ``aligned`` folder, or ``color`` alone (folder or clip); ``val`` / ``val_sketch`` or
    ``val_fraction``; ``match``, ``aligned_order``, ``frame_step``, ``on_error``, ``cache``.

    Schedule: Adam (``lr``, ``beta1``, ``beta2``) for both networks, constant for the first
    ``decay_start`` share of the steps, then linearly decaying towards 0 (pix2pix).

    Networks: ``model`` names the variant (``ModelKind``, a ``celpaint.color.task`` name);
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
    match: MatchMode = "name"
    aligned_order: AlignedOrder = "sketch-color"
    frame_step: int = 1
    on_error: OnError = "skip"
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
    norm: NormKind = "batch"
    dropout: float = 0.5
    disc_base_channels: int = 32
    disc_layers: int = 3
    pixel_loss: PixelLoss | None = None
    pixel_weight: float | None = None
    init: str | None = None
    size_multiple: int | None = None
    device: str = "auto"
    amp: AmpMode = "auto"
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
        """Reject values that cannot work, with the option to fix (before anything is read or
        written).

        Raises:
            InputError: a value of the wrong type, outside its range or not among its choices.
        """
        _check_kinds(self)
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
        if self.resume and self.overwrite:
            raise InputError("--resume continues the run in --out and --overwrite replaces it; "
                             "pass one of them")  # fmt: skip
        multiple = self.size_multiple
        if multiple is not None and (multiple & (multiple - 1) or self.crop % multiple):
            raise InputError(f"--size-multiple must be a power of two that divides --crop "
                             f"{self.crop}, got {multiple}")  # fmt: skip


def choices(field_name: str) -> tuple[str, ...]:
    """The allowed values of a choice option of ``TrainConfig`` (``"norm"`` -> ``("batch",
    "instance", "none")``); empty for other options."""
    kind = _FIELD_TYPES[field_name]
    # A Literal, or an optional one (``PixelLoss | None``).
    literals = [k for k in (kind, *get_args(kind)) if get_origin(k) is Literal]
    return get_args(literals[0]) if literals else ()


def _check_kinds(config: TrainConfig) -> None:
    """Raise ``InputError`` for a choice not among its values, or a text or yes/no option of
    another type (a config file can hold anything)."""
    for name, kind in _FIELD_TYPES.items():
        value = getattr(config, name)
        optional = type(None) in get_args(kind)
        if value is None and optional:
            continue
        allowed = choices(name)
        if allowed:
            if value not in allowed:
                raise InputError(f"{option_name(name)} must be one of {', '.join(allowed)}, got "
                                 f"{value!r}")  # fmt: skip
        elif str in (kind, *get_args(kind)) and not isinstance(value, str):
            raise InputError(f"{option_name(name)} must be text, got {value!r}")
        elif kind is bool and not isinstance(value, bool):
            raise InputError(f"{option_name(name)} must be true or false, got {value!r}")


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
# The fields' types, resolved (``ModelKind``, ``int | None``, ...).
_FIELD_TYPES: dict[str, Any] = get_type_hints(TrainConfig)


def option_name(field_name: str) -> str:
    """The command-line option of a ``TrainConfig`` field (``disc_base_channels`` ->
    ``--disc-channels``)."""
    return _OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def explicit_fields(config: TrainConfig) -> set[str]:
    """The names of the options of ``config`` that differ from their defaults."""
    defaults = TrainConfig()
    return {f.name for f in fields(TrainConfig)
            if getattr(config, f.name) != getattr(defaults, f.name)}  # fmt: skip


def run_options(config: TrainConfig) -> dict[str, Any]:
    """The options of the run ``config`` describes, as a run's ``config.json`` and a config
    file hold them: every field but ``ACTION_FIELDS``, by field name."""
    return {k: v for k, v in config.to_dict().items() if k not in ACTION_FIELDS}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options in a config file: a JSON object (a run's ``config.json``) or, for a
    ``.toml`` file, a TOML table, keyed by ``TrainConfig`` field names (``-`` may stand for
    ``_``). Values are checked later, with the command line's, by ``TrainConfig.check``.

    Raises:
        InputError: the file is missing, unreadable or not valid JSON / TOML, is not an object
            or table, or names options that do not exist or that belong on the command line
            (``--resume``, ``--overwrite``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"--config {path}: cannot read it ({error})") from None
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise InputError(f"--config {path} is not valid TOML: {error}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"--config {path} is not valid JSON ({error}); name a .toml "
                             "file for TOML") from None  # fmt: skip
    if not isinstance(data, dict):
        raise InputError(f"--config {path} must hold an object of options, like a run's "
                         "config.json")  # fmt: skip
    options = {str(key).replace("-", "_"): value for key, value in data.items()}
    known = {f.name for f in fields(TrainConfig)} - set(ACTION_FIELDS)
    actions = sorted(set(options) & set(ACTION_FIELDS))
    if actions:
        raise InputError(f"--config {path}: {', '.join(actions)} is what one run does, not an "
                         f"option of the run; pass {' '.join(option_name(a) for a in actions)} "
                         "on the command line")  # fmt: skip
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"--config {path}: unknown option(s) {', '.join(unknown)}; the options "
                         f"are {', '.join(sorted(known))}")  # fmt: skip
    return options
