"""`celpaint extract`, `celpaint assemble` and `celpaint info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from celpaint.cli.options import (
    AudioFrom,
    Codec,
    Crf,
    EncoderOptions,
    FFmpeg,
    Fps,
    ImageFormat,
    Lossless,
    MaxPixels,
    Overwrite,
    PixFmt,
    Preset,
    Quiet,
    StartNumber,
    encode_options,
    max_pixels,
)
from celpaint.errors import InputError


def extract_command(
    video: Annotated[Path, typer.Argument(help="The clip to split into frames.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Folder for the frames, or a sequence such as seq/%04d.png."
        ),
    ],
    image_format: ImageFormat = "png",
    start_number: StartNumber = 1,
    overwrite: Overwrite = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip frames already extracted.")
    ] = False,
    ffmpeg: FFmpeg = None,
    pixel_limit: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Split a clip into numbered frames (frame_000001.png, ... or a %0Nd sequence)."""
    from celpaint.cli.progress import RichProgress
    from celpaint.io.sinks import EncodeOptions, output_kind
    from celpaint.pipeline.api import convert

    if output_kind(output) not in ("folder", "sequence"):
        raise InputError(f"extract writes a folder of frames; {output} looks like a file")
    options = EncodeOptions(
        overwrite=overwrite, resume=resume, ffmpeg=ffmpeg, image_format=image_format,
        start_number=start_number,
    )  # fmt: skip
    with RichProgress(quiet=quiet, verb="extracted") as progress:
        convert(video, output, options, progress, max_pixels=max_pixels(pixel_limit))


def assemble_command(
    frames: Annotated[Path, typer.Argument(help="Folder of frames (natural order).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The video to write.")],
    fps: Fps = "24",
    audio_from: AudioFrom = None,
    codec: Codec = None,
    pix_fmt: PixFmt = None,
    encoder_option: EncoderOptions = None,
    crf: Crf = 18,
    preset: Preset = "medium",
    lossless: Lossless = False,
    overwrite: Overwrite = False,
    ffmpeg: FFmpeg = None,
    pixel_limit: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Join a folder of frames into a video, optionally with the audio of another clip."""
    from celpaint.cli.progress import RichProgress
    from celpaint.io.sinks import output_kind
    from celpaint.pipeline.api import convert

    if not frames.is_dir():
        raise InputError(f"{frames} is not a folder of frames")
    if output_kind(output) != "video":
        raise InputError(f"assemble writes a video (.mp4, .mov, .mkv, ...), not {output.name}")
    if audio_from is not None and not audio_from.exists():
        raise InputError(f"--audio-from {audio_from} does not exist")
    options = encode_options(
        crf=crf, preset=preset, lossless=lossless, fps=fps or "24", overwrite=overwrite,
        ffmpeg=ffmpeg, audio_from=audio_from, codec=codec, pix_fmt=pix_fmt,
        encoder_option=encoder_option,
    )  # fmt: skip
    with RichProgress(quiet=quiet, verb="assembled") as progress:
        convert(frames, output, options, progress, max_pixels=max_pixels(pixel_limit))


def info_command(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Clips, frame folders or images to describe.")
    ] = None,
    ffmpeg: FFmpeg = None,
    pixel_limit: MaxPixels = None,
) -> None:
    """Describe clips (fps, frames, size, duration, audio), the compute devices, the codecs
    ffmpeg can write and the models."""
    import torch

    from celpaint.io.media import available_encoders, find_ffmpeg
    from celpaint.io.sources import open_source
    from celpaint.io.video import CODECS
    from celpaint.models import zoo

    console = Console()
    ffmpeg_path = find_ffmpeg(ffmpeg)
    for path in paths or []:
        with open_source(path, ffmpeg_path, max_pixels(pixel_limit)) as source:
            info = source.info
            table = Table(title=str(path), show_header=False, title_justify="left")
            table.add_row("kind", info.kind)
            table.add_row("size", f"{info.width}x{info.height}")
            table.add_row("frames", str(info.frame_count))
            if info.fps is not None:
                table.add_row("fps", f"{info.fps} ({float(info.fps):.3f})")
            media = info.media
            if media is not None:
                duration = f"{media.duration:.3f} s" if media.duration is not None else "unknown"
                table.add_row("duration", duration)
                table.add_row("codec", media.codec)
                table.add_row("pixel format", media.pix_fmt or "unknown")
                table.add_row("variable frame rate", "yes" if media.variable_frame_rate else "no")
                audio = "; ".join(a.description.split("Audio: ", 1)[-1] for a in media.audio)
                table.add_row("audio", audio or "none")
            console.print(table)

    devices = Table(title="devices", show_header=False, title_justify="left")
    devices.add_row("cpu", f"{torch.get_num_threads()} threads")
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        devices.add_row(f"cuda:{index}", f"{props.name}, {props.total_memory / 2**30:.0f} GiB")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.add_row("mps", "available")
    devices.add_row("ffmpeg", ffmpeg_path)
    console.print(devices)

    codecs = Table(title="video codecs (--codec)", title_justify="left")
    for column in ("codec", "encoder", "containers", "default --pix-fmt", "this ffmpeg"):
        codecs.add_column(column)
    encoders = available_encoders(ffmpeg_path)
    for name, codec in CODECS.items():
        available = "can encode" if codec.encoder in encoders else "missing"
        containers = " ".join(codec.containers)
        codecs.add_row(name, codec.encoder, containers, codec.default_pix_fmt, available)
    console.print(codecs)

    models = Table(title="models", title_justify="left")
    for column in ("name", "input", "output", "work size", "trained on"):
        models.add_column(column)
    picks = {model: kind for kind, model in zoo.MODEL_FOR_INPUT.items()}
    for name, config in zoo.describe():
        # --model auto (colorize's default) picks each shipped model for one kind of input.
        auto = {"lineart": " (auto: line art)", "grayscale": " (auto: footage)"}
        models.add_row(
            name + auto.get(picks.get(name, ""), ""), config.input_kind, config.output,
            str(config.work_size),
            config.trained_on,
        )  # fmt: skip
    if not models.rows:
        models.add_row("none shipped", "", "", "", "")
    console.print(models)
