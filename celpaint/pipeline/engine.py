"""The streaming engine: decode -> transform stages -> encode on threads joined by bounded
queues, in order, with the first error anywhere stopping every stage.

``run_jobs`` runs planned jobs (``pipeline.jobs``) one after the other; the transform is the
colorizer's ``FrameStream`` for ``colorize``, line-art extraction, or nothing (``convert``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from celpaint.errors import CelpaintError
from celpaint.io.sinks import Sink, open_sink
from celpaint.pipeline.jobs import Job

log = logging.getLogger("celpaint")


# A batch transform: uint8 RGB (B, H, W, 3) in, uint8 RGB (B, H, W, 3) out.
Transform = Callable[[np.ndarray], np.ndarray]


JobStatus = Literal["written", "done", "failed"]


@dataclass
class JobResult:
    """What became of one job.

    Attributes:
        frames: frames written by this run.
        skipped: frames already in the output (``--resume``): a frame folder's frames found
            done, or every frame of a video or image output that existed complete.
        status: ``"written"`` (the output was written, or finished), ``"done"`` (it was
            complete before the run: nothing to do) or ``"failed"`` (skipped with
            ``keep_going``; nothing partial was left at ``output``).
        error: why it failed.
        model: the model that colorized it and why (``Job.model``).
    """

    input: Path
    output: Path
    frames: int
    skipped: int
    seconds: float
    status: JobStatus = "written"
    error: str | None = None
    model: str | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """Progress callbacks; the defaults do nothing. The CLI renders them with rich."""

    def start(self, jobs: Sequence[Job]) -> None:
        """Called once with every planned job (the sources of runnable ones open, so frame
        counts are known; see ``Job.runnable``)."""

    def job_start(self, job: Job) -> None:
        """Called before the first frame of a job that runs."""

    def advance(self, frames: int) -> None:
        """Called after ``frames`` more frames were written (or skipped on resume)."""

    def job_end(self, result: JobResult) -> None:
        """Called for every job, in order: when its output is complete and in place, or
        with ``result.status`` ``"done"`` or ``"failed"`` (see ``run_jobs``)."""


class Relay(Progress):
    """Passes a job's start and its frames on to ``progress``, but not its end: for a run that
    is one part of a job whose end the caller reports (a pass before the real one, a shard of
    a clip)."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def job_start(self, job: Job) -> None:
        self.progress.job_start(job)

    def advance(self, frames: int) -> None:
        self.progress.advance(frames)


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


class NamedStage:
    """A stage that also needs the frames' output names: ``function(names, data)``.

    The engine calls an ordinary stage with the batch's data alone; wrap a function in this to
    receive the list of names too (frames skipped on ``--resume`` are not in the batch).
    """

    def __init__(self, function: Callable[[list[str], object], object]):
        self.function = function

    def __call__(self, names: list[str], data):
        return self.function(names, data)


def apply_stage(stage: Callable, names: list[str], data):
    """Run one stage on one batch (see ``NamedStage``)."""
    return stage(names, data) if isinstance(stage, NamedStage) else stage(data)


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
                result = (names, apply_stage(stage, names, data))
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
    progress: Progress,
    workers: int = 1,
    sink: Sink | None = None,
) -> JobResult:
    """Stream one source through ``transform`` into its sink (opened with ``job.encode``, or
    ``sink`` when given).

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
    _warn_variable_frame_rate(job)
    started = time.perf_counter()
    progress.job_start(job)
    if sink is None:
        sink = open_sink(job.output, job.output_kind, job.source.info, job.encode, job.planned)
    run = _JobRun(job, sink, transform_stages(transform), batch_size, progress)
    output = run.run(workers)
    # A frame folder whose every frame was there already (--resume) needed nothing.
    status = "done" if sink.frames_written == 0 and run.skipped > 0 else "written"
    result = JobResult(
        job.input, output, sink.frames_written, run.skipped, time.perf_counter() - started,
        status, model=job.model,
    )  # fmt: skip
    progress.job_end(result)
    return result


def _warn_variable_frame_rate(job: Job) -> None:
    media = job.source.info.media
    if media is not None and media.variable_frame_rate:
        log.warning(
            "%s has a variable frame rate: every frame is kept once and written at a constant "
            "%s fps, so the timing of some frames shifts slightly",
            job.input.name, media.fps,
        )  # fmt: skip


class _JobRun:
    """The threads of one ``run_job``: read, the stages, write; ``run`` starts and joins them.

    ``channels[0]`` holds decoded batches, ``channels[i]`` the output of stage ``i``, the last
    one what the writer encodes. Each item is ``(names, data)``.
    """

    def __init__(
        self, job: Job, sink: Sink, stages: list[Callable], batch_size: int, progress: Progress
    ):
        self.job = job
        self.sink = sink
        self.stages = stages
        self.batch_size = batch_size
        self.progress = progress
        self.stop = threading.Event()
        self.channels = [queue.Queue(maxsize=_PREFETCH) for _ in range(len(stages) + 1)]
        self.errors: list[BaseException] = []
        self.skipped = 0

    def run(self, workers: int) -> Path:
        """Run every thread to the end; returns the finished output's path."""
        threads = self._threads(workers)
        for thread in threads:
            thread.start()
        try:
            # The first stage (the generator) runs here, where torch's threads and Ctrl-C
            # live, unless it has workers of its own; then this thread only waits for them.
            if self.stages and workers == 1:
                self.relay(self.stages[0], self.channels[0], self.channels[1])
            for thread in reversed(threads):
                _join(thread)
            if self.errors:
                raise self.errors[0]
            return self.sink.close()
        except BaseException:
            self.stop.set()
            # Closing the source and aborting the sink kill their ffmpeg processes, which
            # unblocks a stage waiting on a pipe.
            self.job.source.close()
            self.sink.abort()
            for thread in threads:
                _join(thread)
            raise
        finally:
            self.job.source.close()

    def _threads(self, workers: int) -> list[threading.Thread]:
        threads = [self._thread(self.read, (), "celpaint-decode")]
        threads += [
            self._thread(self.relay, (stage, self.channels[number], self.channels[number + 1]),
                         f"celpaint-stage-{number}")
            for number, stage in enumerate(self.stages[1:], start=1)
        ]  # fmt: skip
        threads.append(self._thread(self.write, (), "celpaint-encode"))
        if self.stages and workers > 1:
            ordered = _OrderedRelay(workers, self.stop)
            args = (self.stages[0], self.channels[0], self.channels[1])
            threads += [
                self._thread(ordered.relay, args, f"celpaint-stage-0-{number}")
                for number in range(workers)
            ]
        return threads

    def _thread(self, body: Callable, args: tuple, name: str) -> threading.Thread:
        return threading.Thread(target=self._guarded, args=(body, *args), name=name, daemon=True)

    def _guarded(self, body: Callable, *args) -> None:
        """``body`` for a pipeline thread: its error is handed to the main thread and stops
        every stage."""
        try:
            body(*args)
        except BaseException as error:
            self.errors.append(error)
            self.stop.set()

    def read(self) -> None:
        """Decode frames into batches of ``batch_size`` (frames the sink holds are skipped)."""
        info = self.job.source.info
        names: list[str] = []
        frames: list[np.ndarray] = []
        for index, frame in enumerate(self.job.source.frames()):
            if self.stop.is_set():
                return
            name = info.name(index)
            if self.sink.is_done(name):
                self.skipped += 1
                self.progress.advance(1)
                continue
            names.append(name)
            frames.append(frame)
            if len(frames) >= self.batch_size:
                if not _put(self.channels[0], (names, np.stack(frames)), self.stop):
                    return
                names, frames = [], []
        if frames and not _put(self.channels[0], (names, np.stack(frames)), self.stop):
            return
        _put(self.channels[0], _END, self.stop)

    def relay(self, stage: Callable, inbox: queue.Queue, outbox: queue.Queue) -> None:
        """Apply ``stage`` to every batch from ``inbox``, in order, into ``outbox``."""
        while not self.stop.is_set() and (item := _get(inbox, self.stop)) is not _END:
            names, data = item
            if not _put(outbox, (names, apply_stage(stage, names, data)), self.stop):
                return
        _put(outbox, _END, self.stop)

    def write(self) -> None:
        """Hand every finished frame to the sink, in order."""
        while not self.stop.is_set() and (item := _get(self.channels[-1], self.stop)) is not _END:
            names, outputs = item
            for name, rgb in zip(names, outputs, strict=True):
                self.sink.write(name, rgb)
            self.progress.advance(len(names))


def run_jobs(
    jobs: Sequence[Job],
    batch_size: int,
    progress: Progress | None = None,
    transform: Transform | None = None,
    transform_for: Callable[[Job], Transform] | None = None,
    workers: int = 1,
    keep_going: bool = False,
) -> list[JobResult]:
    """Run ``jobs`` one after the other, ``batch_size`` frames at a time.

    ``transform_for(job)``, when given, makes a fresh transform for each job (a stateful one,
    such as a ``FrameStream`` whose temporal state must not cross from one input to the next)
    and takes the place of ``transform``. ``workers``: threads running the transform's first
    stage (see ``run_job``).

    Jobs done earlier (``Job.done``) are reported as ``"done"`` and jobs that failed at
    planning (``Job.error``) as ``"failed"``, without work. With ``keep_going`` a job that
    fails while running (any ``Exception``; an interrupt still stops everything) is reported
    as ``"failed"`` with its error, its partial output removed as on any failure, and the
    next job starts; without it the first failure is raised.

    Returns:
        One ``JobResult`` per job, in order; ``progress.job_end`` receives each.
    """
    progress = progress or Progress()
    progress.start(jobs)
    results = []
    try:
        for job in jobs:
            if not job.runnable:
                result = _not_run(job)
                progress.job_end(result)
            else:
                job_transform = transform_for(job) if transform_for is not None else transform
                try:
                    result = run_job(job, job_transform, batch_size, progress, workers=workers)
                except Exception as error:
                    if not keep_going:
                        raise
                    result = _failed(job, error)
                    log.debug("%s failed", job.input, exc_info=True)
                    progress.job_end(result)
            results.append(result)
    finally:
        for job in jobs:
            if job.source is not None:
                job.source.close()
    return results


def _not_run(job: Job) -> JobResult:
    if job.error is not None:
        return JobResult(job.input, job.output, 0, 0, 0.0, "failed", job.error, job.model)
    frames = job.source.info.frame_count if job.source is not None else 0
    return JobResult(job.input, job.output, 0, frames, 0.0, "done", model=job.model)


def _failed(job: Job, error: Exception) -> JobResult:
    # celpaint's own errors say what to do; anything else is named by its type.
    message = str(error) if isinstance(error, CelpaintError) else f"{type(error).__name__}: {error}"
    return JobResult(job.input, job.output, 0, 0, 0.0, "failed", message, job.model)
