"""Where frames go: a video, a folder of frames or one image, behind one ``Sink`` protocol.

A sink receives uint8 RGB ``(H, W, 3)`` frames in order with their output names and makes its
output appear only when complete (``close``); ``abort`` removes what an interrupted run left.
``EncodeOptions`` holds every option of how outputs are written, and is checked here, once.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from celpaint.errors import InputError
from celpaint.io.frames import (
    IMAGE_EXTENSIONS,
    FileStamp,
    remove_stale_temporaries,
    temporary_path,
    write_image,
)
from celpaint.io.media import MediaInfo
from celpaint.io.sources import SourceInfo
from celpaint.io.video import WRITABLE_EXTENSIONS, VideoWriter, check_preset

log = logging.getLogger("celpaint")

OutputKind = Literal["video", "folder", "image"]
# The frame rate of a frame folder written as a video when none is given.
DEFAULT_FOLDER_FPS = Fraction(24)


@dataclass
class EncodeOptions:
    """How outputs are written (what is colorized is
    ``celpaint.pipeline.colorizer.ColorizeOptions``'s business).

    Attributes:
        overwrite: replace existing outputs.
        resume: for frame-folder outputs, skip frames whose file already exists (video and
            image outputs that exist are complete: planning skips them, ``pipeline.jobs``).
        crf: H.264 quality, 0..51 (lower is better).
        preset: H.264 speed preset (see ``VideoWriter``).
        lossless: bit-exact video output.
        fps: frame rate for frame-folder inputs written as video (default 24).
        audio_from: clip whose audio goes into video outputs; by default a video input's own.
        keep_audio: copy the input's audio into video outputs.
        ffmpeg: ffmpeg binary; found automatically when None.

    Raises:
        InputError: ``crf`` or ``preset`` is out of range (on construction).
    """

    overwrite: bool = False
    resume: bool = False
    crf: int = 18
    preset: str = "medium"
    lossless: bool = False
    fps: Fraction | None = None
    audio_from: Path | None = None
    keep_audio: bool = True
    ffmpeg: str | None = None

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf must be within 0..51, got {self.crf}")


def output_kind(path: Path) -> OutputKind:
    """What a path asks for: a video (a writable video extension), an image (an image
    extension) or a folder (anything else)."""
    suffix = path.suffix.lower()
    if suffix in WRITABLE_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "folder"


class Sink(Protocol):
    """An output being written. ``frames_written`` counts the frames written so far."""

    frames_written: int

    def is_done(self, name: str) -> bool:
        """Whether the frame ``name`` is already in the output (``--resume``)."""

    def write(self, name: str, rgb: np.ndarray) -> None:
        """Write the next frame, uint8 RGB ``(H, W, 3)``."""

    def close(self) -> Path:
        """Finish the output and put it in place; returns its path."""

    def abort(self) -> None:
        """Stop, leaving nothing partial at the output path."""


class ImageSink:
    """One frame as one image file, written atomically.

    Args:
        replace: what may be replaced at ``path`` (``frames.publish``): by default nothing.
    """

    def __init__(self, path: Path, replace: bool | FileStamp = False):
        self.path = path
        self.replace = replace
        self.frames_written = 0

    def is_done(self, name: str) -> bool:
        return False

    def write(self, name: str, rgb: np.ndarray) -> None:
        write_image(self.path, rgb, self.replace)
        self.frames_written += 1

    def close(self) -> Path:
        return self.path

    def abort(self) -> None:
        pass


class DiscardSink:
    """Takes frames and keeps none (a pass that only analyses a source)."""

    def __init__(self) -> None:
        self.frames_written = 0

    def is_done(self, name: str) -> bool:
        return False

    def write(self, name: str, rgb: np.ndarray) -> None:
        self.frames_written += 1

    def close(self) -> Path:
        return Path(os.devnull)

    def abort(self) -> None:
        pass


class VideoSink:
    """Frames into a video through ``VideoWriter`` (a hidden temporary file renamed at the end)."""

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


class FolderSink:
    """Frames as PNG files named after the input frames, one atomic write each.

    Args:
        folder: the output folder (created if missing).
        resume: when True, frames whose file already exists are reported as done.
        overwrite: replace frames that exist, and once every frame is in place remove the
            folder's other ``suffix`` files (an earlier output's frames); other files stay.
            Without it a frame file that appears during the run is never replaced.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        resume: bool = False,
        suffix: str = ".png",
        overwrite: bool = False,
    ):
        self.folder = Path(folder)
        self.resume = resume
        self.suffix = suffix
        self.overwrite = overwrite
        self.frames_written = 0
        self._names: set[str] = set()  # the frames of this output, written or found done
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, name: str) -> Path:
        return self.folder / f"{name}{self.suffix}"

    def is_done(self, name: str) -> bool:
        done = self.resume and self.path_for(name).is_file()
        if done:
            self._names.add(name)
        return done

    def write(self, name: str, rgb: np.ndarray) -> None:
        write_image(self.path_for(name), rgb, self.overwrite)
        self._names.add(name)
        self.frames_written += 1

    def close(self) -> Path:
        if self.overwrite:
            # Only now that every new frame is in place: an interrupted run keeps the old
            # output's frames that it had not replaced yet.
            for path in self.folder.iterdir():
                if (
                    path.suffix == self.suffix
                    and not path.name.startswith(".")
                    and path.stem not in self._names
                    and path.is_file()
                    and not path.is_symlink()
                ):
                    path.unlink(missing_ok=True)
        return self.folder

    def abort(self) -> None:
        # This run's temporaries only: another run may be writing into the same folder.
        for temp in self.folder.glob(temporary_path(self.path_for("*")).name):
            temp.unlink(missing_ok=True)
        if self._created and self.frames_written == 0:
            # Nothing of this run's output at its path: a folder it made and left empty.
            with contextlib.suppress(OSError):
                self.folder.rmdir()


def open_sink(
    output: Path,
    kind: OutputKind,
    info: SourceInfo,
    options: EncodeOptions,
    planned: FileStamp | None = None,
) -> Sink:
    """The sink writing ``output`` (of ``kind``) for a source described by ``info``.

    A video takes ``options.fps`` or the source's frame rate (24 for a frame folder, with a
    warning) and the audio of ``options.audio_from``, else the source's own unless
    ``options.keep_audio`` is off. Temporary files of killed runs of ``output`` are removed
    first (``frames.remove_stale_temporaries``).

    Args:
        planned: the file at ``output`` when the work was planned; with ``options.overwrite``
            that version, and only that, is replaced. A video or image output never replaces
            anything else, such as a file another program created there meanwhile.
    """
    if kind == "folder":
        remove_stale_temporaries(output)
        if options.resume and info.kind == "image":
            log.info("--resume has no effect on a single image")
        return FolderSink(output, resume=options.resume, overwrite=options.overwrite)
    remove_stale_temporaries(output.parent, output)
    replace = planned if options.overwrite and planned is not None else False
    if kind == "image":
        return ImageSink(output, replace)
    fps = options.fps or info.fps
    if fps is None:
        fps = DEFAULT_FOLDER_FPS
        log.warning("%s has no frame rate: writing %s fps (set --fps)", info.path, fps)
    audio: Path | MediaInfo | None = options.audio_from
    if audio is None and options.keep_audio and info.media is not None and info.media.audio:
        audio = info.media
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(
        output,
        info.width,
        info.height,
        fps,
        ffmpeg=options.ffmpeg,
        audio_from=audio,
        crf=options.crf,
        lossless=options.lossless,
        preset=options.preset,
        replace=replace,
    )
    return VideoSink(writer)
