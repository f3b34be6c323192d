"""Inputs to outputs: expanding batch folders, opening every input, naming and checking every
output before any work."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celpaint.errors import InputError
from celpaint.io.frames import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    FileStamp,
    check_spares_inputs,
    is_image,
    name_fits,
)
from celpaint.io.media import find_ffmpeg
from celpaint.io.sinks import EncodeOptions, FramePattern, OutputKind, output_kind
from celpaint.io.sources import VIDEO_EXTENSIONS, FolderContents, Source, open_source, scan_folder

log = logging.getLogger("celpaint")


@dataclass
class Job:
    """One input and where its output goes.

    Attributes:
        planned: the file at ``output`` when the job was planned (``--overwrite`` replaces
            that version only); None when there was none, or for a folder output.
        done: with ``--resume``, the output (a video or image) exists and is complete, as
            outputs appear only when complete: there is nothing to do.
        error: with ``keep_going``, why the input is skipped (it could not be read, or its
            output cannot be written); ``source`` is then None.
        model: the model that colorizes it and why, for reports (set by ``colorize``).
    """

    input: Path
    output: Path
    output_kind: OutputKind
    source: Source | None = None
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    planned: FileStamp | None = None
    done: bool = False
    error: str | None = None
    model: str | None = None

    @property
    def runnable(self) -> bool:
        """Whether the job has work to do (not done earlier, not failed at planning)."""
        return not self.done and self.error is None


def _kind(path: Path) -> OutputKind:
    """What an input is, by its path alone: a folder, an image, else a video."""
    if path.is_dir():
        return "folder"
    return "image" if is_image(path) else "video"


def _output_name(
    path: Path, kind: OutputKind, options: EncodeOptions, tag: str | None = None
) -> str:
    """The name of an input's output: ``NAME_<tag>`` beside the input, or ``NAME`` (no tag) in
    a folder of outputs; a folder for a folder, an image of ``options.image_format`` for an
    image, the input's container (else ``options.video_suffix``'s) for a video."""
    name = path.name if kind == "folder" else path.stem
    if tag:
        name = f"{name}_{tag}"
    if kind == "folder":
        return name
    if kind == "image":
        return name + options.image_suffix
    return name + options.video_suffix(path.suffix)


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


def _mixed(folder: Path, contents: FolderContents) -> InputError:
    return InputError(
        f"{folder} holds both frames ({contents.images[0].name}) and videos "
        f"({contents.videos[0].name}); move the frames of each sequence into a folder of "
        "their own, then give the folder again"
    )


def batch_inputs(folder: Path, recursive: bool = False) -> list[Path] | None:
    """The inputs a batch folder holds, or None when ``folder`` is one input.

    A folder holding images is one frame sequence (None). A folder holding videos is a batch
    of clips: its videos, and with ``recursive`` every frame folder and video in its
    sub-folders, at any depth (a sub-folder holding images is one frame sequence). Hidden
    files, other files and folders holding nothing are ignored.

    Raises:
        InputError: a folder holding both frames and videos, a folder holding neither (and,
            without ``recursive``, only sub-folders: the message says to pass --recursive).
    """
    if not folder.is_dir():
        return None
    contents = scan_folder(folder)
    if contents.images and contents.videos:
        raise _mixed(folder, contents)
    if contents.images:
        return None
    inputs = _walk(folder, contents, recursive, {folder.resolve()})
    if inputs:
        if contents.folders and not recursive:
            log.warning(
                "%s: %d sub-folder(s) not walked; pass --recursive to take in what they hold",
                folder, len(contents.folders),
            )  # fmt: skip
        return inputs
    looked = ", ".join(e.lstrip(".") for e in (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS))
    if contents.folders and not recursive:
        raise InputError(
            f"{folder} holds no images or videos, only sub-folders; pass --recursive to "
            "take in the clips and frame folders inside them"
        )
    where = " in any of its sub-folders" if recursive and contents.folders else ""
    raise InputError(f"{folder} holds no images or videos{where} (looked for {looked})")


def _walk(folder: Path, contents: FolderContents, recursive: bool, seen: set[Path]) -> list:
    """``batch_inputs`` below ``folder``: its videos, then what its sub-folders hold."""
    inputs: list[Path] = list(contents.videos)
    if not recursive:
        return inputs
    for sub in contents.folders:
        key = sub.resolve()
        if key in seen:  # a link back up the tree
            continue
        seen.add(key)
        inner = scan_folder(sub)
        if inner.images and inner.videos:
            raise _mixed(sub, inner)
        inputs += [sub] if inner.images else _walk(sub, inner, True, seen)
    return inputs


def _name_outputs(
    inputs: Sequence[Path], target: Path | None, tag: str, recursive: bool, options: EncodeOptions
) -> list[Job]:
    """A job for every input (batch folders expanded), with its output's path and kind."""
    # "." or "..": named after the folder they are.
    inputs = [path if path.name else path.resolve() for path in inputs]
    batches = [batch_inputs(path, recursive) for path in inputs]
    single = len(inputs) == 1 and batches[0] is None
    if target is not None and not single and output_kind(target) != "folder":
        count = sum(1 if batch is None else len(batch) for batch in batches)
        raise InputError(
            f"{count} inputs need -o to be a folder (one output each), not {target.name}"
        )
    jobs: list[Job] = []
    for path, batch in zip(inputs, batches, strict=True):
        kind = _kind(path)
        if target is None:
            root = path.with_name(_output_name(path, kind, options, tag))
        elif len(inputs) > 1:
            root = target / _output_name(path, kind, options)
        else:
            root = target
        if batch is None:
            # A name made from an input's is of the input's kind, dots in it or not.
            jobs.append(Job(path, root, output_kind(root) if single and target else kind))
            continue
        # The batch's outputs mirror its tree under root, which must lie outside it: what
        # is written there would be read as inputs by the next run.
        if root.resolve().is_relative_to(path.resolve()):
            raise InputError(
                f"the output folder {root} is inside the batch folder {path}; choose a folder "
                "outside it (its outputs would be read as inputs next time)"
            )
        for item in batch:
            folder = root / item.parent.relative_to(path)
            item_kind = _kind(item)
            jobs.append(Job(item, folder / _output_name(item, item_kind, options), item_kind))
    return jobs


def plan(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None,
    options: EncodeOptions,
    tag: str = "color",
    max_pixels: int = MAX_PIXELS,
    recursive: bool = False,
    keep_going: bool = False,
) -> list[Job]:
    """Open every input and decide every output, checking all of them before any work starts.

    Rules: one input and ``output`` with a video extension gives a video, with an image
    extension an image, with ``%0Nd`` in its name a numbered sequence, without an extension
    a folder of frames (``sinks.output_kind``; another extension is an error). Several
    inputs need ``output`` to be a folder, which receives one output per input named after
    it. A batch folder (a folder of videos, ``batch_inputs``; with ``recursive`` a tree of
    clips and frame folders) gives a folder mirroring its tree, with one output per input in
    it. Without ``output`` each result goes beside its input as ``NAME_<tag>`` (a batch
    folder's as ``FOLDER_<tag>/``). No output may be an input of any job, or
    ``options.audio_from``, under any name (``frames.check_spares_inputs``). With
    ``options.resume`` a video or image output that exists is complete (``Job.done``) and
    its source is closed.

    Args:
        max_pixels: the largest frame read (``open_source``).
        recursive: walk the sub-folders of batch folders (``batch_inputs``).
        keep_going: an input that cannot be read, or whose output cannot be written, is
            not an error here: its job carries the reason (``Job.error``) and the others go
            on. Errors about the inputs as a whole (a mixed folder, two inputs for one
            output, ``output`` not a folder) are raised all the same.

    Raises:
        InputError: for any input that cannot be read or output that cannot be written; the
            sources opened so far are closed.
    """
    if not inputs:
        raise InputError("no input given")
    # An explicit --ffmpeg is checked here, before any work, like every other input.
    ffmpeg = find_ffmpeg(options.ffmpeg)
    options = dataclasses.replace(options, ffmpeg=ffmpeg)
    target = Path(output) if output is not None else None
    jobs = _name_outputs([Path(item) for item in inputs], target, tag, recursive, options)
    try:
        for job in jobs:
            job.encode = options
            with _failure_kept(job, keep_going):
                job.source = open_source(job.input, ffmpeg, max_pixels)
        read = [path for job in jobs if job.source for path in job.source.info.files()]
        if options.audio_from is not None:
            read.append(Path(options.audio_from))
        for job in jobs:
            if job.source is not None:
                with _failure_kept(job, keep_going):
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
            if job.source is not None:
                job.source.close()
        raise
    return jobs


@contextlib.contextmanager
def _failure_kept(job: Job, keep_going: bool) -> Iterator[None]:
    """With ``keep_going``, an ``InputError`` becomes the job's ``error`` (its source closed
    and dropped) instead of stopping the plan."""
    try:
        yield
    except InputError as error:
        if not keep_going:
            raise
        job.error = str(error)
        if job.source is not None:
            job.source.close()
            job.source = None


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
        elif options.resume:
            # Outputs appear only when complete (atomic), so one that exists is done.
            job.done = True
            job.source.close()
            return
        elif not options.overwrite:
            raise InputError(
                f"{job.output} already exists; pass --overwrite to replace it, or --resume to "
                "keep it and do only what is left"
            )
        else:
            job.planned = FileStamp.of(job.output)
    _check_writable(job.output if job.output_kind != "folder" else job.output / "frame.png")


def is_clip(source: Source) -> bool:
    """Whether a source's frames follow each other in time: a video, or a folder of several
    frames (a single image, or a folder holding one, is not)."""
    return source.info.kind != "image" and source.info.frame_count != 1
