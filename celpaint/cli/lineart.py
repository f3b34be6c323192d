"""`celpaint lineart`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from celpaint.cli.options import (
    Codec,
    Crf,
    EncoderOptions,
    FFmpeg,
    Fps,
    ImageFormat,
    KeepGoing,
    Lossless,
    MaxPixels,
    NoAudio,
    Overwrite,
    PixFmt,
    Preset,
    Quiet,
    Recursive,
    Resume,
    StartNumber,
    encode_options,
    max_pixels,
)
from celpaint.errors import InputError

# celpaint.ops.lineart.DEFAULT_PARAMS (a test pins them).
SIGMA = 0.8
EPSILON = -0.01
PHI = 150.0


def lineart_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Color videos, folders of frames, images, or folders of videos (a batch).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output video, image or folder; a folder for several inputs or a batch. "
            "Default: NAME_lineart beside each input.",
        ),
    ] = None,
    recursive: Recursive = False,
    keep_going: KeepGoing = False,
    sigma: Annotated[
        float, typer.Option("--sigma", help="Blur in pixels; larger gives thicker lines.")
    ] = SIGMA,
    epsilon: Annotated[
        float,
        typer.Option("--epsilon", help="Edge strength where lines start; lower drops faint ones."),
    ] = EPSILON,
    phi: Annotated[
        float, typer.Option("--phi", help="Line sharpness; higher is closer to pure black.")
    ] = PHI,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="0..1: binary black-and-white lines (default: soft)."),
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
    """Draw line art (XDoG) from color clips, frame folders or images."""
    from celpaint.cli.progress import RichProgress, raise_failures
    from celpaint.ops.lineart import LineArtParams
    from celpaint.pipeline.api import extract_line_art

    try:
        params = LineArtParams(sigma=sigma, epsilon=epsilon, phi=phi, threshold=threshold)
    except ValueError as error:
        raise InputError(f"{error}; see celpaint lineart --help") from None
    options = encode_options(
        crf=crf, preset=preset, lossless=lossless, fps=fps, overwrite=overwrite,
        resume=resume, no_audio=no_audio, ffmpeg=ffmpeg, codec=codec, pix_fmt=pix_fmt,
        encoder_option=encoder_option, image_format=image_format, start_number=start_number,
    )  # fmt: skip
    with RichProgress(quiet=quiet, verb="traced") as progress:
        results = extract_line_art(
            inputs, output, params, options, progress, max_pixels=max_pixels(pixel_limit),
            recursive=recursive, keep_going=keep_going,
        )  # fmt: skip
        progress.summarize(results)
    raise_failures(results)
