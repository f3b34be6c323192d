"""The library calls behind the commands: ``colorize``, ``extract_line_art`` and ``convert``."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from celpaint.device import opencv_threads, torch_threads
from celpaint.errors import InputError
from celpaint.io.frames import MAX_PIXELS
from celpaint.io.sinks import DiscardSink, EncodeOptions
from celpaint.ops.carry import CarryParams
from celpaint.ops.lineart import DEFAULT_PARAMS, LineArtParams, line_art_batch
from celpaint.pipeline.auto import AutoColorizer, choose
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer, generator_workers
from celpaint.pipeline.engine import JobResult, Progress, Transform, run_job, run_jobs
from celpaint.pipeline.jobs import Job, batch_inputs, is_clip, plan
from celpaint.pipeline.reference import KeyframeColorizer, adapt, resolve_references

# The smallest frame colorize takes: a single pixel trips OpenCV's per-channel clamp in
# ops.upsample.to_native (a 1x1x3 array is read as a scalar), and colors nothing anyway.


def colorize(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    colorizer: Colorizer | AutoColorizer | None = None,
    options: ColorizeOptions | None = None,
    progress: Progress | None = None,
    encode: EncodeOptions | None = None,
    max_pixels: int = MAX_PIXELS,
    references: Sequence[str | os.PathLike] = (),
    carry: CarryParams | None = None,
    adapt_steps: int = 0,
    recursive: bool = False,
    keep_going: bool = False,
) -> list[JobResult]:
    """Colorize clips, frame folders, images and batch folders of them.

    Args:
        inputs: one path or several (videos, folders of frames, images, folders of videos:
            see ``jobs.batch_inputs``).
        output: a video, image or folder path for one input; a folder for several or for a
            batch folder (its tree is mirrored there); None to write ``NAME_color`` beside
            each input.
        colorizer: a ``Colorizer`` (model, device, work size, batch size), whose model
            colorizes every input (an input that does not look like what the model expects
            is a warning); or an ``AutoColorizer``, which picks the shipped model that fits
            each input (``pipeline/auto.py``). None: ``AutoColorizer()``.
        options: smoothing and flat fill (``ColorizeOptions``).
        progress: callbacks for progress reporting.
        encode: how outputs are written (``EncodeOptions``); with ``encode.resume`` outputs
            that are complete are left alone (``JobResult.status`` ``"done"``).
        max_pixels: the largest frame (width x height) read; bigger inputs are refused before
            decoding (``io.frames.MAX_PIXELS``).
        references: colored keyframes of the one input (``reference.resolve_references``):
            their colors are carried through their shots (``pipeline/reference.py``).
        carry: how keyframe colors are carried (``ops.carry.CarryParams``).
        adapt_steps: fine-tune the generator on the keyframes for this many steps first
            (``reference.adapt``), so that the colors the keyframes do not show speak the
            shot's palette; it changes ``colorizer``'s weights.
        recursive: walk the sub-folders of batch folders.
        keep_going: an input that cannot be read or fails while running is skipped
            (``JobResult.status`` ``"failed"`` with its ``error``) and the others go on;
            without it the first such error is raised.

    Returns:
        One ``JobResult`` per input (a batch folder's inputs one by one), in order.

    Raises:
        InputError: an input that cannot be read or an output that cannot be written, before
            anything is written (unless ``keep_going``).

    With a colorizer on the CPU, torch's and OpenCV's thread counts (process-wide settings)
    are changed for the duration of the call (see ``colorizer.generator_workers``) and
    restored afterwards.
    """
    options = options or ColorizeOptions()
    encode = encode or EncodeOptions()
    jobs = plan(_as_list(inputs), output, encode, max_pixels=max_pixels, recursive=recursive,
                keep_going=keep_going)  # fmt: skip
    try:
        keyframes = _keyframes(jobs, references, max_pixels)
        colorizers = choose(jobs, colorizer or AutoColorizer(), keep_going)
    except BaseException:
        for job in jobs:
            if job.source is not None:
                job.source.close()
        raise
    if not colorizers:  # nothing left to do: no model is loaded
        return run_jobs(jobs, 1, progress)
    first = next(iter(colorizers.values()))
    if keyframes and jobs[0].runnable:
        workers, threads = generator_workers(first)
        with opencv_threads(1 if first.device.type == "cpu" else None), torch_threads(threads):
            if adapt_steps:
                adapt(first, _keyframe_pairs(jobs[0], keyframes), adapt_steps)
            return [_colorize_from_keyframes(jobs[0], first, options, keyframes, carry,
                                             progress or Progress(), workers)]  # fmt: skip
    return colorize_jobs(jobs, colorizers, options, progress, keep_going)


def colorize_jobs(
    jobs: Sequence[Job],
    colorizers: Colorizer | Mapping[int, Colorizer],
    options: ColorizeOptions,
    progress: Progress | None = None,
    keep_going: bool = False,
) -> list[JobResult]:
    """Colorize planned jobs (``jobs.plan``) one after the other, each clip with a fresh
    stream, under the first colorizer's thread settings (see ``colorize``).

    Args:
        colorizers: one colorizer for every job, or one per job index (``auto.choose``; jobs
            without one are not run: done earlier or failed in planning).
        keep_going: see ``colorize``.
    """
    if isinstance(colorizers, Colorizer):
        colorizers = dict.fromkeys(range(len(jobs)), colorizers)
    if not colorizers:  # nothing to run: done earlier, failed in planning, or no jobs
        return run_jobs(jobs, 1, progress)
    by_job = {id(jobs[index]): chosen for index, chosen in colorizers.items()}
    first = next(iter(colorizers.values()))
    single = dataclasses.replace(options, temporal=None)
    workers, threads = generator_workers(first)

    def stream_for(job: Job) -> Transform:
        # A fresh stream per input: colors never carry from one input into the next, and
        # only clips are smoothed over time.
        return by_job[id(job)].stream(options if is_clip(job.source) else single)

    with opencv_threads(1 if first.device.type == "cpu" else None), torch_threads(threads):
        return run_jobs(
            jobs, first.batch_size, progress, transform_for=stream_for, workers=workers,
            keep_going=keep_going,
        )  # fmt: skip


def _keyframes(
    jobs: list[Job], references: Sequence[str | os.PathLike], max_pixels: int
) -> dict[int, np.ndarray]:
    """The keyframes of the one job, read and checked before any work."""
    if not references:
        return {}
    if len(jobs) != 1:
        raise InputError(
            f"--reference names frames of one input, but {len(jobs)} inputs were given; "
            "colorize each shot or clip with its own references"
        )
    if jobs[0].source is None:  # it failed planning (keep_going): reported, not run
        return {}
    return resolve_references(references, jobs[0].source.info, max_pixels)


def _keyframe_pairs(job: Job, keyframes: dict[int, np.ndarray]) -> list:
    """(input frame, keyframe) of every keyframe, decoding the source up to the last one."""
    pairs = []
    last = max(keyframes)
    try:
        for index, frame in enumerate(job.source.frames()):
            if index in keyframes:
                pairs.append((frame, keyframes[index]))
            if index >= last:
                break
    finally:
        job.source.close()
    return pairs


def _colorize_from_keyframes(
    job: Job,
    colorizer: Colorizer,
    options: ColorizeOptions,
    references: dict[int, np.ndarray],
    carry: CarryParams | None,
    progress: Progress,
    workers: int,
) -> JobResult:
    """The two passes of ``pipeline/reference.py`` over one job's source."""
    keyframes = KeyframeColorizer(colorizer, options, references, carry)
    started = time.perf_counter()
    try:
        progress.start([job])
        # Each pass over the frames is half of the job's progress: the bar stands at half
        # while the colors are carried, and ends when the output is complete.
        analysis = _Stages(keyframes.analysis_stages())
        run_job(job, analysis, colorizer.batch_size, _Half(progress), workers,
                sink=DiscardSink())  # fmt: skip
        keyframes.carry()
        return run_job(
            job, keyframes.render_stage(), colorizer.batch_size, _Half(progress, started)
        )
    finally:
        job.source.close()


class _Half(Progress):
    """Relays one of the two passes over a job's frames as half of its progress: the first
    pass (``started`` None) reports the job's start and ``frames // 2`` of its frames, the
    second the rest and the job's end, timed from ``started`` (``time.perf_counter()``)."""

    def __init__(self, progress: Progress, started: float | None = None):
        self.progress = progress
        self.started = started
        self.seen = 0

    def job_start(self, job: Job) -> None:
        if self.started is None:
            self.progress.job_start(job)

    def advance(self, frames: int) -> None:
        # The first pass rounds down, the second up: together every frame once.
        before, self.seen = self.seen, self.seen + frames
        if self.started is None:
            reported = self.seen // 2 - before // 2
        else:
            reported = (self.seen + 1) // 2 - (before + 1) // 2
        if reported:
            self.progress.advance(reported)

    def job_end(self, result: JobResult) -> None:
        if self.started is not None:
            seconds = time.perf_counter() - self.started
            self.progress.job_end(dataclasses.replace(result, seconds=seconds))


class _Stages:
    """A transform given as its list of stages (``engine.transform_stages``)."""

    def __init__(self, stages: list):
        self._stages = stages

    def stages(self) -> list:
        return self._stages


def extract_line_art(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    params: LineArtParams = DEFAULT_PARAMS,
    encode: EncodeOptions | None = None,
    progress: Progress | None = None,
    batch_size: int = 8,
    max_pixels: int = MAX_PIXELS,
    recursive: bool = False,
    keep_going: bool = False,
) -> list[JobResult]:
    """Turn color clips, frame folders or images into line art (``ops.lineart.xdog``).

    Outputs follow the same rules as ``colorize``: a video keeps its frame rate and audio, a
    folder of frames keeps its frame names, an image stays an image; without ``output`` each
    result goes beside its input as ``NAME_lineart``. ``max_pixels``, ``recursive`` and
    ``keep_going``: as for ``colorize``.

    Raises:
        InputError: a missing or unreadable input, or an output that exists without
            ``encode.overwrite`` (unless ``keep_going``).
    """
    jobs = plan(_as_list(inputs), output, encode or EncodeOptions(), tag="lineart",
                max_pixels=max_pixels, recursive=recursive, keep_going=keep_going)  # fmt: skip
    transform = functools.partial(line_art_batch, params=params)
    return run_jobs(jobs, batch_size, progress, transform=transform, keep_going=keep_going)


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
    if batch_inputs(Path(input)) is not None:
        raise InputError(f"{input} is a folder of videos; give one video or one folder of frames")
    jobs = plan([input], output, encode or EncodeOptions(), max_pixels=max_pixels)
    return run_jobs(jobs, batch_size, progress)[0]


def _as_list(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list:
    return [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
