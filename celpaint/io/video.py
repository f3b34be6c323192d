"""Streaming video IO over ffmpeg ``rawvideo`` pipes.

Frames travel as uint8 RGB arrays of shape ``(H, W, 3)``. Memory is bounded by what the caller
holds, never by the clip length, and no frame touches the disk.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from celpaint.errors import InputError, ProcessingError
from celpaint.io.frames import FileStamp, publish, temporary_path
from celpaint.io.media import MediaInfo, find_ffmpeg, probe

log = logging.getLogger("celpaint")

WRITABLE_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif")

# Audio codecs each container takes as they are; anything else is re-encoded.
_AUDIO_COPY_OK = {
    ".mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    ".m4v": {"aac", "mp3", "alac", "ac3", "eac3"},
    ".mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"},
    ".mkv": None,  # Matroska holds any codec.
    ".webm": {"opus", "vorbis"},
    ".avi": {"mp3", "ac3", "pcm_s16le", "pcm_u8"},
}
_AUDIO_FALLBACK = {
    ".mp4": ["aac", "-b:a", "192k"],
    ".m4v": ["aac", "-b:a", "192k"],
    ".mov": ["aac", "-b:a", "192k"],
    ".mkv": ["flac"],
    ".webm": ["libopus", "-b:a", "160k"],
    ".avi": ["libmp3lame", "-b:a", "192k"],
}


class _StderrTail:
    """Drains a pipe in a thread (so ffmpeg never blocks on it) and keeps its last lines."""

    def __init__(self, pipe, lines: int = 20):
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            text = raw.decode("utf-8", "replace").strip()
            if text:
                self._lines.append(text)
        pipe.close()

    def text(self) -> str:
        self._thread.join(timeout=5)
        return " | ".join(self._lines)


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a kill that does not land
        pass


class VideoReader:
    """Decode the first video stream of a clip into RGB frames.

    Args:
        path: the clip.
        ffmpeg: ffmpeg binary (see ``find_ffmpeg``).
        info: a ``MediaInfo`` already probed, to skip probing again.
        start, stop: read only the frames of index ``start`` (0-based, presentation order)
            up to ``stop`` (excluded; None: to the end). Frames are counted, never found by
            timestamp: ffmpeg decodes the frames before ``start`` and drops them before any
            conversion to RGB.

    Iterating yields uint8 arrays ``(height, width, 3)``, RGB, in presentation order; every
    decoded frame is passed through once (no frames dropped or duplicated for timing).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        ffmpeg: str | None = None,
        info: MediaInfo | None = None,
        start: int = 0,
        stop: int | None = None,
    ):
        if start < 0 or (stop is not None and stop <= start):
            raise ValueError(f"not a frame range: {start}..{stop}")
        self.path = Path(path)
        self.ffmpeg = find_ffmpeg(ffmpeg)
        self.info = info or probe(self.path, self.ffmpeg)
        self.start, self.stop = start, stop
        self.frames_read = 0
        self._process: subprocess.Popen | None = None
        self._stderr: _StderrTail | None = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        width, height = self.info.width, self.info.height
        frame_bytes = width * height * 3
        command = [
            self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
            "-i", str(self.path.absolute()),
            "-map", "0:v:0", "-an", "-sn", "-dn",
            "-fps_mode", "passthrough",
            *self._range_args(),
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ]  # fmt: skip
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as error:
            raise ProcessingError(f"could not start ffmpeg ({self.ffmpeg}): {error}") from None
        self._stderr = _StderrTail(self._process.stderr)
        stdout = self._process.stdout
        try:
            while True:
                data = stdout.read(frame_bytes)
                if not data:
                    break
                if len(data) < frame_bytes:
                    log.warning(
                        "%s: the last frame is incomplete and was dropped (truncated file?)",
                        self.path.name,
                    )
                    break
                self.frames_read += 1
                yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
            returncode = self._process.wait()
        finally:
            self.close()
        errors = self._stderr.text()
        if returncode != 0 and self.frames_read == 0:
            raise InputError(f"{self.path} could not be decoded ({errors or 'ffmpeg failed'})")
        if self.frames_read == 0:
            raise InputError(f"{self.path} has no video frames")
        expected = min(self.stop or self.info.frame_count, self.info.frame_count) - self.start
        if returncode != 0 or (errors and self.frames_read < expected):
            log.warning(
                "%s: decoded %d of %d frames; the file looks corrupt or truncated (%s)",
                self.path.name,
                self.frames_read,
                self.info.frame_count,
                errors or "ffmpeg failed",
            )

    def _range_args(self) -> list[str]:
        """ffmpeg's output options that keep frames ``start``..``stop`` only: ``select`` counts
        the decoded frames (``n``), ``-frames:v`` ends the decoding after the last one."""
        args = ["-vf", f"select=gte(n\\,{self.start})"] if self.start else []
        if self.stop is not None:
            args += ["-frames:v", str(self.stop - self.start)]
        return args

    def close(self) -> None:
        if self._process is not None:
            if self._process.stdout:
                self._process.stdout.close()
            _terminate(self._process)


# x264's speed presets, fastest first.
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


def check_preset(preset: str) -> None:
    """Raise ``InputError`` unless ``preset`` is one of ``X264_PRESETS``."""
    if preset not in X264_PRESETS:
        raise InputError(f"--preset {preset!r} is unknown; use one of {', '.join(X264_PRESETS)}")


def _video_codec_args(
    suffix: str, width: int, height: int, crf: int, lossless: bool, preset: str
) -> tuple[list[str], str | None]:
    """Encoder arguments for a container, and a note when the pixel format had to change."""
    odd = width % 2 or height % 2
    note = None
    if suffix == ".gif":
        # A palette made from the whole clip looks far better than GIF's default palette.
        filters = "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a"
        return ["-vf", filters, "-c:v", "gif"], None
    if lossless:
        if suffix == ".webm":
            return ["-c:v", "libvpx-vp9", "-lossless", "1", "-pix_fmt", "gbrp"], None
        if suffix == ".avi":
            return ["-c:v", "ffv1", "-pix_fmt", "bgr0"], None
        return ["-c:v", "libx264rgb", "-qp", "0", "-preset", preset, "-pix_fmt", "rgb24"], None
    pix_fmt = "yuv420p"
    if odd:
        # 4:2:0 subsampling needs even sizes; 4:4:4 keeps the exact size at some player risk.
        pix_fmt = "yuv444p"
        note = f"{width}x{height} is odd-sized, so the video uses yuv444p (some players lack it)"
    if suffix == ".webm":
        return ["-c:v", "libvpx-vp9", "-crf", str(crf), "-b:v", "0", "-pix_fmt", pix_fmt], note
    args = ["-c:v", "libx264", "-crf", str(crf), "-preset", preset, "-pix_fmt", pix_fmt]
    if suffix in (".mp4", ".m4v", ".mov"):
        args += ["-movflags", "+faststart"]
    return args, note


def _audio_args(suffix: str, audio_info: MediaInfo | None) -> tuple[list[str], str | None]:
    if audio_info is None or not audio_info.audio:
        return [], None
    if suffix == ".gif":
        return [], "GIF has no audio: the audio of the source is left out"
    args = ["-map", "1:a"]
    allowed = _AUDIO_COPY_OK[suffix]
    reencoded = []
    for position, stream in enumerate(audio_info.audio):
        if allowed is None or stream.codec in allowed:
            args += [f"-c:a:{position}", "copy"]
        else:
            codec, *options = _AUDIO_FALLBACK[suffix]
            args += [f"-c:a:{position}", codec, *options]
            reencoded.append(stream.codec)
    note = None
    if reencoded:
        note = (
            f"{suffix} cannot hold {', '.join(sorted(set(reencoded)))} audio: re-encoded as "
            f"{_AUDIO_FALLBACK[suffix][0]}"
        )
    return args, note


def partial_path(target: Path) -> Path:
    """The temporary file a video is written to before it is renamed to ``target``
    (``frames.temporary_path``: hidden, named after it and this process)."""
    return temporary_path(target)


class VideoWriter:
    """Encode RGB frames into a video, atomically.

    The video is written to a hidden temporary file beside ``path`` and renamed to ``path``
    only when ``close()`` succeeds; on error, interrupt or ``abort()`` the temporary file is
    deleted and nothing appears at ``path``. The rename replaces only what ``replace`` allows
    (``frames.publish``).

    Args:
        path: the video to create (its extension picks the container and codec).
        width, height: frame size; every written frame must match.
        fps: the exact frame rate.
        audio_from: a clip whose audio streams are all copied (re-encoded only where the
            container cannot hold the codec).
        crf: quality for lossy codecs (lower is better; 18 is visually lossless for H.264).
        lossless: bit-exact RGB output (H.264 RGB at qp 0, VP9 lossless for webm, FFV1 for avi).
        preset: x264 speed preset (``X264_PRESETS``); faster presets give larger files at
            the same ``crf``. Ignored by the VP9, FFV1 and GIF encoders.
        replace: what the finished video may replace at ``path``: anything (True), nothing
            (False: a file there makes ``close`` keep the video beside it and raise
            ``ProcessingError``) or only the file version of a ``FileStamp``.
        metadata: container-level tags to write (``-metadata KEY=VALUE``), e.g. ``comment``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        fps: Fraction,
        ffmpeg: str | None = None,
        audio_from: str | os.PathLike | MediaInfo | None = None,
        crf: int = 18,
        lossless: bool = False,
        preset: str = "medium",
        replace: bool | FileStamp = True,
        metadata: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.replace = replace
        suffix = self.path.suffix.lower()
        if suffix not in WRITABLE_EXTENSIONS:
            raise InputError(
                f"cannot write {self.path.name}: use one of {', '.join(WRITABLE_EXTENSIONS)}"
            )
        check_preset(preset)
        self.width, self.height, self.fps = width, height, Fraction(fps)
        self.ffmpeg = find_ffmpeg(ffmpeg)
        if audio_from is not None and not isinstance(audio_from, MediaInfo):
            audio_from = probe(audio_from, self.ffmpeg, audio_only=True)
        self.frames_written = 0
        self._temp = partial_path(self.path)
        codec_args, codec_note = _video_codec_args(suffix, width, height, crf, lossless, preset)
        audio_args, audio_note = _audio_args(suffix, audio_from)
        for note in (codec_note, audio_note):
            if note:
                log.warning("%s: %s", self.path.name, note)
        command = [
            self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-r", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0",
        ]  # fmt: skip
        if audio_args:
            command += ["-i", str(audio_from.path.absolute())]
        command += ["-map", "0:v:0", *audio_args, *codec_args]
        for key, value in (metadata or {}).items():
            command += ["-metadata", f"{key}={value}"]
        # Absolute paths: a name starting with "-" must not read as an ffmpeg option.
        command += ["-f", _MUXERS[suffix], str(self._temp.absolute())]
        self._command = command
        self._process: subprocess.Popen | None = None
        self._stderr: _StderrTail | None = None
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _start(self) -> None:
        try:
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            raise ProcessingError(f"could not start ffmpeg ({self.ffmpeg}): {error}") from None
        self._stderr = _StderrTail(self._process.stderr)

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 ``(height, width, 3)`` RGB frame."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 frame of shape {(self.height, self.width, 3)}, "
                f"got {frame.dtype} {frame.shape}"
            )
        if self._process is None:
            self._start()
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError):
            self.abort()
            raise ProcessingError(
                f"ffmpeg stopped while writing {self.path} ({self._stderr.text() or 'no message'})"
            ) from None
        self.frames_written += 1

    def close(self) -> Path:
        """Finish encoding and move the video into place."""
        if self._closed:
            return self.path
        if self._process is None:
            self.abort()
            raise ProcessingError(f"no frames were written to {self.path}")
        try:
            self._process.stdin.close()
        except OSError:
            pass
        returncode = self._process.wait()
        if returncode != 0:
            message = self._stderr.text()
            self.abort()
            raise ProcessingError(f"ffmpeg failed writing {self.path}: {message or returncode}")
        self._closed = True
        return publish(self._temp, self.path, self.replace)

    def abort(self) -> None:
        """Stop ffmpeg and delete the temporary file; nothing appears at ``path``."""
        self._closed = True
        if self._process is not None:
            try:
                self._process.stdin.close()
            except OSError:
                pass
            _terminate(self._process)
        self._temp.unlink(missing_ok=True)


_MUXERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".gif": "gif",
}
