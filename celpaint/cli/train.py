"""`celpaint train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from celpaint.cli.options import Device, FFmpeg, Overwrite, Quiet
from celpaint.errors import EXIT_INTERRUPTED, InputError
from celpaint.training.config import (
    RUN_FIELDS,
    AlignedOrder,
    AmpMode,
    MatchMode,
    ModelKind,
    NormKind,
    OnError,
    PixelLoss,
    TrainConfig,
)
from celpaint.training.progress import StepUpdate, TrainInfo, TrainProgress, TrainResult

_DATA = "Data"
_SCHEDULE = "Schedule"
_NETWORKS = "Networks"
_RUN = "Run"

# The recipes' pixel losses (celpaint.training.losses.RECIPES, which imports torch; a test
# pins these to it).
PIXEL_LOSS_DEFAULT = "l1 for pix2pix, mse for lab"
PIXEL_WEIGHT_DEFAULT = "100"


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def _duration(seconds: float) -> str:
    if not seconds or seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_metrics(metrics: dict[str, float]) -> str:
    return (
        f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, "
        f"dE2000 {metrics['ciede2000']:.2f}, accuracy {metrics['accuracy'] * 100:.1f}%"
    )


class TrainDisplay(TrainProgress):
    """Draws a training run with rich: epoch, step, losses, images/s, ETA."""

    def __init__(self, quiet: bool = False):
        from celpaint.cli.progress import stderr_console

        self.quiet = quiet
        self.console = stderr_console()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"),
            console=self.console,
            disable=quiet,
            transient=False,
        )
        self._loading: TaskID | None = None
        self._steps: TaskID | None = None
        self._started = False
        self.info: TrainInfo | None = None

    def __enter__(self) -> TrainDisplay:
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def _stop(self) -> None:
        # Stopping a display that never started would still print an empty line.
        if self._started:
            self._progress.stop()
            self._started = False

    def _print(self, text: str) -> None:
        if not self.quiet:
            self._progress.console.print(text, highlight=False, soft_wrap=True)

    def loading(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if not self._started:
            self._progress.start()
            self._started = True
        if self._loading is None:
            self._loading = self._progress.add_task(
                "reading data", total=total, losses="", speed="", eta="-:--:--"
            )
        self._progress.update(self._loading, completed=done, total=total)

    def start(self, info: TrainInfo) -> None:
        self.info = info
        if self._loading is not None:
            self._progress.remove_task(self._loading)
            self._loading = None
        skipped = f", {len(info.skipped)} unreadable skipped" if info.skipped else ""
        processes = f" x {info.world_size} processes" if info.world_size > 1 else ""
        resumed = f", resuming at step {info.start_step}" if info.resumed else ""
        self._print(
            f"training {info.model} on {info.device}{processes}: {info.train_count} training / "
            f"{info.val_count} validation pairs{skipped}; {info.steps_per_epoch} steps per "
            f"epoch, {info.total_steps} steps{resumed}; generator "
            f"{_millions(info.generator_parameters)} parameters, discriminator "
            f"{_millions(info.discriminator_parameters)} -> {info.out}"
        )
        if not self._started and not self.quiet:
            self._progress.start()
            self._started = True
        epoch = min(info.start_step // max(info.steps_per_epoch, 1) + 1, info.epochs)
        self._steps = self._progress.add_task(
            f"epoch {epoch}/{info.epochs}",
            total=info.total_steps,
            completed=info.start_step,
            losses="",
            speed="",
            eta="-:--:--",
        )

    def step(self, update: StepUpdate) -> None:
        if self._steps is None:
            return
        losses = update.losses
        self._progress.update(
            self._steps,
            completed=update.step,
            description=f"epoch {update.epoch}/{update.epochs}",
            losses=(
                f"G {losses['g_total']:.3g} (adv {losses['g_adv']:.3f}, pixel "
                f"{losses['g_pixel']:.4f})  D {losses['d_total']:.3f}"
            ),
            speed=f"{update.images_per_second:.1f} img/s",
            eta=_duration(update.eta_seconds) if update.step < update.total_steps else "0:00:00",
        )

    def validating(self, epoch: int) -> None:
        if self._steps is not None:
            self._progress.update(self._steps, description=f"epoch {epoch}: validating")

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        total = self.info.epochs if self.info else "?"
        if self._steps is not None:
            self._progress.update(self._steps, description=f"epoch {epoch}/{total}")
        scores = format_metrics(metrics) if metrics else "no validation data"
        self._print(f"epoch {epoch}/{total}: {scores}")

    def stopping(self) -> None:
        self._print(
            "stopping after this step and saving everything (press Ctrl-C again to quit at "
            "once, keeping the last checkpoint)"
        )

    def end(self, result: TrainResult) -> None:
        self._stop()
        if self.quiet:
            return
        if result.finished_before:
            epochs = f"{result.epochs_done} epoch{'s' if result.epochs_done != 1 else ''}"
            self._print(
                f"{result.out} has finished its {epochs} ({result.step} steps); nothing to do. "
                "Raise --epochs to train it further."
            )
            return
        skipped = f"; {len(result.skipped)} unreadable images skipped" if result.skipped else ""
        if result.interrupted:
            self._print(
                f"interrupted at step {result.step}/{result.total_steps}; everything is saved "
                f"in {result.out}. Continue with: celpaint train --out {result.out} --resume"
                f"{skipped}"
            )
            return
        scores = f"; last validation: {format_metrics(result.metrics)}" if result.metrics else ""
        steps = result.step - result.start_step
        resumed = f" (steps {result.start_step + 1}-{result.step})" if result.start_step else ""
        self._print(
            f"trained {steps} steps{resumed} in {_duration(result.seconds)} "
            f"({result.images_per_second:.1f} img/s){scores}{skipped}. Colorize with: "
            f"celpaint colorize --model {result.out} INPUT"
        )


def train_command(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Run folder (config.json, generator/, train_state.pt, logs); required unless "
            "--config sets out.",
            show_default=False,
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Start from the options in this file: a run's config.json, or a .toml file "
            "with the same keys. Options given here override the file's; the file's override "
            "the defaults.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        ModelKind,
        typer.Option(
            "--model",
            "-m",
            help="pix2pix (line art -> RGB) or lab (L* -> a*b*, keeps the input's L*).",
            rich_help_panel=_NETWORKS,
        ),
    ] = TrainConfig.model,
    sketch: Annotated[
        Path | None,
        typer.Option(help="Folder of line art, paired with --color.", rich_help_panel=_DATA),
    ] = None,
    color: Annotated[
        Path | None,
        typer.Option(
            help="Folder of colored frames (with --sketch), or alone: a folder or clip whose "
            "line art (or L*) is made on the fly.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    aligned: Annotated[
        Path | None,
        typer.Option(
            help="Folder of side-by-side line art|color images (pix2pix format).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option(
            help="Validation data in the training layout (the color folder for pairs).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    val_sketch: Annotated[
        Path | None,
        typer.Option(help="Line art of --val for --sketch/--color data.", rich_help_panel=_DATA),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Share of frames held out for validation (from the end) when there is no --val.",
            rich_help_panel=_DATA,
        ),
    ] = TrainConfig.val_fraction,
    match: Annotated[
        MatchMode,
        typer.Option(
            help="Pair --sketch and --color files by name or by sorted order.",
            rich_help_panel=_DATA,
        ),
    ] = TrainConfig.match,
    aligned_order: Annotated[
        AlignedOrder,
        typer.Option(
            help="Halves of --aligned images: sketch-color or color-sketch.",
            rich_help_panel=_DATA,
        ),
    ] = TrainConfig.aligned_order,
    frame_step: Annotated[
        int, typer.Option(help="Keep every N-th frame of a clip.", rich_help_panel=_DATA)
    ] = TrainConfig.frame_step,
    on_error: Annotated[
        OnError,
        typer.Option(
            help="An unreadable image: skip it (with a warning) or stop.", rich_help_panel=_DATA
        ),
    ] = TrainConfig.on_error,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Decode images in every epoch instead of keeping them in memory.",
            rich_help_panel=_DATA,
        ),
    ] = not TrainConfig.cache,
    epochs: Annotated[
        int, typer.Option(help="Passes over the data.", rich_help_panel=_SCHEDULE)
    ] = TrainConfig.epochs,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", "-b", help="Crops per step.", rich_help_panel=_SCHEDULE),
    ] = TrainConfig.batch_size,
    crop: Annotated[
        int, typer.Option(help="Side of the random crops.", rich_help_panel=_SCHEDULE)
    ] = TrainConfig.crop,
    work_size: Annotated[
        int,
        typer.Option(
            help="Frames are scaled down to this long side first, as colorize does.",
            rich_help_panel=_SCHEDULE,
        ),
    ] = TrainConfig.work_size,
    lr: Annotated[
        float, typer.Option(help="Adam learning rate.", rich_help_panel=_SCHEDULE)
    ] = TrainConfig.lr,
    beta1: Annotated[
        float, typer.Option(help="Adam beta1.", rich_help_panel=_SCHEDULE)
    ] = TrainConfig.beta1,
    decay_start: Annotated[
        float,
        typer.Option(
            help="Share of the run after which the learning rate decays linearly.",
            rich_help_panel=_SCHEDULE,
        ),
    ] = TrainConfig.decay_start,
    seed: Annotated[
        int, typer.Option(help="Random seed.", rich_help_panel=_SCHEDULE)
    ] = TrainConfig.seed,
    pixel_loss: Annotated[
        PixelLoss | None,
        typer.Option(
            help=f"Pixel loss. (default: {PIXEL_LOSS_DEFAULT})",
            rich_help_panel=_SCHEDULE,
        ),
    ] = TrainConfig.pixel_loss,
    pixel_weight: Annotated[
        float | None,
        typer.Option(
            help=f"Weight of the pixel loss. (default: {PIXEL_WEIGHT_DEFAULT})",
            rich_help_panel=_SCHEDULE,
        ),
    ] = TrainConfig.pixel_weight,
    depth: Annotated[
        int,
        typer.Option(
            help="U-Net levels; inputs are padded to multiples of 2**depth.",
            rich_help_panel=_NETWORKS,
        ),
    ] = TrainConfig.depth,
    base_channels: Annotated[
        int, typer.Option(help="U-Net first-level width.", rich_help_panel=_NETWORKS)
    ] = TrainConfig.base_channels,
    max_channels: Annotated[
        int, typer.Option(help="U-Net channel cap.", rich_help_panel=_NETWORKS)
    ] = TrainConfig.max_channels,
    norm: Annotated[
        NormKind, typer.Option(help="Normalisation layers.", rich_help_panel=_NETWORKS)
    ] = TrainConfig.norm,
    dropout: Annotated[
        float,
        typer.Option(help="Dropout of the inner decoder levels.", rich_help_panel=_NETWORKS),
    ] = TrainConfig.dropout,
    disc_channels: Annotated[
        int,
        typer.Option(help="PatchGAN width of the first layer.", rich_help_panel=_NETWORKS),
    ] = TrainConfig.disc_base_channels,
    disc_layers: Annotated[
        int,
        typer.Option(help="PatchGAN strided layers (3: 70x70 patches).", rich_help_panel=_NETWORKS),
    ] = TrainConfig.disc_layers,
    init: Annotated[
        str | None,
        typer.Option(
            help="Start from a shipped model (lineart, gray) or a model / run folder; its "
            "architecture is used.",
            rich_help_panel=_NETWORKS,
        ),
    ] = TrainConfig.init,
    size_multiple: Annotated[
        int | None,
        typer.Option(
            help="Train the model to take frame sizes that are multiples of N (a power of two "
            "dividing --crop; default 2**depth): each step uses a crop of a random size, so "
            "that 16:9 frames run at their own shape instead of padded.",
            rich_help_panel=_NETWORKS,
            show_default=False,
        ),
    ] = TrainConfig.size_multiple,
    device: Device = TrainConfig.device,
    amp: Annotated[
        AmpMode,
        typer.Option(help="Mixed precision: auto is on with CUDA.", rich_help_panel=_RUN),
    ] = TrainConfig.amp,
    workers: Annotated[
        int, typer.Option(help="Data loader processes.", rich_help_panel=_RUN)
    ] = TrainConfig.workers,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for torch (default: one per core; fewer can be faster on a "
            "machine busy with other work).",
            rich_help_panel=_RUN,
        ),
    ] = TrainConfig.threads,
    save_every: Annotated[
        int,
        typer.Option(
            help="Save a checkpoint every N steps (and at each epoch end); 0: epoch ends only.",
            rich_help_panel=_RUN,
        ),
    ] = TrainConfig.save_every,
    samples: Annotated[
        int, typer.Option(help="Frames in each samples/epoch_NNN.png.", rich_help_panel=_RUN)
    ] = TrainConfig.samples,
    val_limit: Annotated[
        int,
        typer.Option(help="Most validation frames scored per epoch; 0: all.", rich_help_panel=_RUN),
    ] = TrainConfig.val_limit,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --out.", rich_help_panel=_RUN),
    ] = TrainConfig.resume,
    overwrite: Overwrite = TrainConfig.overwrite,
    ffmpeg: FFmpeg = TrainConfig.ffmpeg,
    quiet: Quiet = False,
) -> None:
    """Train a colorization model on line art (or grayscale) and colored frames."""
    from celpaint.training.config import read_config_file
    from celpaint.training.loop import train

    given = _given_options(ctx)
    file_options = read_config_file(config_file) if config_file is not None else {}
    options = _options(ctx.params)
    values = {**file_options, **{name: options[name] for name in given}}
    if "out" not in values:
        raise InputError("pass --out RUN_FOLDER (or set out in the --config file)")
    config = TrainConfig(**values)
    # On --resume the run's saved options win; only the ones given here or in the file (and
    # the options of this invocation, RUN_FIELDS) may override them.
    explicit = set(file_options) | given | set(RUN_FIELDS)
    with TrainDisplay(quiet=quiet) as display:
        result = train(config, display, explicit=explicit)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


# Command-line parameters whose TrainConfig field has another name.
_FIELD_NAMES = {"disc_channels": "disc_base_channels", "no_cache": "cache"}
# Parameters of the command that are not options of the run.
_NOT_OPTIONS = {"quiet", "config_file"}


def _options(params: dict[str, Any]) -> dict[str, Any]:
    """The command's parameters as TrainConfig fields (paths as text, ``--no-cache`` as
    ``cache``)."""
    options = {}
    for name, value in params.items():
        if name in _NOT_OPTIONS:
            continue
        if name == "no_cache":
            value = not value
        elif isinstance(value, Path):
            value = str(value)
        options[_FIELD_NAMES.get(name, name)] = value
    return options


def _given_options(ctx: typer.Context) -> set[str]:
    """The TrainConfig fields of the options given on the command line (not left at their
    defaults)."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.add(_FIELD_NAMES.get(name, name))
    return given - _NOT_OPTIONS
