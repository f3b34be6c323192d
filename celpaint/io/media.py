"""Finding ffmpeg and probing clips with it (no ffprobe needed).

ffmpeg is looked up in this order: an explicit path (``--ffmpeg``), ``CELPAINT_FFMPEG``, ``ffmpeg``
on ``PATH``, and the binary bundled in the ``imageio-ffmpeg`` wheel.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from celpaint.errors import InputError, ProcessingError

log = logging.getLogger("celpaint")

# The standard NTSC-family rates are stored rounded by many containers; snapping recovers them.
_NTSC_BASES = (24, 30, 48, 60, 120)


def find_ffmpeg(explicit: str | os.PathLike | None = None) -> str:
    """Path of the ffmpeg binary to use.

    Raises:
        InputError: when an explicit path or ``CELPAINT_FFMPEG`` names a missing binary.
        ProcessingError: when no ffmpeg can be found at all.
    """
    for origin, candidate in (("--ffmpeg", explicit), ("CELPAINT_FFMPEG", _env_ffmpeg())):
        if candidate:
            found = shutil.which(str(candidate))
            if not found:
                raise InputError(f"{origin} names {candidate}, which is not an executable ffmpeg")
            return found
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        raise ProcessingError(
            f"no ffmpeg found ({error}); install imageio-ffmpeg or put ffmpeg on PATH"
        ) from None


def _env_ffmpeg() -> str | None:
    return os.environ.get("CELPAINT_FFMPEG") or None


@dataclass
class AudioStream:
    index: int
    codec: str
    description: str


@dataclass
class MediaInfo:
    """What celpaint needs to know about a clip.

    Attributes:
        fps: the exact frame rate (30000/1001 stays 30000/1001).
        frame_count: number of video frames (packets of the first video stream).
        width, height: display size of the frames ffmpeg decodes (rotation applied).
        duration: container duration in seconds, if known.
        audio: every audio stream of the file.
        variable_frame_rate: True when frame intervals differ beyond timestamp rounding.
        codec: the video stream's codec as ffmpeg names it (``h264``, ``prores``, ...).
        pix_fmt: the video stream's pixel format as ffmpeg decodes it (``yuv422p10le``, ...);
            empty when ffmpeg does not say.
    """

    path: Path
    fps: Fraction
    frame_count: int
    width: int
    height: int
    duration: float | None = None
    codec: str = ""
    audio: list[AudioStream] = field(default_factory=list)
    variable_frame_rate: bool = False
    pix_fmt: str = ""


_VIDEO_STREAM = re.compile(r"Stream #0:(\d+)[^:]*: Video: (\w+)(.*)")
_AUDIO_STREAM = re.compile(r"Stream #0:(\d+)[^:]*: Audio: (\w+)(.*)")
_SIZE = re.compile(r"[ ,](\d{1,6})x(\d{1,6})[ ,\[]")
_RATE = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")


def run_ffmpeg(args: list[str], ffmpeg: str | None = None, timeout: float | None = None):
    """Run ffmpeg with an argument list; returns the CompletedProcess (bytes output)."""
    command = [find_ffmpeg(ffmpeg), "-hide_banner", "-nostdin", *args]
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except OSError as error:
        raise ProcessingError(f"could not run ffmpeg ({command[0]}): {error}") from None


def probe(
    path: str | os.PathLike, ffmpeg: str | None = None, audio_only: bool = False
) -> MediaInfo:
    """Read a clip's frame rate, frame count, size and audio streams.

    Args:
        audio_only: only the audio streams are wanted (``--audio-from``): any file with
            audio or video is accepted, a song too, and its video is not scanned; the info has
            no frames, fps 0 and size 0x0, and only ``audio`` and ``duration`` are read.

    Raises:
        InputError: the file is missing, not a video, corrupt or has no video frames.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    # "-i" alone makes ffmpeg describe the input and exit with an error (no output given);
    # the description on stderr is all we need from this call.
    header = run_ffmpeg(["-i", str(path.absolute())], ffmpeg).stderr.decode("utf-8", "replace")
    video = _VIDEO_STREAM.search(header)
    audio = [
        AudioStream(int(m.group(1)), m.group(2), m.group(0).strip())
        for m in _AUDIO_STREAM.finditer(header)
    ]
    duration = None
    if match := _DURATION.search(header):
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if audio_only and (audio or video):
        return MediaInfo(path, Fraction(0), 0, 0, 0, duration=duration, audio=audio)
    if not video:
        if audio:
            raise InputError(f"{path} has no video stream (audio only); nothing to colorize")
        reason = _last_error_line(header, path)
        raise InputError(f"{path} is not a video celpaint can read ({reason})")
    details = video.group(3)
    size = _SIZE.search(" " + details + " ")
    if not size:
        raise InputError(f"{path}: ffmpeg reports no frame size for the video stream")
    width, height = int(size.group(1)), int(size.group(2))
    rotation = _ROTATION.search(header[video.end() :])
    if rotation and round(abs(float(rotation.group(1)))) % 180 == 90:
        width, height = height, width

    timestamps, time_base = _packet_timestamps(path, ffmpeg)
    if not timestamps:
        raise InputError(f"{path} has no video frames")
    header_rate = None
    if rate := _RATE.search(details):
        header_rate = float(rate.group(1)) * (1000 if rate.group(2) else 1)
    fps, variable = _frame_rate(timestamps, time_base, header_rate)
    return MediaInfo(
        path=path,
        fps=fps,
        frame_count=len(timestamps),
        width=width,
        height=height,
        duration=duration,
        codec=video.group(2),
        pix_fmt=_pixel_format(details),
        audio=audio,
        variable_frame_rate=variable,
    )


def _pixel_format(details: str) -> str:
    """The pixel format in ffmpeg's description of a video stream: the second of its
    comma-separated fields (``prores (HQ) (apch / 0x...), yuv422p10le(tv, bt709), 64x48``),
    commas inside parentheses aside."""
    fields, depth, current = [], 0, ""
    for char in details:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    if len(fields) < 2:
        return ""
    match = re.match(r"\s*([a-z][a-z0-9_]*)", fields[1])
    return match.group(1) if match else ""


@functools.cache
def available_encoders(ffmpeg: str | None = None) -> frozenset[str]:
    """The names of the encoders ``ffmpeg`` has (``ffmpeg -encoders``), e.g. ``libx265``;
    empty when it cannot say."""
    result = run_ffmpeg(["-encoders"], ffmpeg)
    names = set()
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        # " V....D libx264    libx264 H.264 / AVC ...": flags, name, description.
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS" and "=" not in line:
            names.add(parts[1])
    return frozenset(names)


def _last_error_line(stderr: str, path: Path) -> str:
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and "At least one output file" not in line
    ]
    if not lines:
        return "ffmpeg found no streams"
    line = lines[-1]
    return line.replace(str(path), path.name).lstrip(": ")


def _packet_timestamps(path: Path, ffmpeg: str | None) -> tuple[list[int], Fraction]:
    # Copying the stream into ffmpeg's framecrc muxer lists every packet's timestamps without
    # decoding, which is fast even for a full episode and gives the exact time base.
    args = ["-loglevel", "error", "-i", str(path.absolute()), "-map", "0:v:0", "-c", "copy"]
    result = run_ffmpeg([*args, "-f", "framecrc", "-"], ffmpeg)
    time_base = Fraction(1, 1)
    pts: list[int] = []
    for line in result.stdout.decode("ascii", "replace").splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            time_base = Fraction(int(num), int(den))
        elif line and not line.startswith("#"):
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 4 and parts[2].lstrip("-").isdigit():
                pts.append(int(parts[2]))
    if result.returncode != 0 and not pts:
        stderr = result.stderr.decode("utf-8", "replace")
        raise InputError(f"{path} is corrupt or truncated ({_last_error_line(stderr, path)})")
    return sorted(pts), time_base


def _frame_rate(
    pts: list[int], time_base: Fraction, header_rate: float | None
) -> tuple[Fraction, bool]:
    """Exact frame rate from packet timestamps, and whether the clip is variable-rate."""
    if len(pts) < 2:
        return snap_frame_rate(header_rate or 25.0), False
    steps = [b - a for a, b in zip(pts, pts[1:], strict=False) if b > a]
    if not steps:
        return snap_frame_rate(header_rate or 25.0), False
    if min(steps) == max(steps):
        return 1 / (steps[0] * time_base), False
    mean_step = Fraction(pts[-1] - pts[0], len(pts) - 1) * time_base
    # Millisecond time bases (mkv, webm) alternate 33 and 34 ticks at 29.97 fps; only a spread
    # larger than one tick plus rounding means the frame rate really varies.
    tick = float(time_base)
    variable = (max(steps) - min(steps)) * tick > max(2 * tick, 0.1 * float(mean_step))
    measured = 1 / float(mean_step)
    # ffmpeg's header rate is the stream's nominal rate rounded to two decimals: more precise
    # than a mean over rounded timestamps, so it decides between e.g. 29.97 and 30.
    if header_rate and abs(header_rate - measured) < 0.01 * measured:
        return snap_frame_rate(header_rate), variable
    return snap_frame_rate(measured), variable


def snap_frame_rate(fps: float) -> Fraction:
    """The rational frame rate nearest to ``fps`` among the common ones, else a close fraction."""
    for base in _NTSC_BASES:
        ntsc = Fraction(base * 1000, 1001)
        if abs(fps - float(ntsc)) < 0.006:
            return ntsc
    if abs(fps - round(fps)) < 0.006:
        return Fraction(round(fps))
    return Fraction(fps).limit_denominator(1001)


def parse_frame_rate(text: str) -> Fraction:
    """Parse ``--fps`` text: ``24``, ``23.976``, ``24000/1001``."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise InputError(f"--fps {text!r} is not a frame rate; use e.g. 24 or 24000/1001") from None
    if value <= 0 or value > 1000:
        raise InputError(f"--fps {text!r} is out of range (0, 1000]")
    if "." in text:
        # "23.976" and "29.97" mean the NTSC rates, which decimals cannot write exactly.
        value = snap_frame_rate(float(value))
    return value
