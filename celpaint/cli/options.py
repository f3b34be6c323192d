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
# celpaint.models.zoo: DEFAULT_MODEL and the names of shipped_models()
DEFAULT_MODEL = "lineart"
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
    typer.Option("--crf", min=0, max=51, help="Video quality: lower is better (18 ~ transparent)."),
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
Resume = Annotated[
    bool, typer.Option("--resume", help="Finish a frame-folder output, skipping done frames.")
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
Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help=f"Shipped model ({', '.join(SHIPPED_MODELS)}) or checkpoint / training run folder.",
        autocompletion=_completer(SHIPPED_MODELS),
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
):
    """The ``EncodeOptions`` of a command that writes videos or frame folders, from the
    options above (shared by colorize, lineart and assemble)."""
    from celpaint.io.media import parse_frame_rate
    from celpaint.io.sinks import EncodeOptions

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
    )
