"""One interface over the three kinds of input: a video file, a frame folder, a single image."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from celpaint.errors import InputError
from celpaint.io.frames import (
    MAX_PIXELS,
    check_pixels,
    decode_image,
    image_size,
    is_image,
    list_images,
    natural_key,
    require_regular,
)
from celpaint.io.media import MediaInfo, find_ffmpeg, probe
from celpaint.io.video import VideoReader

log = logging.getLogger("celpaint")

SourceKind = Literal["video", "folder", "image"]
# Files a batch folder's walk takes for videos (``scan_folder``); a video named on the command
# line may have any extension ffmpeg reads.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mxf", ".mts", ".m2ts", ".ts",
    ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".3gp", ".dv", ".y4m",
)  # fmt: skip


@dataclass
class SourceInfo:
    """What a source holds.

    Attributes:
        fps: exact frame rate of a video; None for folders and images.
        frame_count: number of frames (for video, counted from the packets before decoding).
        paths: the image files of a folder (in natural order) or the image itself; the frames
            are read from exactly these. Empty for a video.
        media: the probe result of a video (audio streams and so on), else None.
        first: the index in the whole clip of frame 0 of this source: a part of a clip
            (``pipeline/shard.py``) names its frames as the whole clip does.
    """

    path: Path
    kind: SourceKind
    width: int
    height: int
    frame_count: int
    fps: Fraction | None = None
    paths: list[Path] = field(default_factory=list)
    media: MediaInfo | None = None
    first: int = 0

    def name(self, index: int) -> str:
        """Output stem of the ``index``-th (0-based, from ``first``) frame: its file's stem, or
        ``frame_000001``... for the frames of a video."""
        index += self.first
        return self.paths[index].stem if index < len(self.paths) else frame_name(index)

    def files(self) -> list[Path]:
        """Every file the frames are read from: the video, or the images."""
        return self.paths if self.kind != "video" else [self.path]


def frame_name(index: int) -> str:
    """Output stem of the ``index``-th (0-based) frame of a video."""
    return f"frame_{index + 1:06d}"


class Source:
    """A readable input. Use ``open_source`` to make one."""

    def __init__(self, info: SourceInfo, ffmpeg: str | None = None):
        self.info = info
        self._ffmpeg = ffmpeg
        self._reader: VideoReader | None = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield every frame as uint8 RGB ``(height, width, 3)``, in order; or those of index
        ``start`` (0-based) up to ``stop`` (excluded), counted, as ``VideoReader`` does."""
        info = self.info
        if info.kind == "video":
            self._reader = VideoReader(info.path, self._ffmpeg, info.media, start, stop)
            yield from self._reader
            return
        transparent = 0
        for path in info.paths[start:stop]:
            frame, had_alpha = decode_image(path)
            if had_alpha and not transparent:
                log.warning("%s has transparency: composited on white", path.name)
            transparent += had_alpha
            if frame.shape[:2] != (info.height, info.width):
                raise InputError(
                    f"{path.name} is {frame.shape[1]}x{frame.shape[0]} but the other frames of "
                    f"{info.path} are {info.width}x{info.height}; all frames must have one size"
                )
            yield frame
        if transparent > 1:
            log.warning("%d frames of %s had transparency", transparent, info.path.name)

    def head(self, count: int) -> list[np.ndarray]:
        """The first ``count`` frames (fewer if the source is shorter), as ``frames`` gives
        them; the source is then read from its start again by the next ``frames``.

        Raises:
            InputError, ProcessingError: as ``frames``.
        """
        frames: list[np.ndarray] = []
        if count < 1:
            return frames
        try:
            for frame in self.frames():
                frames.append(frame)
                if len(frames) >= count:
                    break
        finally:
            self.close()
        return frames

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def open_source(
    path: str | os.PathLike, ffmpeg: str | None = None, max_pixels: int = MAX_PIXELS
) -> Source:
    """Open a video file, a folder of images or one image.

    Folders are checked up front: every image must be readable and all must share one size, so a
    bad frame is reported before any output is written. Frame sizes come from the file headers
    and the video probe, and are checked against ``max_pixels`` before anything is decoded.

    Raises:
        InputError: missing path, a named pipe, socket or device, unknown file type, empty
            folder, mixed sizes, unreadable frames, frames over ``max_pixels``.
    """
    path = Path(path)
    try:
        require_regular(path)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if path.is_dir():
        return Source(_folder_info(path, max_pixels))
    if is_image(path):
        width, height = image_size(path)
        check_pixels(path, width, height, max_pixels)
        return Source(SourceInfo(path, "image", width, height, 1, paths=[path]))
    # Anything else ffmpeg can read as a video.
    ffmpeg = find_ffmpeg(ffmpeg)
    media = probe(path, ffmpeg)
    check_pixels(path, media.width, media.height, max_pixels)
    info = SourceInfo(
        path, "video", media.width, media.height, media.frame_count, media.fps, media=media
    )
    return Source(info, ffmpeg)


@dataclass
class FolderContents:
    """What a folder holds directly (hidden files skipped; other files ignored), each list in
    natural order: ``images`` (frames), ``videos`` (``VIDEO_EXTENSIONS``), ``folders``."""

    images: list[Path]
    videos: list[Path]
    folders: list[Path]


def scan_folder(folder: Path) -> FolderContents:
    """Sort a folder's entries into frames, videos and sub-folders (``FolderContents``).

    Raises:
        InputError: the folder cannot be listed.
    """
    try:
        entries = sorted(
            (p for p in folder.iterdir() if not p.name.startswith(".")),
            key=lambda p: natural_key(p.name),
        )
    except OSError as error:
        raise InputError(f"cannot list {folder}: {error.strerror or error}") from None
    folders = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file()]
    return FolderContents(
        images=[p for p in files if is_image(p)],
        videos=[p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS],
        folders=folders,
    )


def _folder_info(folder: Path, max_pixels: int) -> SourceInfo:
    images = list_images(folder)
    if not images:
        raise InputError(
            f"{folder} holds no images (looked for png, jpg, jpeg, webp, bmp, tif, tiff)"
        )
    sizes: dict[tuple[int, int], list[str]] = {}
    for image in images:
        try:
            size = image_size(image)
        except InputError:
            raise InputError(f"{image} is not a readable image; remove or replace it") from None
        sizes.setdefault(size, []).append(image.name)
    if len(sizes) > 1:
        (common, _), *others = sorted(sizes.items(), key=lambda item: -len(item[1]))
        odd_size, odd_names = others[0]
        raise InputError(
            f"frames in {folder} differ in size: most are {common[0]}x{common[1]} but "
            f"{odd_names[0]} is {odd_size[0]}x{odd_size[1]}"
            + (f" (and {sum(len(n) for _, n in others) - 1} more)" if len(odd_names) > 1 else "")
            + "; resize them to one size first"
        )
    (width, height), _ = next(iter(sizes.items()))
    check_pixels(folder / sizes[width, height][0], width, height, max_pixels)
    names = [p.stem for p in images]
    if len(set(names)) < len(names):
        seen: set[str] = set()
        twice = next(n for n in names if n in seen or seen.add(n))
        raise InputError(
            f"{folder} holds several images named {twice!r} with different extensions; their "
            "outputs would collide, so rename one"
        )
    return SourceInfo(folder, "folder", width, height, len(images), paths=images)
