"""`celpaint colorize`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from celpaint.cli.options import (
    Crf,
    Device,
    FFmpeg,
    Fps,
    Lossless,
    MaxPixels,
    NoAudio,
    Overwrite,
    Preset,
    Quiet,
    Resume,
    encode_options,
    max_pixels,
)
from celpaint.cli.progress import RichProgress
from celpaint.errors import InputError
from celpaint.models.zoo import DEFAULT_MODEL
from celpaint.ops.temporal import TemporalParams


def colorize_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Videos, folders of frames or images.", show_default=False),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output video, image or folder; a folder for several inputs. "
            "Default: NAME_color beside each input.",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Shipped model name or checkpoint directory.")
    ] = DEFAULT_MODEL,
    device: Device = "auto",
    precision: Annotated[
        str, typer.Option("--precision", help="auto (fp16 on CUDA), fp32, fp16 or bf16.")
    ] = "auto",
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
    ] = TemporalParams.strength,
    scene_threshold: Annotated[
        float,
        typer.Option(
            "--scene-threshold",
            min=0.0,
            max=1.0,
            help="0..1: how different a frame must be from the previous one to count as a "
            "scene cut (lower: more cuts).",
        ),
    ] = TemporalParams.scene_threshold,
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
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            # "\\[" keeps rich from reading [onnx] as markup.
            help="What runs the model: auto, torch or onnxruntime (CPU, fp32; needs pip "
            'install "celpaint\\[onnx]"). auto: onnxruntime where it was measured faster '
            "(for now: nowhere), else torch.",
        ),
    ] = "auto",
    crf: Crf = 18,
    preset: Preset = "medium",
    lossless: Lossless = False,
    fps: Fps = None,
    no_audio: NoAudio = False,
    overwrite: Overwrite = False,
    resume: Resume = False,
    ffmpeg: FFmpeg = None,
    pixel_limit: MaxPixels = None,
    quiet: Quiet = False,
) -> None:
    """Colorize clips, frame folders or images."""
    from celpaint.pipeline.api import colorize
    from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer

    encode = encode_options(
        crf=crf, preset=preset, lossless=lossless, fps=fps, overwrite=overwrite,
        resume=resume, no_audio=no_audio, ffmpeg=ffmpeg,
    )  # fmt: skip
    try:
        # Checked even with --no-temporal: a bad value is a mistake either way.
        params = TemporalParams(strength=temporal_strength, scene_threshold=scene_threshold)
    except ValueError as error:
        raise InputError(
            f"{error}: --temporal-strength and --scene-threshold are within 0..1"
        ) from None
    options = ColorizeOptions(temporal=params if temporal else None, flat_fill=flat_fill)
    colorizer = Colorizer.from_pretrained(
        model,
        device=device,
        precision=precision,
        work_size=work_size,
        batch_size=_batch_size(batch_size),
        compile=compile,
        saturation=saturation,
        backend=backend,
    )
    with RichProgress(quiet=quiet) as progress:
        colorize(
            inputs, output, colorizer, options, progress, encode=encode,
            max_pixels=max_pixels(pixel_limit), references=references or (),
            adapt_steps=adapt_steps,
        )  # fmt: skip


def _batch_size(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"--batch-size {text!r} must be a positive number or auto")
    return int(text)
