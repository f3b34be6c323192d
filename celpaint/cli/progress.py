"""rich progress bound to the library's progress callbacks."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from celpaint.pipeline import engine
from celpaint.pipeline.jobs import Job


def stderr_console() -> Console:
    return Console(file=sys.stderr)


class _FpsColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: D401 - rich API
        speed = task.finished_speed or task.speed
        return f"{speed:5.1f} fps" if speed else "  -.- fps"


class RichProgress(engine.Progress):
    """Draws one bar per input and, for several inputs, an overall bar; prints a summary."""

    def __init__(self, quiet: bool = False, verb: str = "colored"):
        self.quiet = quiet
        self.verb = verb
        self.console = stderr_console()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _FpsColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=quiet,
            transient=False,
        )
        self._overall: TaskID | None = None
        self._current: TaskID | None = None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def start(self, jobs: Sequence[Job]) -> None:
        # Started only once the inputs are checked, so an error comes out as a clean line.
        self._progress.start()
        if len(jobs) > 1:
            total = sum(job.source.info.frame_count for job in jobs)
            self._overall = self._progress.add_task(f"all {len(jobs)} inputs", total=total)

    def job_start(self, job: Job) -> None:
        name = job.input.name or str(job.input)
        self._current = self._progress.add_task(name, total=job.source.info.frame_count)

    def advance(self, frames: int) -> None:
        if self._current is not None:
            self._progress.advance(self._current, frames)
        if self._overall is not None:
            self._progress.advance(self._overall, frames)

    def job_end(self, result: engine.JobResult) -> None:
        if self._current is not None:
            # The packet count of a video can differ slightly from the decoded frames.
            done = result.frames + result.skipped
            self._progress.update(self._current, total=done, completed=done)
        skipped = f", {result.skipped} already done" if result.skipped else ""
        if not self.quiet:
            self.console.print(
                f"{self.verb} {result.frames} frames{skipped} in {result.seconds:.1f} s "
                f"({result.fps:.1f} fps) -> {result.output}",
                highlight=False,
                soft_wrap=True,
            )
