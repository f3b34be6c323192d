"""`celpaint colorize`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from celpaint.cli.options import (
    AUTO,
    Backend,
    Codec,
    Crf,
    Device,
    EncoderOptions,
    FFmpeg,
    Fps,
    ImageFormat,
    KeepGoing,
    Lossless,
    MaxPixels,
    Model,
    NoAudio,
    Overwrite,
    PixFmt,
    Precision,
    Preset,
    Quiet,
    Recursive,
    Resume,
    StartNumber,
    encode_options,
    max_pixels,
)
from celpaint.errors import InputError

# celpaint.ops.temporal.TemporalParams's defaults (a test pins them).
TEMPORAL_STRENGTH = 0.8
SCENE_THRESHOLD = 0.15


def colorize_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Videos, folders of frames, images, or folders of videos (a batch).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output video, image or folder; a folder for several inputs or a batch. "
            "Default: NAME_color beside each input.",
        ),
    ] = None,
    model: Model = AUTO,
    recursive: Recursive = False,
    keep_going: KeepGoing = False,
    device: Device = "auto",
    precision: Precision = "auto",
    batch_size: Annotated[
        str, typer.Option("--batch-size", "-b", help="Frames per batch, or auto.")
    ] = "auto",
    work_size: Annotated[
        int | None,
        typer.Option(
            "--work-size",
            help="Long side the model sees (default: the model's, 512 for the shipped ones); "
            "bigger frames are scaled down for the model only and colored at full size.",
        ),
    ] = None,
    temporal: Annotated[
        bool,
        typer.Option(
            "--temporal/--no-temporal",
            help="Smooth colors over time in clips and frame folders (motion-compensated; "
            "scene cuts reset it).",
        ),
    ] = True,
    temporal_strength: Annotated[
        float,
        typer.Option(
            "--temporal-strength",
            min=0.0,
            max=1.0,
            help="0..1: weight of the previous frame's colors; higher is steadier but slower "
            "to follow real color changes.",
        ),
    ] = TEMPORAL_STRENGTH,
    scene_threshold: Annotated[
        float,
        typer.Option(
            "--scene-threshold",
            min=0.0,
            max=1.0,
            help="0..1: how different a frame must be from the previous one to count as a "
            "scene cut (lower: more cuts).",
        ),
    ] = SCENE_THRESHOLD,
    flat_fill: Annotated[
        bool,
        typer.Option(
            "--flat-fill", help="Line art: give each closed region between lines one color."
        ),
    ] = False,
    saturation: Annotated[
        float,
        typer.Option(
            "--saturation",
            help="0..4: multiplies the model's calibrated colors' chroma (1: as calibrated; "
            "0: no color, only lightness; 2: twice as saturated).",
        ),
    ] = 1.0,
    references: Annotated[
        list[str] | None,
        typer.Option(
            "--reference",
            "-r",
            help="A colored keyframe whose colors are carried through its shot (repeatable): "
            "an image named like the input frame it colors (frame_000001.png ... for a video), "
            "a folder of such images, or N=IMAGE for frame N (1-based). One input only.",
            show_default=False,
        ),
    ] = None,
    adapt_steps: Annotated[
        int,
        typer.Option(
            "--adapt-steps",
            min=0,
            help="With --reference: fine-tune the model on the keyframes for N steps first, so "
            "that areas the keyframes do not show take the shot's palette (0: off).",
        ),
    ] = 0,
    compile: Annotated[bool, typer.Option("--compile", help="Use torch.compile.")] = False,
    backend: Backend = "auto",
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="I/N: color only part I of N of the one clip into -o (a video to 'celpaint "
            "join', or a folder the parts share), for render farms and job arrays. Under "
            "torchrun the processes split the work by themselves.",
            show_default=False,
        ),
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(
            "--warm-up",
            min=0,
            show_default=False,
            help="With --shard or torchrun: frames colored before each part, and not written, "
            "so that its smoothing starts as in one run [default: 32].",
        ),
    ] = None,
    codec: Codec = None,
    pix_fmt: PixFmt = None,
    encoder_option: EncoderOptions = None,
    crf: Crf = 18,
    preset: Preset = "medium",
    lossless: Lossless = False,
    image_format: ImageFormat = "png",
    start_number: StartNumber = 1,
    fps: Fps = None,
    no_audio: NoAudio = False,
    overwrite: Overwrite = False,
    resume: Resume = False,
    ffmpeg: FFmpeg = None,
    pixel_limit: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Colorize clips, frame folders or images."""
    from celpaint.cli.progress import RichProgress, raise_failures
    from celpaint.device import rank, rank_device, world_size
    from celpaint.ops.temporal import TemporalParams
    from celpaint.pipeline import shard as sharding
    from celpaint.pipeline.api import colorize
    from celpaint.pipeline.auto import AutoColorizer
    from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer

    distributed = world_size() > 1  # started by torchrun
    part = _shard(shard, inputs, output, references, distributed)

    encode = encode_options(
        crf=crf, preset=preset, lossless=lossless, fps=fps, overwrite=overwrite,
        resume=resume, no_audio=no_audio, ffmpeg=ffmpeg, codec=codec, pix_fmt=pix_fmt,
        encoder_option=encoder_option, image_format=image_format, start_number=start_number,
    )  # fmt: skip
    try:
        # Checked even with --no-temporal: a bad value is a mistake either way.
        params = TemporalParams(strength=temporal_strength, scene_threshold=scene_threshold)
    except ValueError as error:
        raise InputError(
            f"{error}: --temporal-strength and --scene-threshold are within 0..1"
        ) from None
    options = ColorizeOptions(temporal=params if temporal else None, flat_fill=flat_fill)
    # auto loads each shipped model only once an input needs it.
    load = AutoColorizer if model == "auto" else functools.partial(Colorizer.from_pretrained, model)
    colorizer = load(
        device=rank_device(device),
        precision=precision,
        work_size=work_size,
        batch_size=_batch_size(batch_size),
        compile=compile,
        saturation=saturation,
        backend=backend,
    )
    warmup = sharding.DEFAULT_WARMUP if warmup is None else warmup
    limit = max_pixels(pixel_limit)
    with RichProgress(quiet=quiet) as progress:
        if part is not None:
            results = [
                sharding.colorize_part(
                    inputs[0], output, part, colorizer, options, progress, encode, limit, warmup
                )
            ]
        elif distributed:
            results = sharding.colorize_distributed(
                inputs, output, colorizer, options, progress, encode, limit, warmup
            )
        else:
            results = colorize(
                inputs, output, colorizer, options, progress, encode=encode, max_pixels=limit,
                references=references or (), adapt_steps=adapt_steps, recursive=recursive,
                keep_going=keep_going,
            )  # fmt: skip
    if rank() == 0:  # under torchrun, rank 0 reports for every process
        progress.summarize(results)  # below the finished bars
    raise_failures(results)


def _shard(
    text: str | None,
    inputs: list[Path],
    output: Path | None,
    references: list[str] | None,
    distributed: bool,
):
    """The ``--shard`` part (None without it); refuses what cannot be split, before any work."""
    from celpaint.pipeline.shard import Shard

    part = Shard.parse(text) if text is not None else None
    if part is not None and distributed:
        raise InputError("--shard and torchrun both split the work: use one of them")
    if (part is not None or distributed) and references:
        raise InputError(
            "--reference carries colors through a whole clip in one process: it cannot be "
            "combined with --shard or torchrun"
        )
    if part is not None and len(inputs) != 1:
        raise InputError(f"--shard colors a part of one clip, but {len(inputs)} inputs were given")
    if part is not None and output is None:
        raise InputError(
            "--shard needs -o: a video per part (joined by 'celpaint join'), or one folder "
            "that all the parts fill"
        )
    return part


def _batch_size(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"--batch-size {text!r} must be a positive number or auto")
    return int(text)
