"""Colorizing (or just converting) sources into sinks: planning outputs and streaming frames.

``colorize`` is the library entry point behind ``celpaint colorize``; ``convert`` is the same
engine without a model, behind ``celpaint extract`` and ``celpaint assemble``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from celpaint.errors import InputError
from celpaint.pipeline.frames import IMAGE_EXTENSIONS, FrameFolderWriter, write_image
from celpaint.pipeline.media import find_ffmpeg
from celpaint.pipeline.sources import Source, open_source
from celpaint.pipeline.temporal import TemporalParams
from celpaint.pipeline.video import WRITABLE_EXTENSIONS, VideoWriter, check_preset

log = logging.getLogger("celpaint")

OutputKind = Literal["video", "folder", "image"]
DEFAULT_FOLDER_FPS = Fraction(24)

# A batch transform: uint8 RGB (B, H, W, 3) in, uint8 RGB (B, H, W, 3) out.
Transform = Callable[[np.ndarray], np.ndarray]


@dataclass
class ColorizeOptions:
    """How outputs are written (the model's own options live on ``Colorizer``).

    Attributes:
        batch_size: frames per batch read from the source; None uses the colorizer's.
        overwrite: replace existing outputs.
        resume: for frame-folder outputs, skip frames whose file already exists.
        crf: video quality (lower is better).
        preset: H.264 speed preset (see ``VideoWriter``).
        lossless: bit-exact video output.
        fps: frame rate for frame-folder inputs written as video (default 24).
        audio_from: clip whose audio goes into video outputs; by default a video input's own.
        keep_audio: copy the input's audio into video outputs.
        ffmpeg: ffmpeg binary; found automatically when None.
        temporal: smooth colors over time in clips (videos, and folders of several frames;
            never single images). Scene cuts and the start of every input reset it.
        temporal_strength: largest weight (0..1) of the previous frame's motion-compensated
            chroma; higher is steadier but follows real color changes more slowly.
        scene_threshold: scene-change score (0..1) from which a frame starts a new shot.
        flat_fill: give each closed region between the input's lines one color.
        work_size: long side the model sees; the colorizer's when None.
    """

    batch_size: int | None = None
    overwrite: bool = False
    resume: bool = False
    crf: int = 18
    preset: str = "medium"
    lossless: bool = False
    fps: Fraction | None = None
    audio_from: Path | None = None
    keep_audio: bool = True
    ffmpeg: str | None = None
    temporal: bool = True
    temporal_strength: float = TemporalParams.strength
    scene_threshold: float = TemporalParams.scene_threshold
    flat_fill: bool = False
    work_size: int | None = None

    def temporal_params(self) -> TemporalParams | None:
        """The smoothing settings, or None when smoothing is off.

        Raises:
            InputError: a setting is out of its range.
        """
        # Checked even with smoothing off: a bad value is a mistake either way.
        try:
            params = TemporalParams(
                strength=self.temporal_strength, scene_threshold=self.scene_threshold
            )
        except ValueError as error:
            raise InputError(
                f"{error}: --temporal-strength and --scene-threshold are within 0..1"
            ) from None
        return params if self.temporal else None


@dataclass
class Job:
    """One input and where its output goes."""

    input: Path
    output: Path
    output_kind: OutputKind
    source: Source | None = None


@dataclass
class JobResult:
    input: Path
    output: Path
    frames: int
    skipped: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """Progress callbacks; the defaults do nothing. The CLI renders them with rich."""

    def start(self, jobs: Sequence[Job]) -> None:
        """Called once with every planned job (sources open, so frame counts are known)."""

    def job_start(self, job: Job) -> None:
        """Called before the first frame of ``job``."""

    def advance(self, frames: int) -> None:
        """Called after ``frames`` more frames were written (or skipped on resume)."""

    def job_end(self, result: JobResult) -> None:
        """Called when a job's output is complete and in place."""


def transform_stages(transform: Transform | None) -> list[Callable]:
    """The stages of a transform, run one after the other on each batch.

    A plain callable is one stage. An object with a ``stages()`` method (such as the
    colorizer's ``FrameStream``: the generator, then smoothing and upsampling) is split into
    its stages, so that the pipeline can run batch N's later stages while the generator works
    on batch N+1. Each stage takes what the previous one returned; the first takes uint8
    ``(B, H, W, 3)`` frames and the last returns them.
    """
    if transform is None:
        return []
    stages = getattr(transform, "stages", None)
    return list(stages()) if callable(stages) else [transform]


def output_kind(path: Path) -> OutputKind:
    suffix = path.suffix.lower()
    if suffix in WRITABLE_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "folder"


def _output_name(source: Source, tag: str | None = None) -> str:
    """The name of an input's output: ``NAME_<tag>`` beside the input, or ``NAME`` (no tag) in
    a folder of outputs; a folder for a folder, PNG for an image, the input's container (or
    MP4 where celpaint cannot write it) for a video."""
    info = source.info
    name = info.path.name if info.kind == "folder" else info.path.stem
    if tag:
        name = f"{name}_{tag}"
    if info.kind == "folder":
        return name
    if info.kind == "image":
        return f"{name}.png"
    suffix = info.path.suffix.lower()
    return name + (suffix if suffix in WRITABLE_EXTENSIONS else ".mp4")


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_writable(path: Path) -> None:
    """Fail early, before any output exists, if ``path`` cannot be created."""
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: the folder {ancestor} is not writable")


def plan(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None,
    options: ColorizeOptions,
    tag: str = "color",
) -> list[Job]:
    """Open every input and decide every output, checking all of them before any work starts.

    Rules: one input and ``output`` with a video extension gives a video, with an image
    extension an image, otherwise a folder of PNGs. Several inputs need ``output`` to be a
    folder, which receives one output per input named after it. Without ``output`` each result
    goes beside its input as ``NAME_<tag>``.

    Raises:
        InputError: for any input that cannot be read or output that cannot be written; the
            sources opened so far are closed.
    """
    if not inputs:
        raise InputError("no input given")
    check_preset(options.preset)
    jobs: list[Job] = []
    try:
        # An explicit --ffmpeg is checked here, before any work, like every other input.
        ffmpeg = find_ffmpeg(options.ffmpeg)
        options.ffmpeg = ffmpeg
        for item in inputs:
            jobs.append(Job(Path(item), Path(), "folder", open_source(item, ffmpeg)))
        target = Path(output) if output is not None else None
        if target is not None and len(jobs) > 1 and output_kind(target) != "folder":
            raise InputError(
                f"{len(jobs)} inputs need -o to be a folder (one output each), not {target.name}"
            )
        for job in jobs:
            if target is None:
                job.output = job.input.with_name(_output_name(job.source, tag))
            elif len(jobs) > 1:
                job.output = target / _output_name(job.source)
            else:
                job.output = target
            job.output_kind = output_kind(job.output)
            _check_job(job, options)
        seen: dict[Path, Path] = {}
        for job in jobs:
            key = job.output.resolve()
            if key in seen:
                raise InputError(
                    f"{seen[key]} and {job.input} would both be written to {job.output}; "
                    "give them different names or run them separately"
                )
            seen[key] = job.input
    except BaseException:
        for job in jobs:
            job.source.close()
        raise
    return jobs


def _check_job(job: Job, options: ColorizeOptions) -> None:
    kind = job.source.info.kind
    if _same_path(job.output, job.input):
        raise InputError(f"the output {job.output} is the input; choose another output path")
    if kind != "image" and job.output_kind == "image":
        raise InputError(
            f"{job.input} has several frames: write them to a folder or a video, "
            f"not to the image {job.output.name}"
        )
    if kind == "image" and job.output_kind == "video":
        raise InputError(f"{job.input} is a single image: write it to an image or a folder")
    if job.output.exists():
        if job.output_kind == "folder":
            if not job.output.is_dir():
                raise InputError(f"{job.output} exists and is not a folder")
            if any(job.output.iterdir()) and not (options.overwrite or options.resume):
                raise InputError(
                    f"{job.output} already holds files; pass --resume to finish it or "
                    "--overwrite to replace its frames"
                )
        elif job.output.is_dir():
            raise InputError(f"{job.output} is a folder; the output must be a file")
        elif not options.overwrite:
            raise InputError(f"{job.output} already exists; pass --overwrite to replace it")
    _check_writable(job.output if job.output_kind != "folder" else job.output / "frame.png")


class _ImageSink:
    def __init__(self, path: Path):
        self.path = path
        self.frames_written = 0

    def is_done(self, name: str) -> bool:
        return False

    def write(self, name: str, rgb: np.ndarray) -> None:
        write_image(self.path, rgb)
        self.frames_written += 1

    def close(self) -> Path:
        return self.path

    def abort(self) -> None:
        pass


class _VideoSink:
    def __init__(self, writer: VideoWriter):
        self.writer = writer

    @property
    def frames_written(self) -> int:
        return self.writer.frames_written

    def is_done(self, name: str) -> bool:
        return False

    def write(self, name: str, rgb: np.ndarray) -> None:
        self.writer.write(rgb)

    def close(self) -> Path:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def _open_sink(job: Job, options: ColorizeOptions):
    info = job.source.info
    if job.output_kind == "image":
        return _ImageSink(job.output)
    if job.output_kind == "folder":
        if options.resume and info.kind == "image":
            log.info("--resume has no effect on a single image")
        return FrameFolderWriter(job.output, resume=options.resume)
    if options.resume:
        log.warning("%s: --resume applies to frame-folder outputs; the video is redone", job.output)
    fps = options.fps or info.fps
    if fps is None:
        fps = DEFAULT_FOLDER_FPS
        log.warning("%s has no frame rate: writing %s fps (set --fps)", job.input, fps)
    audio = options.audio_from
    if audio is None and options.keep_audio and info.media is not None and info.media.audio:
        audio = info.media
    job.output.parent.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(
        job.output, info.width, info.height, fps, ffmpeg=options.ffmpeg, audio_from=audio,
        crf=options.crf, lossless=options.lossless, preset=options.preset,
    )  # fmt: skip
    return _VideoSink(writer)


_END = object()
# Batches a pipeline queue holds: enough that no stage waits on another's jitter, few enough
# that memory stays a few batches whatever the clip's length.
_PREFETCH = 2
_POLL_SECONDS = 0.05


def _put(channel: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless the run is stopping; a full queue is waited on in short polls."""
    while not stop.is_set():
        try:
            channel.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _get(channel: queue.Queue, stop: threading.Event):
    """Next item, or ``_END`` once the run is stopping and nothing is left."""
    while True:
        try:
            return channel.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if stop.is_set():
                return _END


def _join(thread: threading.Thread) -> None:
    # Joining in short slices keeps the main thread responsive to Ctrl-C.
    while thread.is_alive():
        thread.join(_POLL_SECONDS)


class _OrderedRelay:
    """Several threads applying one stage to a queue of batches, passing the results on in
    the order the batches came.

    Each worker takes the next batch and its sequence number together, runs the stage, then
    waits for its turn to put the result in the outbox, so at most one finished batch per
    worker waits. The last worker out puts the end marker.
    """

    def __init__(self, workers: int, stop: threading.Event):
        self._stop = stop
        self._workers = workers
        self._lock = threading.Lock()
        self._turn = threading.Condition()
        self._taken = 0  # sequence number of the next batch to take
        self._passed = 0  # ... and of the next result to pass on
        self._exhausted = False
        self._done_workers = 0

    def relay(self, stage: Callable, inbox: queue.Queue, outbox: queue.Queue) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self._exhausted:
                        return
                    item = _get(inbox, self._stop)
                    if item is _END:
                        self._exhausted = True
                        return
                    number = self._taken
                    self._taken += 1
                names, data = item
                result = (names, stage(data))
                with self._turn:
                    while self._passed != number:
                        if self._stop.is_set():
                            return
                        self._turn.wait(_POLL_SECONDS)
                if not _put(outbox, result, self._stop):
                    return
                with self._turn:
                    self._passed += 1
                    self._turn.notify_all()
        except BaseException:
            # Stop before the end marker below could go out with this batch missing.
            self._stop.set()
            raise
        finally:
            with self._turn:
                self._done_workers += 1
                last = self._done_workers == self._workers
            # Every batch taken was passed on before its worker came back for more, so once
            # all workers are out nothing is pending.
            if last and self._exhausted and not self._stop.is_set():
                _put(outbox, _END, self._stop)


def run_job(
    job: Job,
    transform: Transform | None,
    batch_size: int,
    options: ColorizeOptions,
    progress: Progress,
    workers: int = 1,
) -> JobResult:
    """Stream one source through ``transform`` into its sink.

    Decoding (a reader thread, which also stacks each batch), the transform's first stage
    (this thread: the generator), each later stage (a thread each, see ``transform_stages``)
    and encoding (a writer thread) run concurrently, joined by queues of at most ``_PREFETCH``
    batches, so memory is bounded by the batch size and the slowest stage sets the pace.
    Order is kept. The first error in any stage stops all of them and is raised here; the
    partial video is deleted, so the output appears at ``job.output`` only when complete
    (folders fill frame by frame).

    With ``workers`` > 1 the first stage runs on that many threads at once, each on its own
    batch, and their results are passed on in the order of the input; the stage must then be
    safe to call from several threads (the generator's forward is).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    info = job.source.info
    media = info.media
    if media is not None and media.variable_frame_rate:
        log.warning(
            "%s has a variable frame rate: every frame is kept once and written at a constant "
            "%s fps, so the timing of some frames shifts slightly",
            job.input.name, media.fps,
        )  # fmt: skip
    started = time.perf_counter()
    progress.job_start(job)
    sink = _open_sink(job, options)
    stages = transform_stages(transform)
    stop = threading.Event()
    # channels[0] holds decoded batches, channels[i] the output of stage i, the last one
    # what the writer encodes.
    channels: list[queue.Queue] = [queue.Queue(maxsize=_PREFETCH) for _ in range(len(stages) + 1)]
    errors: list[BaseException] = []
    skipped = 0

    def fail(error: BaseException) -> None:
        errors.append(error)
        stop.set()

    def guarded(body: Callable) -> Callable:
        """``body`` for a pipeline thread: its error is handed to the main thread and stops
        every stage."""

        def run(*args) -> None:
            try:
                body(*args)
            except BaseException as error:
                fail(error)

        return run

    def read() -> None:
        nonlocal skipped
        names: list[str] = []
        frames: list[np.ndarray] = []
        for index, frame in enumerate(job.source.frames()):
            if stop.is_set():
                return
            name = info.name(index)
            if sink.is_done(name):
                skipped += 1
                progress.advance(1)
                continue
            names.append(name)
            frames.append(frame)
            if len(frames) >= batch_size:
                if not _put(channels[0], (names, np.stack(frames)), stop):
                    return
                names, frames = [], []
        if frames and not _put(channels[0], (names, np.stack(frames)), stop):
            return
        _put(channels[0], _END, stop)

    def relay(stage: Callable, inbox: queue.Queue, outbox: queue.Queue) -> None:
        """Apply ``stage`` to every batch from ``inbox``, in order, into ``outbox``."""
        while not stop.is_set() and (item := _get(inbox, stop)) is not _END:
            names, data = item
            if not _put(outbox, (names, stage(data)), stop):
                return
        _put(outbox, _END, stop)

    def write() -> None:
        while not stop.is_set() and (item := _get(channels[-1], stop)) is not _END:
            names, outputs = item
            for name, rgb in zip(names, outputs, strict=True):
                sink.write(name, rgb)
            progress.advance(len(names))

    threads = [threading.Thread(target=guarded(read), name="celpaint-decode", daemon=True)]
    threads += [
        threading.Thread(
            target=guarded(relay),
            args=(stage, channels[number], channels[number + 1]),
            name=f"celpaint-stage-{number}",
            daemon=True,
        )
        for number, stage in enumerate(stages[1:], start=1)
    ]
    threads.append(threading.Thread(target=guarded(write), name="celpaint-encode", daemon=True))
    if stages and workers > 1:
        ordered = _OrderedRelay(workers, stop)
        threads += [
            threading.Thread(
                target=guarded(ordered.relay),
                args=(stages[0], channels[0], channels[1]),
                name=f"celpaint-stage-0-{number}",
                daemon=True,
            )
            for number in range(workers)
        ]
    for thread in threads:
        thread.start()
    try:
        # The first stage (the generator) runs here, where torch's threads and Ctrl-C live,
        # unless it has workers of its own; then this thread only waits for them.
        if stages and workers == 1:
            relay(stages[0], channels[0], channels[1])
        for thread in reversed(threads):
            _join(thread)
        if errors:
            raise errors[0]
        output = sink.close()
    except BaseException:
        stop.set()
        # Closing the source and aborting the sink kill their ffmpeg processes, which
        # unblocks a stage waiting on a pipe.
        job.source.close()
        sink.abort()
        for thread in threads:
            _join(thread)
        raise
    finally:
        job.source.close()
    result = JobResult(
        job.input, output, sink.frames_written, skipped, time.perf_counter() - started
    )
    progress.job_end(result)
    return result


def run_jobs(
    jobs: Sequence[Job],
    transform: Transform | None,
    batch_size: int,
    options: ColorizeOptions,
    progress: Progress | None = None,
    transform_for: Callable[[Job], Transform] | None = None,
    workers: int = 1,
) -> list[JobResult]:
    """Run ``jobs`` one after the other.

    ``transform_for(job)``, when given, makes a fresh transform for each job (a stateful one,
    such as a ``FrameStream`` whose temporal state must not cross from one input to the next)
    and takes the place of ``transform``. ``workers``: threads running the transform's first
    stage (see ``run_job``).
    """
    progress = progress or Progress()
    progress.start(jobs)
    results = []
    try:
        for job in jobs:
            job_transform = transform_for(job) if transform_for is not None else transform
            results.append(
                run_job(job, job_transform, batch_size, options, progress, workers=workers)
            )
    finally:
        for job in jobs:
            job.source.close()
    return results


def colorize(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    colorizer=None,
    options: ColorizeOptions | None = None,
    progress: Progress | None = None,
) -> list[JobResult]:
    """Colorize clips, frame folders or images.

    Args:
        inputs: one path or several (videos, folders of frames, images).
        output: a video, image or folder path for one input; a folder for several; None to
            write ``NAME_color`` beside each input.
        colorizer: a ``Colorizer``; the shipped default model on the best device if None.
        options: output options (see ``ColorizeOptions``).
        progress: callbacks for progress reporting.

    Returns:
        One ``JobResult`` per input, in order.

    With a colorizer on the CPU, torch's and OpenCV's thread counts (process-wide settings)
    are changed for the duration of the call (see ``colorizer.generator_workers``) and
    restored afterwards.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    options = options or ColorizeOptions()
    temporal = options.temporal_params()
    jobs = plan(inputs, output, options)
    try:
        if colorizer is None:
            from celpaint.pipeline.colorizer import Colorizer

            colorizer = Colorizer.from_pretrained()
        if options.work_size is not None:
            colorizer.check_work_size(options.work_size)
    except BaseException:
        for job in jobs:
            job.source.close()
        raise

    def stream_for(job: Job) -> Transform:
        # A fresh stream per input: colors never carry from one input into the next.
        return colorizer.stream(
            temporal if is_clip(job.source) else None, options.flat_fill, options.work_size
        )

    batch_size = options.batch_size or colorizer.batch_size
    from celpaint.pipeline.colorizer import generator_workers

    workers, threads = generator_workers(colorizer)
    with _opencv_threads(1 if colorizer.device.type == "cpu" else None), _torch_threads(threads):
        return run_jobs(
            jobs, None, batch_size, options, progress, transform_for=stream_for, workers=workers
        )


@contextlib.contextmanager
def _thread_count(threads: int | None, get: Callable[[], int], set_: Callable[[int], None]):
    """``set_(threads)`` for the duration (restoring ``get()``'s value), unless None."""
    if threads is None:
        yield
        return
    previous = get()
    set_(threads)
    try:
        yield
    finally:
        set_(previous)


def _torch_threads(threads: int | None):
    """Set torch's intra-op threads (process-wide) for the duration, unless None."""
    import torch

    return _thread_count(threads, torch.get_num_threads, torch.set_num_threads)


def _opencv_threads(threads: int | None):
    """Cap OpenCV's thread pool (process-wide) for the duration, unless ``threads`` is None.

    A generator on the CPU already keeps every core busy with torch's threads, so OpenCV
    fanning the smoothing out over the same cores only adds synchronisation: at 512x288 on 2
    cores it cost about 5 ms of CPU per frame (a quarter of the smoothing stage) for no speed.
    """
    return _thread_count(threads, cv2.getNumThreads, cv2.setNumThreads)


def is_clip(source: Source) -> bool:
    """Whether a source's frames follow each other in time: a video, or a folder of several
    frames (a single image, or a folder holding one, is not)."""
    return source.info.kind != "image" and source.info.frame_count != 1


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    options: ColorizeOptions | None = None,
    progress: Progress | None = None,
) -> JobResult:
    """Copy frames from one source to one sink unchanged: video -> frames, frames -> video."""
    options = options or ColorizeOptions()
    jobs = plan([input], output, options)
    return run_jobs(jobs, None, options.batch_size or 16, options, progress)[0]
