"""Options shared by several commands, defined once.

Nothing here imports torch, numpy or OpenCV, so that ``--help`` and shell completion stay
fast: the library's choice lists and defaults that live in such modules are repeated here as
literals, and ``tests/cli/test_app.py`` pins each to its owner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

# celpaint.device.Precision
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# celpaint.io.video.X264_PRESETS
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
    "veryslow", "placebo",
)  # fmt: skip
# celpaint.models.zoo: DEFAULT_MODEL, AUTO and the names of shipped_models()
DEFAULT_MODEL = "lineart"
AUTO = "auto"
SHIPPED_MODELS = ("gray", "lineart")
# What --device takes besides cuda:N (celpaint.device.resolve_device)
DEVICES = ("auto", "cpu", "cuda", "mps")


def _completer(values: tuple[str, ...]):
    def complete(incomplete: str) -> list[str]:
        return [value for value in values if value.startswith(incomplete)]

    return complete


Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")]
FFmpeg = Annotated[
    str | None,
    typer.Option(
        "--ffmpeg",
        # Not envvar=: media.find_ffmpeg reads CELPAINT_FFMPEG itself and names it in errors.
        help="ffmpeg binary (default: CELPAINT_FFMPEG, else ffmpeg on PATH, else the one "
        "bundled with imageio-ffmpeg).",
    ),
]
Crf = Annotated[
    int,
    typer.Option(
        "--crf",
        min=0,
        max=51,
        help="Video quality of h264, h265 and vp9: lower is better (18 ~ transparent).",
    ),
]
Preset = Annotated[
    Literal[X264_PRESETS],
    typer.Option(
        "--preset",
        help="H.264 speed preset: faster presets encode sooner into larger files at the same "
        "--crf.",
    ),
]
Lossless = Annotated[bool, typer.Option("--lossless", help="Bit-exact video output (large files).")]
Fps = Annotated[
    str | None,
    typer.Option("--fps", help="Frame rate for frame folders written as video, e.g. 24000/1001."),
]
NoAudio = Annotated[bool, typer.Option("--no-audio", help="Drop the audio.")]
Recursive = Annotated[
    bool,
    typer.Option(
        "--recursive",
        "-R",
        help="Walk the sub-folders of folders of videos: each folder of frames is one "
        "clip; outputs mirror the tree.",
    ),
]
KeepGoing = Annotated[
    bool,
    typer.Option(
        "--keep-going",
        "-k",
        help="Skip an input that cannot be read or fails, finish the others, name it in "
        "the summary and exit 1 (default: the first failure stops the batch).",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Do only what is left: keep outputs that exist (complete, as they are written "
        "atomically) and finish frame folders frame by frame.",
    ),
]
AudioFrom = Annotated[
    Path | None,
    typer.Option("--audio-from", help="Copy the audio streams of this clip into the video."),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto, cpu, cuda, cuda:N (the N-th GPU) or mps.",
        autocompletion=_completer(DEVICES),
    ),
]
Precision = Annotated[
    Literal[PRECISIONS],
    typer.Option("--precision", help="Arithmetic of the model: auto is fp16 on CUDA, else fp32."),
]
# celpaint.pipeline.colorizer.BACKENDS (a test pins it)
BACKENDS = ("auto", "torch", "onnxruntime")
Backend = Annotated[
    Literal[BACKENDS],
    typer.Option(
        "--backend",
        # "\\[" keeps rich from reading [onnx] as markup.
        help='What runs the model: onnxruntime (CPU, fp32) needs pip install "celpaint\\[onnx]"; '
        "auto takes it where it was measured faster (for now: nowhere), else torch.",
    ),
]
Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help=f"{AUTO} (per input: lineart for line art, gray for grayscale or color footage), "
        f"a shipped model ({', '.join(SHIPPED_MODELS)}) or a checkpoint / training run folder.",
        autocompletion=_completer((AUTO, *SHIPPED_MODELS)),
    ),
]
# None stands for io.frames.MAX_PIXELS (imported lazily: --help stays fast); see max_pixels().
MaxPixels = Annotated[
    int | None,
    typer.Option(
        "--max-pixels",
        min=1,
        show_default=False,
        help="Refuse frames of more than N pixels (width x height), checked before decoding "
        "[default: 100000000].",
    ),
]


# The names of io.video.CODECS and io.frames.IMAGE_FORMATS, here as literals: importing them
# would import numpy on --help (a test keeps the lists equal).
CodecName = Literal["h264", "h265", "prores", "prores_4444", "dnxhr", "ffv1", "vp9"]
ImageFormatName = Literal["png", "tif", "jpg"]
Codec = Annotated[
    CodecName | None,
    typer.Option(
        "--codec",
        help="Video codec, checked against the container: h264 (.mp4 .mov .mkv .m4v .avi), "
        "h265 (.mp4 .mov .mkv .m4v), prores and prores_4444 (.mov .mkv), dnxhr (.mov .mkv, "
        "at least 256x120), ffv1 (.mkv .avi), vp9 (.webm .mkv). --crf applies to h264, h265 "
        "and vp9, --preset to h264 and h265. Default: h264 (vp9 for .webm).",
        show_default=False,
    ),
]
PixFmt = Annotated[
    str | None,
    typer.Option(
        "--pix-fmt",
        metavar="FORMAT",
        help="Pixel format of video outputs, one the codec takes, e.g. yuv422p10le (10-bit "
        "4:2:2). Defaults: yuv420p (h264, h265, vp9), yuv422p10le (prores), yuv444p10le "
        "(prores_4444), yuv422p (dnxhr: DNxHR HQ; yuv422p10le gives HQX), bgr0 (ffv1).",
        show_default=False,
    ),
]
EncoderOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--encoder-option",
        metavar="KEY=VALUE",
        help="KEY=VALUE passed to the video encoder as its option -KEY:v VALUE (repeatable), "
        "e.g. profile=hq, x265-params=aq-mode=3, tune=animation.",
        show_default=False,
    ),
]
ImageFormat = Annotated[
    ImageFormatName,
    typer.Option(
        "--image-format",
        help="Format of frames written to folders (16-bit png and tif where the input images "
        "have 16 bits).",
    ),
]
StartNumber = Annotated[
    int,
    typer.Option(
        "--start-number",
        min=0,
        help="Number of the first frame of a %0Nd sequence output (-o frames/%04d.png).",
    ),
]


def max_pixels(value: int | None) -> int:
    """The ``--max-pixels`` value, ``io.frames.MAX_PIXELS`` when not given."""
    from celpaint.io.frames import MAX_PIXELS

    return MAX_PIXELS if value is None else value


def encode_options(
    *,
    crf: int,
    preset: str,
    lossless: bool,
    fps: str | None,
    overwrite: bool,
    resume: bool = False,
    no_audio: bool = False,
    ffmpeg: str | None = None,
    audio_from: Path | None = None,
    codec: str | None = None,
    pix_fmt: str | None = None,
    encoder_option: list[str] | None = None,
    image_format: str = "png",
    start_number: int = 1,
):
    """The ``EncodeOptions`` of a command that writes videos or frame folders, from the
    options above (shared by colorize, lineart, extract and assemble)."""
    from celpaint.io.media import parse_frame_rate
    from celpaint.io.sinks import EncodeOptions
    from celpaint.io.video import parse_encoder_option

    return EncodeOptions(
        overwrite=overwrite,
        resume=resume,
        crf=crf,
        preset=preset,
        lossless=lossless,
        fps=parse_frame_rate(fps) if fps else None,
        keep_audio=not no_audio,
        ffmpeg=ffmpeg,
        audio_from=audio_from,
        codec=codec,
        pix_fmt=pix_fmt,
        encoder_options=tuple(parse_encoder_option(text) for text in encoder_option or ()),
        image_format=image_format,
        start_number=start_number,
    )
