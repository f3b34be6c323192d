"""The library calls behind the commands: ``colorize``, ``extract_line_art`` and ``convert``."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

from celpaint.device import opencv_threads, torch_threads
from celpaint.io.frames import MAX_PIXELS
from celpaint.io.sinks import EncodeOptions
from celpaint.ops.lineart import DEFAULT_PARAMS, LineArtParams, line_art_batch
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer, generator_workers
from celpaint.pipeline.engine import JobResult, Progress, Transform, run_jobs
from celpaint.pipeline.jobs import Job, is_clip, plan

# The smallest frame colorize takes: a single pixel trips OpenCV's per-channel clamp in
# ops.upsample.to_native (a 1x1x3 array is read as a scalar), and colors nothing anyway.


def colorize(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    colorizer: Colorizer | None = None,
    options: ColorizeOptions | None = None,
    progress: Progress | None = None,
    encode: EncodeOptions | None = None,
    max_pixels: int = MAX_PIXELS,
) -> list[JobResult]:
    """Colorize clips, frame folders or images.

    Args:
        inputs: one path or several (videos, folders of frames, images).
        output: a video, image or folder path for one input; a folder for several; None to
            write ``NAME_color`` beside each input.
        colorizer: a ``Colorizer`` (model, device, work size, batch size); the shipped default
            model on the best device if None.
        options: smoothing and flat fill (``ColorizeOptions``).
        progress: callbacks for progress reporting.
        encode: how outputs are written (``EncodeOptions``).
        max_pixels: the largest frame (width x height) read; bigger inputs are refused before
            decoding (``io.frames.MAX_PIXELS``).

    Returns:
        One ``JobResult`` per input, in order.

    Raises:
        InputError: an input that cannot be read or an output that cannot be written, before
            anything is written.

    With a colorizer on the CPU, torch's and OpenCV's thread counts (process-wide settings)
    are changed for the duration of the call (see ``colorizer.generator_workers``) and
    restored afterwards.
    """
    options = options or ColorizeOptions()
    jobs = plan(_as_list(inputs), output, encode or EncodeOptions(), max_pixels=max_pixels)
    try:
        colorizer = colorizer or Colorizer.from_pretrained()
    except BaseException:
        for job in jobs:
            job.source.close()
        raise
    single = dataclasses.replace(options, temporal=None)

    def stream_for(job: Job) -> Transform:
        # A fresh stream per input: colors never carry from one input into the next, and
        # only clips are smoothed over time.
        return colorizer.stream(options if is_clip(job.source) else single)

    workers, threads = generator_workers(colorizer)
    with opencv_threads(1 if colorizer.device.type == "cpu" else None), torch_threads(threads):
        return run_jobs(
            jobs, colorizer.batch_size, progress, transform_for=stream_for, workers=workers
        )


def extract_line_art(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    params: LineArtParams = DEFAULT_PARAMS,
    encode: EncodeOptions | None = None,
    progress: Progress | None = None,
    batch_size: int = 8,
    max_pixels: int = MAX_PIXELS,
) -> list[JobResult]:
    """Turn color clips, frame folders or images into line art (``ops.lineart.xdog``).

    Outputs follow the same rules as ``colorize``: a video keeps its frame rate and audio, a
    folder of frames keeps its frame names, an image stays an image; without ``output`` each
    result goes beside its input as ``NAME_lineart``. ``max_pixels``: as for ``colorize``.

    Raises:
        InputError: a missing or unreadable input, or an output that exists without
            ``encode.overwrite``.
    """
    jobs = plan(
        _as_list(inputs), output, encode or EncodeOptions(), tag="lineart", max_pixels=max_pixels
    )
    transform = functools.partial(line_art_batch, params=params)
    return run_jobs(jobs, batch_size, progress, transform=transform)


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    encode: EncodeOptions | None = None,
    progress: Progress | None = None,
    batch_size: int = 16,
    max_pixels: int = MAX_PIXELS,
) -> JobResult:
    """Copy frames from one source to one sink unchanged: video -> frames, frames -> video.
    ``max_pixels``: as for ``colorize``."""
    jobs = plan([input], output, encode or EncodeOptions(), max_pixels=max_pixels)
    return run_jobs(jobs, batch_size, progress)[0]


def _as_list(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list:
    return [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
