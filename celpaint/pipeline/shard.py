"""Colorizing across several processes: the ranks of a ``torchrun`` run, or the parts of a
render farm's job (``colorize --shard I/N`` and ``join``).

Several inputs are dealt out whole, balanced by frame count (``deal``). One clip is cut into
consecutive frame ranges (``split_frames``). A part's temporal smoothing must start where the
single-process run would be at its first frame, so each part but the first begins ``warmup``
frames earlier: those frames are colorized, which settles the smoother's state (scene cuts
reset it anyway), and are not written. Each rank (or ``--shard`` process) writes its part, a
video tagged with what it is a part of (``io/segments.py``) or, for a folder output, its frames
under their clip-wide names straight into the folder; under ``torchrun`` rank 0 then joins the
video parts without re-encoding, with the audio muxed once, into the output, and the others
wait for it. A rank that fails stops the run: nothing appears at the output path, and the
parts, hidden temporary files beside it, are removed.

How the seam works and what it costs: docs/design.md#sharded-colorizing-pipelineshardpy
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from celpaint.device import Dist, distributed_setup, opencv_threads, torch_threads
from celpaint.errors import CelpaintError, InputError, ProcessingError
from celpaint.io.frames import MAX_PIXELS, remove_stale_temporaries, temporary_path
from celpaint.io.segments import JOINABLE_EXTENSIONS, ClipIdentity, PartTag, fps_text, join_parts
from celpaint.io.sinks import (
    DEFAULT_FOLDER_FPS,
    EncodeOptions,
    FolderSink,
    Sink,
    open_sink,
    output_kind,
)
from celpaint.io.sources import Source, SourceInfo
from celpaint.pipeline.api import colorize_jobs
from celpaint.pipeline.auto import AutoColorizer, choose
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer, FrameStream, generator_workers
from celpaint.pipeline.engine import JobResult, Progress, Relay, run_job
from celpaint.pipeline.jobs import Job, is_clip, plan

log = logging.getLogger("celpaint")

# Frames colorized before a part's first frame and not written (``--warm-up``). The smoother
# weighs the frame k steps back by about strength^k (0.8^32 < 1e-3 at the default strength):
# after 32 frames what came before the warm-up no longer shows in 8-bit colors.
DEFAULT_WARMUP = 32
# How long a rank waits for the others at the end. A long clip on slow CPUs may take hours
# and the parts are only about equal; a rank that dies is noticed at once anyway, through its
# closed connection.
_WAIT_FOR_OTHERS = datetime.timedelta(days=2)
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count``: ``--shard I/N``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` with 1 <= I <= N.

        Raises:
            InputError: anything else.
        """
        match = _SHARD.match(text)
        if match is None:
            raise InputError(
                f"--shard {text!r} is not I/N; e.g. --shard 2/4 colors the second of four parts"
            )
        index, count = int(match[1]), int(match[2])
        if count < 1:
            raise InputError(f"--shard {text}: the number of parts N must be at least 1")
        if not 1 <= index <= count:
            raise InputError(f"--shard {text}: parts are numbered 1 to {count}")
        return cls(index, count)


@dataclass(frozen=True)
class FrameRange:
    """Part ``index`` (1-based) of ``count`` of a clip: frames ``start`` to ``stop``
    (excluded) written, the ``warmup`` frames before ``start`` colorized first."""

    index: int
    count: int
    start: int
    stop: int
    warmup: int

    @property
    def first(self) -> int:
        """The first frame colorized (the warm-up's)."""
        return self.start - self.warmup

    @property
    def last(self) -> bool:
        return self.index == self.count


def split_frames(frame_count: int, count: int, warmup: int = DEFAULT_WARMUP) -> list[FrameRange]:
    """Cut ``frame_count`` frames into ``count`` consecutive ranges as equal as can be, each
    with a warm-up of ``warmup`` frames (fewer where the clip starts sooner).

    Raises:
        InputError: fewer frames than parts.
        ValueError: ``count`` < 1 or ``warmup`` < 0.
    """
    if count < 1 or warmup < 0:
        raise ValueError(f"need count >= 1 and warmup >= 0, got {count}, {warmup}")
    if frame_count < count:
        raise InputError(
            f"the clip has {frame_count} frames, too few for {count} parts; use fewer parts"
        )
    bounds = [index * frame_count // count for index in range(count + 1)]
    return [
        FrameRange(index + 1, count, start, stop, min(warmup, start))
        for index, (start, stop) in enumerate(itertools.pairwise(bounds))
    ]


def deal(sizes: Sequence[int], ranks: int) -> list[list[int]]:
    """Deal items of the given sizes (frame counts) out to ``ranks`` processes, largest first,
    each to the least loaded (the lowest rank on a tie); returns each rank's item indices in
    their original order."""
    loads = [0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for item in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        rank = min(range(ranks), key=lambda r: (loads[r], r))
        loads[rank] += sizes[item]
        shares[rank].append(item)
    return [sorted(share) for share in shares]


def colorize_part(
    input: str | os.PathLike,
    output: str | os.PathLike,
    shard: Shard,
    colorizer: Colorizer | AutoColorizer,
    options: ColorizeOptions | None = None,
    progress: Progress | None = None,
    encode: EncodeOptions | None = None,
    max_pixels: int = MAX_PIXELS,
    warmup: int = DEFAULT_WARMUP,
) -> JobResult:
    """Colorize part ``shard`` of one clip into ``output`` (``colorize --shard I/N``).

    Only the part's frames and its warm-up are decoded into memory and colorized. A video
    output is the part alone, without audio, tagged for ``join`` (``io/segments.py``); a folder
    output receives the part's frames under the names the whole clip's frames have, so the
    parts of a folder output go into one folder and need no join.

    Raises:
        InputError: not one clip (a video or a folder of several frames), a GIF output,
            fewer frames than parts, and whatever ``colorize`` refuses.
    """
    options = options or ColorizeOptions()
    encode = dataclasses.replace(encode or EncodeOptions(), keep_audio=False, audio_from=None)
    folder = output_kind(Path(output)) == "folder"
    # The other parts may have filled a folder output already: ``plan`` lets it hold files,
    # and only this part's own frames are looked for below.
    planning = dataclasses.replace(encode, overwrite=encode.overwrite or folder)
    (job,) = plan([input], output, planning, max_pixels=max_pixels)
    job.encode = dataclasses.replace(job.encode, overwrite=encode.overwrite)
    try:
        _check_splittable(job)
        part = split_frames(job.source.info.frame_count, shard.count, warmup)[shard.index - 1]
        if folder and not (encode.overwrite or encode.resume):
            _check_part_frames_absent(job, part)
        sink = _part_sink(job, part, job.output)
        chosen = choose([job], colorizer)[0]
    except BaseException:
        job.source.close()
        raise
    progress = progress or Progress()
    progress.start([job])
    result = _colorize_range(job, part, sink, chosen, options, progress)
    progress.job_end(result)
    return result


def colorize_distributed(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None,
    colorizer: Colorizer | AutoColorizer,
    options: ColorizeOptions | None = None,
    progress: Progress | None = None,
    encode: EncodeOptions | None = None,
    max_pixels: int = MAX_PIXELS,
    warmup: int = DEFAULT_WARMUP,
) -> list[JobResult]:
    """``colorize`` run by every process of a ``torchrun`` run, each doing its share.

    Call it in every process with the same arguments and a colorizer on this process's device
    (``device.rank_device``). The processes coordinate over a gloo process group (joined here
    unless one exists). One clip is split into frame ranges and joined by rank 0; several
    inputs are dealt out whole, and each process writes its own outputs. Only rank 0 reports
    progress (its own share) and the results.

    Returns:
        The results of every input on rank 0; the other ranks return their own.

    Raises:
        InputError: an input or output any process refuses (every process raises).
        ProcessingError: another process failed or died: nothing appears at a split clip's
            output, and the parts are removed.
    """
    options = options or ColorizeOptions()
    encode = encode or EncodeOptions()
    dist, _ = distributed_setup(str(colorizer.device), "gloo", _WAIT_FOR_OTHERS)
    try:
        jobs, chosen = _plan_everywhere(dist, inputs, output, encode, max_pixels, colorizer)
        reporter = (progress or Progress()) if dist.main else Progress()
        if len(jobs) == 1 and is_clip(jobs[0].source):
            results = [_split_clip(dist, jobs[0], chosen[0], options, reporter, encode, warmup)]
        else:
            results = _deal_jobs(dist, jobs, chosen, options, reporter)
        # Every process reaches the teardown before any starts it: gloo can abort a process
        # whose peer closes the connection under it.
        dist.barrier()
        return results
    finally:
        dist.close()


def _plan_everywhere(
    dist: Dist,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None,
    encode: EncodeOptions,
    max_pixels: int,
    colorizer: Colorizer | AutoColorizer,
) -> tuple[list[Job], dict[int, Colorizer]]:
    """Every process plans the whole run and picks each input's model (``auto.choose``); a
    refusal on any stops all of them."""
    error: CelpaintError | None = None
    jobs: list[Job] = []
    chosen: dict[int, Colorizer] = {}
    try:
        jobs = plan(list(inputs), output, encode, max_pixels=max_pixels)
        if len(jobs) == 1 and is_clip(jobs[0].source):
            _check_splittable(jobs[0])
            split_frames(jobs[0].source.info.frame_count, dist.world_size)
        chosen = choose(jobs, colorizer)
    except CelpaintError as caught:
        error = caught
    failures = _collect(dist, error, "planning", None)
    if error is None and failures:
        rank, message = failures[0]
        error = InputError(f"process {rank} of the distributed run refused the work: {message}")
    if error is not None:
        for job in jobs:
            if job.source is not None:
                job.source.close()
        raise error
    return jobs, chosen


def _deal_jobs(
    dist: Dist,
    jobs: list[Job],
    colorizers: dict[int, Colorizer],
    options: ColorizeOptions,
    progress: Progress,
) -> list[JobResult]:
    """Each process colorizes its share of whole inputs into their own outputs."""
    shares = deal([job.source.info.frame_count for job in jobs], dist.world_size)
    mine = [jobs[index] for index in shares[dist.rank]]
    for index, job in enumerate(jobs):
        if index not in shares[dist.rank]:
            job.source.close()
    results: list[JobResult] = []
    error: Exception | None = None
    try:
        mine_colorizers = {
            k: colorizers[index] for k, index in enumerate(shares[dist.rank]) if index in colorizers
        }
        results = colorize_jobs(mine, mine_colorizers, options, progress)
    except Exception as caught:  # reported to the others, then raised
        error = caught
    failures = _collect(dist, error, "colorizing", None)
    if error is not None:
        raise error
    if failures:
        rank, message = failures[0]
        raise ProcessingError(
            f"process {rank} of the distributed run failed: {message}; the outputs the other "
            "processes finished are complete"
        )
    everyone = dist.gather(results)
    return [result for share in everyone for result in share] if dist.main else results


def _split_clip(
    dist: Dist,
    job: Job,
    colorizer: Colorizer,
    options: ColorizeOptions,
    progress: Progress,
    encode: EncodeOptions,
    warmup: int,
) -> JobResult:
    """This rank's range of the one clip, then (rank 0) the join, after every rank is done."""
    started = time.perf_counter()
    info = job.source.info
    part = split_frames(info.frame_count, dist.world_size, warmup)[dist.rank]
    segment = None
    if job.output_kind == "video":
        name = f"{job.output.stem}-part{part.index}of{part.count}{job.output.suffix}"
        segment = temporary_path(job.output.with_name(name))
        # Temporaries that killed runs left beside the output, their parts among them (only
        # those whose process is gone).
        remove_stale_temporaries(job.output.parent)
    progress.start([job])
    error: Exception | None = None
    written = 0
    try:
        try:
            parts_encode = dataclasses.replace(encode, keep_audio=False, audio_from=None)
            sink = _part_sink(dataclasses.replace(job, encode=parts_encode), part, segment)
            written = _colorize_range(job, part, sink, colorizer, options, progress).frames
        except Exception as caught:  # reported to the others, then raised
            error = caught
        failures = _collect(dist, error, "colorizing", job.output)
        if error is not None:
            raise error
        if failures:
            rank, message = failures[0]
            raise ProcessingError(
                f"process {rank} of the distributed run failed: {message}; nothing was written "
                f"to {job.output}"
            )
        segments = dist.gather(None if segment is None else str(segment))
        frames = sum(dist.gather(written))
        if segment is not None:
            _join_on_rank_zero(dist, job, segments, encode)
        elif dist.main and encode.overwrite:
            # Every part is in: the folder's other frames (an earlier output's) go, as they
            # do when one process overwrites a folder.
            folder = FolderSink(job.output, overwrite=True)
            folder.claim(info.name(index) for index in range(info.frame_count))
            folder.close()
    finally:
        if segment is not None:
            segment.unlink(missing_ok=True)
    result = JobResult(job.input, job.output, frames, 0, time.perf_counter() - started)
    if dist.main:
        progress.job_end(result)
    return result


def _join_on_rank_zero(dist: Dist, job: Job, segments: list[str], encode: EncodeOptions) -> None:
    """Rank 0 joins the parts; the others wait for it (their parts are read meanwhile) and
    learn whether it worked."""
    error: Exception | None = None
    if dist.main:
        try:
            replace = job.planned if encode.overwrite and job.planned is not None else False
            join_parts(segments, job.output, _audio(job, encode), replace, encode.ffmpeg)
        except Exception as caught:
            error = caught
    failures = _collect(dist, error, "joining", job.output)
    if error is not None:
        raise error
    if failures:
        raise ProcessingError(f"joining the parts into {job.output} failed: {failures[0][1]}")


def _audio(job: Job, encode: EncodeOptions):
    """The audio the output takes, as ``open_sink`` chooses it for one process's output."""
    media = job.source.info.media
    if encode.audio_from is not None:
        return encode.audio_from
    if encode.keep_audio and media is not None and media.audio:
        return media
    return None


def _collect(
    dist: Dist, error: BaseException | None, stage: str, output: Path | None
) -> list[tuple[int, str]]:
    """Every process's error of ``stage`` (``Dist.gather_errors``); a process that died
    meanwhile (the collective fails) is reported as a ``ProcessingError``."""
    try:
        return dist.gather_errors(error)
    except RuntimeError as lost:
        where = f"; nothing was written to {output}" if output is not None else ""
        raise ProcessingError(
            f"another process of the distributed run stopped while {stage} ({lost}){where}"
        ) from None


def _check_splittable(job: Job) -> None:
    """Raise ``InputError`` unless ``job`` is one clip written to a video that parts can be
    joined into, or to a folder."""
    if not is_clip(job.source):
        raise InputError(f"{job.input} is a single image: there is nothing to split into parts")
    if job.output_kind == "video" and job.output.suffix.lower() not in JOINABLE_EXTENSIONS:
        raise InputError(
            f"parts cannot be joined into {job.output.name}: write them as one of "
            f"{', '.join(JOINABLE_EXTENSIONS)} (or a folder) and convert the result"
        )


def _check_part_frames_absent(job: Job, part: FrameRange) -> None:
    """Raise ``InputError`` if a frame of ``part`` is in the folder ``job.output`` already."""
    info = job.source.info
    for index in range(part.start, part.stop):
        frame = job.output / f"{info.name(index)}.png"
        if frame.exists():
            raise InputError(
                f"{job.output} already holds {frame.name}, a frame of part {part.index} of "
                f"{part.count}; pass --resume to finish the part or --overwrite to replace it"
            )


def _part_sink(job: Job, part: FrameRange, target: Path | None) -> Sink:
    """Where a part goes: a video at ``target`` tagged as the part, or the frames into the
    job's folder under their clip-wide names."""
    info = job.source.info
    if job.output_kind == "folder":
        remove_stale_temporaries(job.output)
        return _PartFolderSink(job.output, resume=job.encode.resume, overwrite=job.encode.overwrite)
    encode = job.encode
    fps = encode.fps or info.fps or DEFAULT_FOLDER_FPS
    tag = PartTag(
        index=part.index,
        count=part.count,
        start=part.start,
        stop=part.stop,
        source=_identity(info),
        encoding={
            "container": job.output.suffix.lower(),
            "crf": encode.crf,
            "preset": encode.preset,
            "lossless": encode.lossless,
            "fps": fps_text(fps),
        },
    )
    planned = job.planned if target == job.output else None
    return open_sink(target, "video", info, encode, planned, metadata=tag.metadata())


def _identity(info: SourceInfo) -> ClipIdentity:
    return ClipIdentity(
        name=info.path.name,
        frames=info.frame_count,
        width=info.width,
        height=info.height,
        fps=fps_text(info.fps),
        path=str(info.path.absolute()),
    )


class _PartFolderSink(FolderSink):
    """A folder that other parts fill too: closing it removes no frames it did not write."""

    def close(self) -> Path:
        return self.folder


def _colorize_range(
    job: Job,
    part: FrameRange,
    sink: Sink,
    colorizer: Colorizer,
    options: ColorizeOptions,
    progress: Progress,
) -> JobResult:
    """Colorize the warm-up (kept by the stream's temporal state only), then stream the part's
    frames through the engine into ``sink``. One decoder reads both, from ``part.first``."""
    stream = colorizer.stream(options)
    workers, threads = generator_workers(colorizer)
    with opencv_threads(1 if colorizer.device.type == "cpu" else None), torch_threads(threads):
        try:
            frames = job.source.frames(part.first, None if part.last else part.stop)
            _warm_up(stream, itertools.islice(frames, part.warmup), colorizer.batch_size)
        except BaseException:
            sink.abort()
            job.source.close()
            raise
        part_job = dataclasses.replace(job, source=_PartSource(job.source, part, frames))
        return run_job(part_job, stream, colorizer.batch_size, Relay(progress), workers, sink=sink)


def _warm_up(stream: FrameStream, frames: Iterable[np.ndarray], batch_size: int) -> None:
    """Colorize ``frames`` through ``stream`` for its temporal state; the colors are dropped."""
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            stream(np.stack(batch))
            batch = []
    if batch:
        stream(np.stack(batch))


class _PartSource:
    """A part of a clip as the engine reads it (``io.sources.Source``'s interface): the frames
    left in ``frames`` after the warm-up, named as the whole clip's frames are."""

    def __init__(self, source: Source, part: FrameRange, frames: Iterator[np.ndarray]):
        self.info = dataclasses.replace(
            source.info, frame_count=part.stop - part.start, first=part.start
        )
        self._source = source
        self._frames = frames

    def frames(self) -> Iterator[np.ndarray]:
        return self._frames

    def close(self) -> None:
        self._source.close()
