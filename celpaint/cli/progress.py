"""rich progress bound to the library's progress callbacks."""

from __future__ import annotations

import sys
from collections import Counter
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

from celpaint.errors import ProcessingError
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
        runnable = [job for job in jobs if job.runnable]
        if len(runnable) > 1:
            total = sum(job.source.info.frame_count for job in runnable)
            label = f"all {len(runnable)} inputs"
            if len(runnable) < len(jobs):
                label += f" of {len(jobs)}"
            self._overall = self._progress.add_task(label, total=total)

    def job_start(self, job: Job) -> None:
        name = job.input.name or str(job.input)
        if job.model and not self.quiet:
            # --model auto: say which model each input gets, and why.
            self.console.print(f"{job.input}: model {job.model}", highlight=False, soft_wrap=True)
        self._current = self._progress.add_task(name, total=job.source.info.frame_count)

    def advance(self, frames: int) -> None:
        if self._current is not None:
            self._progress.advance(self._current, frames)
        if self._overall is not None:
            self._progress.advance(self._overall, frames)

    def job_end(self, result: engine.JobResult) -> None:
        if result.status == "failed":
            if not self.quiet:
                self.console.print(
                    f"failed {result.input}: {result.error}", highlight=False, soft_wrap=True
                )
            return
        if result.status == "done" and result.frames == 0 and self._current is None:
            return  # complete before the run: only the summary counts it
        if self._current is not None:
            # The packet count of a video can differ slightly from the decoded frames.
            done = result.frames + result.skipped
            self._progress.update(self._current, total=done, completed=done)
            self._current = None
        skipped = f", {result.skipped} already done" if result.skipped else ""
        if not self.quiet:
            self.console.print(
                f"{self.verb} {result.frames} frames{skipped} in {result.seconds:.1f} s "
                f"({result.fps:.1f} fps) -> {result.output}",
                highlight=False,
                soft_wrap=True,
            )

    def summarize(self, results: Sequence[engine.JobResult]) -> None:
        """One line on what a run of several inputs, or a resumed or failing one, did:
        ``3 done earlier, 2 colored, 1 failed``."""
        if self.quiet:
            return
        line = summary(results, self.verb)
        if line:
            self.console.print(line, highlight=False, soft_wrap=True)


def raise_failures(results: Sequence[engine.JobResult]) -> None:
    """Raise ``ProcessingError`` (exit 1) naming the inputs that failed (``--keep-going``),
    telling the user how to finish the run; nothing when none failed."""
    failed = [result for result in results if result.status == "failed"]
    if failed:
        names = ", ".join(str(result.input) for result in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise ProcessingError(
            f"{len(failed)} of {len(results)} inputs failed ({names}{more}); fix them and run "
            "the same command with --resume to do only what is left"
        )


def summary(results: Sequence[engine.JobResult], verb: str = "colored") -> str | None:
    """``N done earlier, N <verb> (N lineart, N gray), N failed`` (the parts that are not
    zero; the models with --model auto); None for one input written normally, whose own line
    says it all."""
    counts = {
        status: sum(r.status == status for r in results) for status in ("done", "written", "failed")
    }
    if len(results) == 1 and counts["written"] == 1:
        return None
    if counts["done"] == len(results):
        if len(results) == 1:
            return "nothing to do: the output was done earlier"
        return f"nothing to do: all {len(results)} outputs were done earlier"
    # --model auto: how many inputs each model colored.
    models = Counter(r.model.split()[0] for r in results if r.status == "written" and r.model)
    by_model = " (" + ", ".join(f"{n} {name}" for name, n in sorted(models.items())) + ")"
    parts = [
        f"{counts['done']} done earlier" if counts["done"] else "",
        f"{counts['written']} {verb}" + (by_model if models else "") if counts["written"] else "",
        f"{counts['failed']} failed" if counts["failed"] else "",
    ]
    return ", ".join(part for part in parts if part)
