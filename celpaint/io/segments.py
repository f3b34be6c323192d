"""Parts of one clip colored apart (``colorize --shard I/N``, or the ranks of a ``torchrun``
run) and joined back into one video without re-encoding.

A part is a video holding frames ``start`` to ``stop`` of a clip. What it is a part of is
recorded in its container's ``comment`` tag, as ``celpaint-part`` and one line of JSON
(``PartTag``): the part's number, how many parts there are, its frame range, the identity of
the clip (path, frame count, size, frame rate) and how it was encoded. The tag travels with
the file, wherever a render farm copies it, so ``join`` can check that a set of parts is
complete, consecutive and alike before it writes anything. The joined video is the parts'
streams copied one after the other (ffmpeg's concat demuxer, ``-c copy``) with the audio muxed
once, written to a hidden temporary file and renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from celpaint.errors import InputError, ProcessingError
from celpaint.io.frames import (
    FileStamp,
    check_spares_inputs,
    publish,
    remove_stale_temporaries,
    temporary_path,
)
from celpaint.io.media import MediaInfo, find_ffmpeg, probe, run_ffmpeg
from celpaint.io.video import MUXERS, WRITABLE_EXTENSIONS, audio_options

log = logging.getLogger("celpaint")

# The prefix of the ``comment`` tag that marks a part; the JSON follows after a space.
TAG_PREFIX = "celpaint-part"
# Containers whose streams the concat demuxer joins as they are (GIF's palette is the whole
# clip's, so its parts cannot be joined).
JOINABLE_EXTENSIONS = tuple(suffix for suffix in WRITABLE_EXTENSIONS if suffix != ".gif")


@dataclass(frozen=True)
class ClipIdentity:
    """What identifies the clip the parts come from: two parts are of one clip when its name,
    frame count, size and frame rate agree (the machines of a render farm may mount it at
    different paths).

    Attributes:
        name: its file or folder name.
        frames: its frame count; width, height: its frame size; fps: its frame rate as text
            (``30000/1001``; empty for a frame folder).
        path: its absolute path where the part was made (for messages only).
    """

    name: str
    frames: int
    width: int
    height: int
    fps: str
    path: str = field(default="", compare=False)


@dataclass(frozen=True)
class PartTag:
    """The description a part carries in its ``comment`` tag.

    Attributes:
        index: the part's number, 1..``count``.
        count: how many parts the clip was cut into.
        start, stop: the frames of the clip the part holds (0-based, ``stop`` excluded). The
            warm-up frames colored before ``start`` are not in it.
        source: the clip (``ClipIdentity``).
        encoding: how the video was encoded (container, crf, preset, lossless, fps): parts
            encoded differently cannot be joined without re-encoding.
    """

    index: int
    count: int
    start: int
    stop: int
    source: ClipIdentity
    encoding: dict

    def metadata(self) -> dict[str, str]:
        """The container tags to write (``VideoWriter``'s ``metadata``)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return {"comment": f"{TAG_PREFIX} {text}"}

    @classmethod
    def parse(cls, comment: str) -> PartTag | None:
        """The tag in a ``comment``, or None when the comment is not a part's."""
        prefix, _, text = comment.partition(" ")
        if prefix != TAG_PREFIX:
            return None
        try:
            data = json.loads(text)
            data["source"] = ClipIdentity(**data["source"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        return f"part {self.index} of {self.count} (frames {self.start}..{self.stop - 1})"


def read_part_tag(path: Path, ffmpeg: str | None = None) -> PartTag | None:
    """The ``PartTag`` of a video, or None when it has none (not made by ``--shard``)."""
    result = run_ffmpeg(
        ["-loglevel", "error", "-i", str(path.absolute()), "-f", "ffmetadata", "-"], ffmpeg
    )
    for line in _unescaped_lines(result.stdout.decode("utf-8", "replace")):
        key, _, value = line.partition("=")
        if key.lower() == "comment" and (tag := PartTag.parse(value)) is not None:
            return tag
    return None


def _unescaped_lines(text: str) -> list[str]:
    """The lines of ffmpeg's ``ffmetadata`` output with its backslash escapes (``=;#\\`` and
    newline) undone."""
    lines, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(char)
    lines.append("".join(current))
    return lines


@dataclass
class _Part:
    path: Path
    tag: PartTag
    media: MediaInfo


def check_parts(parts: Sequence[str | os.PathLike], ffmpeg: str | None = None) -> list[_Part]:
    """Read and check a set of parts; returns them in order.

    Raises:
        InputError: a file that is missing or holds no part tag; parts of different clips, cut
            differently or encoded differently; a part given twice or missing (named); parts
            that do not follow each other; a part holding fewer or more frames than its range
            (an incomplete file).
    """
    if not parts:
        raise InputError("no parts given")
    ffmpeg = find_ffmpeg(ffmpeg)
    found: list[_Part] = []
    for path in map(Path, parts):
        media = probe(path, ffmpeg)
        tag = read_part_tag(path, ffmpeg)
        if tag is None:
            raise InputError(
                f"{path} is not a part written by 'celpaint colorize --shard' (it has no "
                "celpaint-part tag)"
            )
        found.append(_Part(path, tag, media))
    first = found[0]
    for part in found[1:]:
        _check_alike(first, part)
    by_index: dict[int, _Part] = {}
    for part in found:
        if part.tag.index in by_index:
            raise InputError(
                f"{part.tag.describe()} is given twice: {by_index[part.tag.index].path} and "
                f"{part.path}"
            )
        by_index[part.tag.index] = part
    count = first.tag.count
    missing = [index for index in range(1, count + 1) if index not in by_index]
    if missing:
        names = ", ".join(map(str, missing))
        raise InputError(
            f"part{'s' if len(missing) > 1 else ''} {names} of {count} of "
            f"{first.tag.source.path} {'are' if len(missing) > 1 else 'is'} missing; color "
            f"{'them' if len(missing) > 1 else 'it'} with --shard {missing[0]}/{count} and join "
            "again"
        )
    ordered = [by_index[index] for index in range(1, count + 1)]
    _check_consecutive(ordered)
    return ordered


def _check_alike(first: _Part, part: _Part) -> None:
    what = None
    if part.tag.source != first.tag.source:
        what = f"a different clip ({part.tag.source.path}, {part.tag.source.frames} frames)"
    elif part.tag.count != first.tag.count:
        what = f"a clip cut into {part.tag.count} parts, not {first.tag.count}"
    elif part.tag.encoding != first.tag.encoding:
        what = f"a video encoded differently ({part.tag.encoding} against {first.tag.encoding})"
    if what is not None:
        raise InputError(
            f"{part.path} is {part.tag.describe()} of {what}; {first.path} is "
            f"{first.tag.describe()} of {first.tag.source.path}: join only the parts of one "
            "clip, made with the same options"
        )


def _check_consecutive(ordered: list[_Part]) -> None:
    expected = 0
    for part in ordered:
        tag = part.tag
        if tag.start != expected:
            raise InputError(
                f"{part.path} is {tag.describe()}, but the parts before it end at frame "
                f"{expected - 1}: they were cut differently; color them again with one --shard N"
            )
        if part.media.frame_count != tag.stop - tag.start:
            raise InputError(
                f"{part.path} holds {part.media.frame_count} frames, but {tag.describe()} has "
                f"{tag.stop - tag.start}: it is incomplete; color it again with --shard "
                f"{tag.index}/{tag.count}"
            )
        expected = tag.stop
    source = ordered[0].tag.source
    if expected != source.frames:
        raise InputError(
            f"the parts end at frame {expected - 1}, but {source.path} has {source.frames} frames"
        )


def join_parts(
    parts: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    audio_from: str | os.PathLike | MediaInfo | None = None,
    replace: bool | FileStamp = False,
    ffmpeg: str | None = None,
) -> Path:
    """Join the parts of one clip into ``output`` without re-encoding their video.

    Args:
        parts: the part videos, in any order (``check_parts`` orders and checks them).
        output: the video to write; its container must hold the parts' codec (the parts'
            own extension always does).
        audio_from: a clip (or its ``MediaInfo``) whose audio streams go into the output,
            copied where the container takes them (as ``VideoWriter`` does); None: no audio.
        replace: what may be replaced at ``output`` (``frames.publish``).

    Returns:
        ``output``, complete.

    Raises:
        InputError: bad parts (``check_parts``), an output that is one of them or that exists
            while ``replace`` is False, a container that cannot hold joined video.
        ProcessingError: ffmpeg failed; nothing is left at ``output``.
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in JOINABLE_EXTENSIONS:
        raise InputError(
            f"cannot join into {output.name}: use one of {', '.join(JOINABLE_EXTENSIONS)}"
        )
    ffmpeg = find_ffmpeg(ffmpeg)
    ordered = check_parts(parts, ffmpeg)
    audio = audio_from
    if audio is not None and not isinstance(audio, MediaInfo):
        audio = probe(audio, ffmpeg, audio_only=True)
    read = [part.path for part in ordered] + ([audio.path] if audio is not None else [])
    check_spares_inputs(output, read)
    if replace is False and output.exists():
        raise InputError(f"{output} already exists; pass --overwrite to replace it")
    remove_stale_temporaries(output.parent, output)
    audio_args, note = audio_options(suffix, audio)
    if note:
        log.warning("%s: %s", output.name, note)
    temp = temporary_path(output)
    with tempfile.TemporaryDirectory(prefix="celpaint-join-") as scratch:
        listing = Path(scratch) / "parts.txt"
        listing.write_text("".join(_concat_line(part.path) for part in ordered), "utf-8")
        args = ["-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
        if audio_args:
            args += ["-i", str(audio.path.absolute())]
        # The parts' tags describe parts: the joined video keeps none of the first one's.
        args += ["-map", "0:v:0", *audio_args, "-c:v", "copy", "-map_metadata", "-1"]
        if suffix in (".mp4", ".m4v", ".mov"):
            args += ["-movflags", "+faststart"]
        args += ["-f", MUXERS[suffix], str(temp.absolute())]
        try:
            result = run_ffmpeg(args, ffmpeg)
            if result.returncode != 0:
                message = result.stderr.decode("utf-8", "replace").strip().splitlines()
                raise ProcessingError(
                    f"ffmpeg failed joining the parts into {output}: "
                    f"{' | '.join(message[-5:]) or result.returncode}"
                )
            return publish(temp, output, replace)
        finally:
            temp.unlink(missing_ok=True)


def source_audio(parts: Sequence[str | os.PathLike], ffmpeg: str | None = None) -> Path | None:
    """The clip the parts were colored from, where the first part's tag says, when it is
    there and has audio; else None (with a warning when it is missing).

    Raises:
        InputError: the first part is missing or is not a part (as ``check_parts``).
    """
    if not parts:
        raise InputError("no parts given")
    first = Path(parts[0])
    probe(first, ffmpeg)
    tag = read_part_tag(first, ffmpeg)
    if tag is None:
        return None  # check_parts names the problem
    clip = Path(tag.source.path)
    if not clip.is_file():
        log.warning(
            "%s, the clip the parts were colored from, is not there: the joined video has no "
            "audio (pass --audio-from CLIP for its audio)",
            clip,
        )
        return None
    return clip if probe(clip, ffmpeg, audio_only=True).audio else None


def _concat_line(path: Path) -> str:
    # The concat demuxer's quoting: inside single quotes, a quote is written '\''.
    quoted = str(path.absolute()).replace("'", "'\\''")
    return f"file '{quoted}'\n"


def fps_text(fps: Fraction | None) -> str:
    """A frame rate as a part tag records it."""
    return "" if fps is None else f"{fps.numerator}/{fps.denominator}"
