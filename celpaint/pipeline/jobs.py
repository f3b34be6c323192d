"""Inputs to outputs: opening every input, naming and checking every output before any work."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celpaint.errors import InputError
from celpaint.io.frames import MAX_PIXELS, FileStamp, check_spares_inputs, name_fits
from celpaint.io.media import find_ffmpeg
from celpaint.io.sinks import EncodeOptions, FramePattern, OutputKind, output_kind
from celpaint.io.sources import Source, open_source


@dataclass
class Job:
    """One input and where its output goes.

    Attributes:
        planned: the file at ``output`` when the job was planned (``--overwrite`` replaces
            that version only); None when there was none, or for a folder output.
    """

    input: Path
    output: Path
    output_kind: OutputKind
    source: Source | None = None
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    planned: FileStamp | None = None


def _output_name(source: Source, options: EncodeOptions, tag: str | None = None) -> str:
    """The name of an input's output: ``NAME_<tag>`` beside the input, or ``NAME`` (no tag) in
    a folder of outputs; a folder for a folder, an image of ``options.image_format`` for an
    image, the input's container (else ``options.video_suffix``'s) for a video."""
    info = source.info
    name = info.path.name if info.kind == "folder" else info.path.stem
    if tag:
        name = f"{name}_{tag}"
    if info.kind == "folder":
        return name
    if info.kind == "image":
        return name + options.image_suffix
    return name + options.video_suffix(info.path.suffix)


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
    options: EncodeOptions,
    tag: str = "color",
    max_pixels: int = MAX_PIXELS,
) -> list[Job]:
    """Open every input and decide every output, checking all of them before any work starts.

    Rules: one input and ``output`` with a video extension gives a video, with an image
    extension an image, with ``%0Nd`` in its name a numbered sequence, without an extension
    a folder of frames (``sinks.output_kind``; another extension is an error). Several
    inputs need ``output`` to be a folder, which receives one output per input named after
    it. Without ``output`` each result goes beside its input as ``NAME_<tag>``. No output may
    be an input of any job, or ``options.audio_from``, under any name
    (``frames.check_spares_inputs``).

    Args:
        max_pixels: the largest frame read (``open_source``).

    Raises:
        InputError: for any input that cannot be read or output that cannot be written; the
            sources opened so far are closed.
    """
    if not inputs:
        raise InputError("no input given")
    jobs: list[Job] = []
    try:
        # An explicit --ffmpeg is checked here, before any work, like every other input.
        ffmpeg = find_ffmpeg(options.ffmpeg)
        options = dataclasses.replace(options, ffmpeg=ffmpeg)
        for item in inputs:
            source = open_source(item, ffmpeg, max_pixels)
            jobs.append(Job(Path(item), Path(), "folder", source, options))
        target = Path(output) if output is not None else None
        if target is not None and len(jobs) > 1 and output_kind(target) != "folder":
            raise InputError(
                f"{len(jobs)} inputs need -o to be a folder (one output each), not {target.name}"
            )
        read = [path for job in jobs for path in job.source.info.files()]
        if options.audio_from is not None:
            read.append(Path(options.audio_from))
        for job in jobs:
            if target is None:
                job.output = job.input.with_name(_output_name(job.source, options, tag))
            elif len(jobs) > 1:
                job.output = target / _output_name(job.source, options)
            else:
                job.output = target
            # A name made from an input's is of the input's kind, dots in it or not.
            named = job.output == target
            job.output_kind = output_kind(job.output) if named else job.source.info.kind
            _check_job(job, options, read)
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


def _check_job(job: Job, options: EncodeOptions, read: list[Path]) -> None:
    kind = job.source.info.kind
    limit = name_fits(job.output)
    if limit is not None:
        raise InputError(
            f"the output name {job.output.name!r} is longer than the {limit} bytes a file name "
            "may have; give a shorter one with -o"
        )
    sequence = job.output_kind == "sequence"
    check_spares_inputs(
        job.output.parent if sequence else job.output, [job.input, *read],
        folder=job.output_kind in ("folder", "sequence"),
    )  # fmt: skip
    if kind != "image" and job.output_kind == "image":
        raise InputError(
            f"{job.input} has several frames: write them to a folder or a video, "
            f"not to the image {job.output.name}"
        )
    if kind == "image" and job.output_kind == "video":
        raise InputError(f"{job.input} is a single image: write it to an image or a folder")
    if job.output_kind == "video":
        options.check_video(job.output, job.source.info.width, job.source.info.height)
    if sequence and FramePattern.parse(job.output).files():
        if not (options.overwrite or options.resume):
            raise InputError(
                f"{job.output.parent} already holds frames named like {job.output.name}; pass "
                "--resume to finish them or --overwrite to replace them"
            )
    elif job.output.exists():
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
        else:
            job.planned = FileStamp.of(job.output)
    _check_writable(job.output if job.output_kind != "folder" else job.output / "frame.png")


def is_clip(source: Source) -> bool:
    """Whether a source's frames follow each other in time: a video, or a folder of several
    frames (a single image, or a folder holding one, is not)."""
    return source.info.kind != "image" and source.info.frame_count != 1
