"""Where frames go: a video, a folder of frames, a numbered image sequence or one image,
behind one ``Sink`` protocol.

A sink receives uint8 RGB ``(H, W, 3)`` frames in order with their output names and makes its
output appear only when complete (``close``); ``abort`` removes what an interrupted run left.
``EncodeOptions`` holds every option of how outputs are written, and is checked here, once.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from celpaint.errors import InputError
from celpaint.io.frames import (
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    SIXTEEN_BIT_EXTENSIONS,
    FileStamp,
    image_bit_depth,
    remove_stale_temporaries,
    temporary_path,
    to_16_bits,
    write_image,
)
from celpaint.io.media import MediaInfo
from celpaint.io.sources import SourceInfo
from celpaint.io.video import (
    CODECS,
    WRITABLE_EXTENSIONS,
    VideoWriter,
    check_codec,
    check_encoder_option,
    check_preset,
    video_encoding,
)

log = logging.getLogger("celpaint")

OutputKind = Literal["video", "folder", "sequence", "image"]
# The frame rate of a frame folder written as a video when none is given.
DEFAULT_FOLDER_FPS = Fraction(24)


@dataclass
class EncodeOptions:
    """How outputs are written (what is colorized is
    ``celpaint.pipeline.colorizer.ColorizeOptions``'s business).

    Attributes:
        overwrite: replace existing outputs.
        resume: for frame-folder and sequence outputs, skip frames whose file already exists
            (video and image outputs that exist are complete: planning skips them,
            ``pipeline.jobs``).
        crf: quality of H.264, H.265 and VP9, 0..51 (lower is better); other codecs ignore it.
        preset: H.264/H.265 speed preset (see ``VideoWriter``); other codecs ignore it.
        lossless: bit-exact video output.
        fps: frame rate for frame-folder inputs written as video (default 24).
        audio_from: clip whose audio goes into video outputs; by default a video input's own.
        keep_audio: copy the input's audio into video outputs.
        ffmpeg: ffmpeg binary; found automatically when None.
        codec: video codec (``io.video.CODECS``: h264, h265, prores, prores_4444, dnxhr, ffv1,
            vp9); None: the container's default (H.264; VP9 for .webm). Checked against each
            video output's container when the work is planned.
        pix_fmt: pixel format of video outputs (one of the codec's); None: the codec's default.
        encoder_options: ``(KEY, VALUE)`` pairs passed to the video encoder as ``-KEY:v VALUE``
            (``io.video.check_encoder_option``).
        image_format: ``png``, ``tif`` or ``jpg``: the format of frame-folder outputs (and of
            image outputs named after their input). Images and sequences named with ``-o`` take
            the format of their extension.
        start_number: the number of the first frame of a ``%0Nd`` sequence output.

    Raises:
        InputError: an option out of range or unknown, a pixel format the codec does not
            take, a bad encoder option (on construction).
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
    codec: str | None = None
    pix_fmt: str | None = None
    encoder_options: tuple[tuple[str, str], ...] = ()
    image_format: str = "png"
    start_number: int = 1

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf must be within 0..51, got {self.crf}")
        check_codec(self.codec, self.pix_fmt, self.lossless)
        self.encoder_options = tuple((str(k), str(v)) for k, v in self.encoder_options)
        for key, _ in self.encoder_options:
            check_encoder_option(key)
        if self.image_format not in IMAGE_FORMATS:
            raise InputError(
                f"--image-format {self.image_format!r} is unknown; use one of "
                f"{', '.join(IMAGE_FORMATS)}"
            )
        if self.start_number < 0:
            raise InputError(f"--start-number must be 0 or more, got {self.start_number}")

    @property
    def image_suffix(self) -> str:
        """The extension of frames written into folders (``image_format``)."""
        return IMAGE_FORMATS[self.image_format]

    def check_video(self, path: Path, width: int, height: int) -> None:
        """Check, before any work, that a ``width`` x ``height`` video at ``path`` can be
        written with these options (``io.video.video_encoding``: container, codec, pixel
        format, size, the encoders of ``ffmpeg``); raises ``InputError``."""
        video_encoding(
            path, width, height, self.ffmpeg, crf=self.crf, lossless=self.lossless,
            preset=self.preset, codec=self.codec, pix_fmt=self.pix_fmt,
            encoder_options=self.encoder_options,
        )  # fmt: skip

    def video_suffix(self, suffix: str) -> str:
        """The container of a video output named after an input of extension ``suffix``: the
        input's own where celpaint writes it and it holds ``codec``, else the codec's first
        container (MP4 without ``codec``)."""
        suffix = suffix.lower()
        if self.codec is None:
            return suffix if suffix in WRITABLE_EXTENSIONS else ".mp4"
        containers = CODECS[self.codec].containers
        return suffix if suffix in containers else containers[0]


@dataclass(frozen=True)
class FramePattern:
    """A numbered image sequence output such as ``seq/shot_%04d.png`` (``%d``: no padding).

    Attributes:
        folder: where the images go.
        prefix, rest: the file name before and after the number (``rest`` ends with the
            image extension).
        width: the number's least digits (zero-padded).
    """

    folder: Path
    prefix: str
    width: int
    rest: str

    _FORM = re.compile(r"^(?P<prefix>[^%]*)%(?P<width>0[1-9][0-9]?)?d(?P<rest>[^%]*)$")

    @classmethod
    def parse(cls, path: Path) -> FramePattern:
        """The pattern of ``path``.

        Raises:
            InputError: not exactly one ``%d`` or ``%0Nd`` in the name, a ``%`` in a folder
                name, or no image extension after the number.
        """
        match = cls._FORM.match(path.name)
        if match is None or "%" in str(path.parent):
            raise InputError(
                f"{path}: a numbered image sequence is named with one %d or %0Nd in the file "
                "name, e.g. frames/%04d.png (other % forms are not taken)"
            )
        rest = match["rest"]
        if "." not in rest or "." + rest.rpartition(".")[2].lower() not in IMAGE_EXTENSIONS:
            raise InputError(
                f"{path.name}: a sequence needs an image extension after the number "
                f"({', '.join(IMAGE_EXTENSIONS)})"
            )
        width = int(match["width"]) if match["width"] else 0
        return cls(path.parent, match["prefix"], width, rest)

    @property
    def suffix(self) -> str:
        # Not Path(rest).suffix: after "%04d" the rest may be just ".png", which Path takes
        # for a hidden file without a suffix.
        return "." + self.rest.rpartition(".")[2].lower()

    def path(self, number: int) -> Path:
        """The file of frame ``number``."""
        return self.folder / f"{self.prefix}{number:0{self.width}d}{self.rest}"

    def matches(self, name: str) -> bool:
        """Whether a file name is one of this sequence's (any number)."""
        form = re.escape(self.prefix) + r"\d+" + re.escape(self.rest)
        return re.fullmatch(form, name) is not None

    def files(self) -> list[Path]:
        """The files of this sequence that exist."""
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if self.matches(p.name) and p.is_file()]


def output_kind(path: Path) -> OutputKind:
    """What an output path asks for: a video (a video extension), an image (an image
    extension), a numbered sequence (``%0Nd`` in the name, ``FramePattern``) or a folder (no
    extension, or a folder that exists).

    Raises:
        InputError: an extension celpaint does not write, or a malformed ``%`` pattern; the
            message lists the formats.
    """
    if "%" in path.name:
        FramePattern.parse(path)
        return "sequence"
    suffix = path.suffix.lower()
    if suffix in WRITABLE_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if not suffix or path.is_dir():
        return "folder"
    raise InputError(
        f"{path.name}: celpaint does not write {suffix} files; use a video "
        f"({' '.join(WRITABLE_EXTENSIONS)}), an image ({' '.join(IMAGE_EXTENSIONS)}), a "
        "numbered sequence such as frames/%04d.png, or a name without an extension for a "
        "folder of frames"
    )


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
        sixteen_bit: write 16 bits per channel (PNG or TIFF; ``frames.to_16_bits``).
    """

    def __init__(self, path: Path, replace: bool | FileStamp = False, sixteen_bit: bool = False):
        self.path = path
        self.replace = replace
        self.sixteen_bit = sixteen_bit
        self.frames_written = 0

    def is_done(self, name: str) -> bool:
        return False

    def write(self, name: str, rgb: np.ndarray) -> None:
        write_image(self.path, to_16_bits(rgb) if self.sixteen_bit else rgb, self.replace)
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
    """Frames as image files named after the input frames, one atomic write each.

    Args:
        folder: the output folder (created if missing).
        resume: when True, frames whose file already exists are reported as done.
        suffix: the image extension, which picks the format (``.png``, ``.tif``, ``.jpg``).
        overwrite: replace frames that exist, and once every frame is in place remove the
            folder's other frames of this kind (an earlier output's); other files stay.
            Without it a frame file that appears during the run is never replaced.
        sixteen_bit: write 16 bits per channel (PNG or TIFF; ``frames.to_16_bits``).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        resume: bool = False,
        suffix: str = ".png",
        overwrite: bool = False,
        sixteen_bit: bool = False,
    ):
        self.folder = Path(folder)
        self.resume = resume
        self.suffix = suffix
        self.overwrite = overwrite
        self.sixteen_bit = sixteen_bit
        self.frames_written = 0
        self._files: set[str] = set()  # the frames of this output, written or found done
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, name: str) -> Path:
        return self.folder / f"{name}{self.suffix}"

    def glob(self) -> str:
        """A glob of the names of this output's frames."""
        return f"*{self.suffix}"

    def is_frame(self, file_name: str) -> bool:
        """Whether a file in the folder is a frame of this kind (``--overwrite`` clears them)."""
        return file_name.endswith(self.suffix) and not file_name.startswith(".")

    def is_done(self, name: str) -> bool:
        path = self.path_for(name)
        done = self.resume and path.is_file()
        if done:
            self._files.add(path.name)
        return done

    def claim(self, names: Iterable[str]) -> None:
        """Count the frames ``names`` as this output's although another writer wrote them
        (the other parts of a sharded run): ``close`` with ``overwrite`` keeps them."""
        self._files.update(self.path_for(name).name for name in names)

    def write(self, name: str, rgb: np.ndarray) -> None:
        path = self.path_for(name)
        write_image(path, to_16_bits(rgb) if self.sixteen_bit else rgb, self.overwrite)
        self._files.add(path.name)
        self.frames_written += 1

    def close(self) -> Path:
        if self.overwrite:
            # Only now that every new frame is in place: an interrupted run keeps the old
            # output's frames that it had not replaced yet.
            for path in self.folder.iterdir():
                if (
                    self.is_frame(path.name)
                    and path.name not in self._files
                    and path.is_file()
                    and not path.is_symlink()
                ):
                    path.unlink(missing_ok=True)
        return self.folder

    def abort(self) -> None:
        # This run's temporaries only: another run may be writing into the same folder.
        mark = temporary_path(self.folder / self.glob()).name
        for temp in self.folder.iterdir():
            if fnmatch.fnmatchcase(temp.name, mark):
                temp.unlink(missing_ok=True)
        if self._created and self.frames_written == 0:
            # Nothing of this run's output at its path: a folder it made and left empty.
            with contextlib.suppress(OSError):
                self.folder.rmdir()


class SequenceSink(FolderSink):
    """Frames as a numbered image sequence (``FramePattern``), numbered in input order from
    ``start_number``; otherwise a ``FolderSink`` (resume, overwrite, atomic frames)."""

    def __init__(
        self,
        pattern: FramePattern,
        start_number: int = 1,
        resume: bool = False,
        overwrite: bool = False,
        sixteen_bit: bool = False,
    ):
        super().__init__(pattern.folder, resume, pattern.suffix, overwrite, sixteen_bit)
        self.pattern = pattern
        self.start_number = start_number
        # Input frame name -> its number; the engine asks about every frame in order.
        self._numbers: dict[str, int] = {}

    def path_for(self, name: str) -> Path:
        number = self._numbers.setdefault(name, self.start_number + len(self._numbers))
        return self.pattern.path(number)

    def glob(self) -> str:
        return f"{self.pattern.prefix}*{self.pattern.rest}"

    def is_frame(self, file_name: str) -> bool:
        return self.pattern.matches(file_name)


def open_sink(
    output: Path,
    kind: OutputKind,
    info: SourceInfo,
    options: EncodeOptions,
    planned: FileStamp | None = None,
    metadata: dict[str, str] | None = None,
) -> Sink:
    """The sink writing ``output`` (of ``kind``) for a source described by ``info``.

    A video takes ``options.fps`` or the source's frame rate (24 for a frame folder, with a
    warning) and the audio of ``options.audio_from``, else the source's own unless
    ``options.keep_audio`` is off, in ``options.codec`` and ``options.pix_fmt``. A folder
    takes ``options.image_format``, a sequence its pattern's format numbered from
    ``options.start_number``; both, and images, keep 16 bits per channel where the input
    image had them (PNG and TIFF, ``_keeps_16_bits``). Temporary files of killed runs of
    ``output`` are removed first (``frames.remove_stale_temporaries``).

    Args:
        planned: the file at ``output`` when the work was planned; with ``options.overwrite``
            that version, and only that, is replaced. A video or image output never replaces
            anything else, such as a file another program created there meanwhile.
        metadata: container tags of a video output (``VideoWriter``).
    """
    if kind in ("folder", "sequence"):
        pattern = FramePattern.parse(output) if kind == "sequence" else None
        folder = pattern.folder if pattern is not None else output
        suffix = pattern.suffix if pattern is not None else options.image_suffix
        remove_stale_temporaries(folder)
        if options.resume and info.kind == "image":
            log.info("--resume has no effect on a single image")
        sixteen_bit = _keeps_16_bits(info, suffix)
        if pattern is not None:
            return SequenceSink(
                pattern, options.start_number, options.resume, options.overwrite, sixteen_bit
            )
        return FolderSink(output, options.resume, suffix, options.overwrite, sixteen_bit)
    remove_stale_temporaries(output.parent, output)
    replace = planned if options.overwrite and planned is not None else False
    if kind == "image":
        return ImageSink(output, replace, _keeps_16_bits(info, output.suffix.lower()))
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
        metadata=metadata,
        codec=options.codec,
        pix_fmt=options.pix_fmt,
        encoder_options=options.encoder_options,
    )
    return VideoSink(writer)


def _keeps_16_bits(info: SourceInfo, suffix: str) -> bool:
    """Whether an image output of ``suffix`` is written with 16 bits per channel: when the
    input's (first) image has them and the format holds them. The frames are colorized at 8
    bits per channel (``frames.read_image``), so the 16-bit output keeps the input's depth,
    not its finer steps (README, "What is kept exactly")."""
    if suffix not in SIXTEEN_BIT_EXTENSIONS or info.kind == "video" or not info.paths:
        return False
    if image_bit_depth(info.paths[0]) != 16:
        return False
    log.info("%s has 16 bits per channel: the output is written with 16 too", info.path.name)
    return True
