"""`celpaint join`: the parts of one clip colored with `colorize --shard I/N`, into one video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from celpaint.cli.options import AudioFrom, FFmpeg, NoAudio, Overwrite, Quiet
from celpaint.errors import InputError


def join_command(
    parts: Annotated[
        list[Path],
        typer.Argument(
            help="Every part of the clip (videos written by colorize --shard I/N), any order.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The joined video.", show_default=False)
    ],
    audio_from: AudioFrom = None,
    no_audio: NoAudio = False,
    overwrite: Overwrite = False,
    ffmpeg: FFmpeg = None,
    quiet: Quiet = False,
) -> None:
    """Join the parts of one clip without re-encoding, checking that they are all there, in
    order and alike; the audio comes from --audio-from, else from the clip the parts name
    when it is still there."""
    from celpaint.io.frames import FileStamp
    from celpaint.io.segments import join_parts, source_audio

    if audio_from is not None and no_audio:
        raise InputError("--audio-from and --no-audio contradict each other: give one")
    audio = None if no_audio else audio_from or source_audio(parts, ffmpeg)
    replace = (FileStamp.of(output) or False) if overwrite else False
    joined = join_parts(parts, output, audio, replace, ffmpeg)
    if not quiet:
        typer.echo(f"joined {len(parts)} parts -> {joined}", err=True)
