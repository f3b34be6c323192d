"""Streaming video IO over ffmpeg ``rawvideo`` pipes.

Frames travel as uint8 RGB arrays of shape ``(H, W, 3)``. Memory is bounded by what the caller
holds, never by the clip length, and no frame touches the disk.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from celpaint.errors import InputError, ProcessingError
from celpaint.io.frames import FileStamp, publish, temporary_path
from celpaint.io.media import MediaInfo, available_encoders, find_ffmpeg, probe

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
# The fallback for editing codecs (ProRes, DNxHR, FFV1), whose audio should stay lossless.
_LOSSLESS_AUDIO = {".mov": ["pcm_s24le"], ".avi": ["pcm_s16le"]}


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


# x264's speed presets, fastest first (x265 takes the same names).
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


@dataclass(frozen=True)
class VideoCodec:
    """A delivery codec celpaint writes (``--codec``).

    Attributes:
        name: celpaint's name for it.
        encoder: the ffmpeg encoder.
        containers: the video extensions that hold it, the preferred one first.
        pix_fmts: the pixel formats celpaint lets it write (``--pix-fmt``), the default first.
        uses_crf, uses_preset: whether ``--crf`` / ``--preset`` mean anything to it.
        lossless: whether ``--lossless`` can use it.
        intermediate: an editing codec: audio the container cannot copy becomes PCM (or FLAC)
            rather than a lossy codec.
        even_sizes: 4:2:0 needs an even width and height, 4:2:2 an even width (x264, x265).
        min_size: the smallest ``(width, height)`` the encoder takes.
    """

    name: str
    encoder: str
    containers: tuple[str, ...]
    pix_fmts: tuple[str, ...]
    uses_crf: bool = False
    uses_preset: bool = False
    lossless: bool = False
    intermediate: bool = False
    even_sizes: bool = False
    min_size: tuple[int, int] = (1, 1)

    @property
    def default_pix_fmt(self) -> str:
        return self.pix_fmts[0]


_YUV = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
CODECS = {
    codec.name: codec
    for codec in (
        VideoCodec("h264", "libx264", (".mp4", ".mov", ".mkv", ".m4v", ".avi"), _YUV,
                   uses_crf=True, uses_preset=True, lossless=True, even_sizes=True),
        VideoCodec("h265", "libx265", (".mp4", ".mov", ".mkv", ".m4v"), _YUV,
                   uses_crf=True, uses_preset=True, even_sizes=True),
        VideoCodec("prores", "prores_ks", (".mov", ".mkv"), ("yuv422p10le",), intermediate=True),
        VideoCodec("prores_4444", "prores_ks", (".mov", ".mkv"), ("yuv444p10le", "yuva444p10le"),
                   intermediate=True),
        VideoCodec("dnxhr", "dnxhd", (".mov", ".mkv"), ("yuv422p", "yuv422p10le", "yuv444p10le"),
                   intermediate=True, min_size=(256, 120)),
        VideoCodec("ffv1", "ffv1", (".mkv", ".avi"),
                   ("bgr0", "yuv420p", "yuv422p", "yuv444p", "yuv422p10le", "yuv444p10le",
                    "gbrp10le", "rgb48le"), lossless=True, intermediate=True),
        VideoCodec("vp9", "libvpx-vp9", (".webm", ".mkv"), (*_YUV, "gbrp"), uses_crf=True,
                   lossless=True),
    )
}  # fmt: skip
# What a container writes when no --codec is given.
_DEFAULT_CODECS = {".webm": "vp9", ".gif": None}
# The profile of each pixel format: ProRes 4:2:2 HQ or 4444; DNxHR HQ (8-bit), HQX (10-bit
# 4:2:2) or 444. --encoder-option profile=... picks another.
_PROFILES = {
    "prores": {"yuv422p10le": "hq"},
    "prores_4444": {"yuv444p10le": "4444", "yuva444p10le": "4444"},
    "dnxhr": {"yuv422p": "dnxhr_hq", "yuv422p10le": "dnxhr_hqx", "yuv444p10le": "dnxhr_444"},
}
# ffmpeg options an --encoder-option may not set: celpaint sets them itself, from its own options.
_RESERVED_KEYS = {
    "c", "codec", "vcodec", "pix_fmt", "f", "map", "r", "s", "i", "y", "n", "vf", "filter",
    "filter_complex", "an", "vn", "sn", "dn", "t", "ss", "to", "frames", "fps_mode", "vsync",
    "aspect", "metadata", "map_metadata", "tag", "lossless",
}  # fmt: skip
_OWNED_KEYS = {
    "crf": "--crf", "preset": "--preset", "pix_fmt": "--pix-fmt", "lossless": "--lossless",
}  # fmt: skip
_OPTION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def default_codec(suffix: str) -> str | None:
    """The codec a container gets without ``--codec``: H.264, VP9 for ``.webm``, GIF's own."""
    return _DEFAULT_CODECS.get(suffix.lower(), "h264")


def container_codecs(suffix: str) -> list[str]:
    """The ``CODECS`` a video extension holds."""
    return [name for name, codec in CODECS.items() if suffix.lower() in codec.containers]


def check_codec(codec: str | None, pix_fmt: str | None, lossless: bool) -> None:
    """Check ``--codec``, ``--pix-fmt`` and ``--lossless`` together, as far as they go
    without a container (``check_container`` does the rest).

    Raises:
        InputError: an unknown codec, a pixel format the codec does not take, ``--pix-fmt``
            with ``--lossless``, or ``--lossless`` with a codec that is never lossless.
    """
    if codec is not None and codec not in CODECS:
        raise InputError(f"--codec {codec!r} is unknown; use one of {', '.join(CODECS)}")
    if lossless and pix_fmt is not None:
        raise InputError("--lossless picks the pixel format itself (RGB); leave out --pix-fmt")
    if lossless and codec is not None and not CODECS[codec].lossless:
        takes = ", ".join(name for name, c in CODECS.items() if c.lossless)
        raise InputError(f"--lossless writes {takes}; {codec} is never lossless")
    if pix_fmt is not None:
        known = sorted({f for c in CODECS.values() for f in c.pix_fmts})
        formats = CODECS[codec].pix_fmts if codec is not None else known
        if pix_fmt not in formats:
            raise InputError(
                f"--pix-fmt {pix_fmt} is not one {codec or 'celpaint'} takes; use one of "
                f"{', '.join(formats)}"
            )


def check_container(
    suffix: str, codec: str | None, pix_fmt: str | None = None, path: Path | str = ""
) -> None:
    """Raise ``InputError`` unless the container of ``suffix`` holds ``codec`` (None: its
    default, ``default_codec``) in ``pix_fmt``, naming what it takes instead."""
    suffix = suffix.lower()
    name = Path(path).name or suffix
    if suffix not in WRITABLE_EXTENSIONS:
        return
    if default_codec(suffix) is None:
        if codec is not None or pix_fmt is not None:
            raise InputError(f"{name}: GIF takes only its own codec; leave out --codec/--pix-fmt")
        return
    resolved = codec or default_codec(suffix)
    if suffix not in CODECS[resolved].containers:
        raise InputError(
            f"{name}: {suffix} takes {', '.join(container_codecs(suffix))}, not {resolved}; "
            f"write {resolved} to {' or '.join(CODECS[resolved].containers)}"
        )
    if pix_fmt is not None and pix_fmt not in CODECS[resolved].pix_fmts:
        raise InputError(
            f"{name}: {resolved} (the codec of {suffix}) takes --pix-fmt "
            f"{', '.join(CODECS[resolved].pix_fmts)}, not {pix_fmt}; or pick --codec"
        )


def parse_encoder_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (``--encoder-option``) -> ``(KEY, VALUE)``, KEY checked by
    ``check_encoder_option``.

    Raises:
        InputError: no ``=``, or a KEY that is not a plain option name.
    """
    key, equals, value = text.partition("=")
    if not equals:
        raise InputError(
            f"--encoder-option {text!r} is not KEY=VALUE (e.g. profile=hq, x265-params=aq-mode=3)"
        )
    check_encoder_option(key.strip())
    return key.strip(), value


def check_encoder_option(key: str) -> None:
    """Raise ``InputError`` unless ``key`` is a plain encoder option name (letters, digits,
    ``_`` and ``-``, not starting with ``-``) that celpaint does not set from an option of its
    own. It is passed to ffmpeg as ``-KEY:v VALUE``, never as raw arguments."""
    if not _OPTION_KEY.match(key):
        raise InputError(
            f"--encoder-option {key!r}: KEY must be an encoder option name such as profile or "
            "x265-params (letters, digits, _ and -), without a leading -"
        )
    if key in _OWNED_KEYS:
        raise InputError(f"--encoder-option {key}=...: use {_OWNED_KEYS[key]} instead")
    if key in _RESERVED_KEYS:
        raise InputError(
            f"--encoder-option {key}=... is not an encoder option celpaint passes on (it sets "
            f"{key} itself); use --codec, --pix-fmt and the other options for that"
        )


@dataclass(frozen=True)
class Encoding:
    """The encoder arguments of one video, and a note for the user when a choice was made
    for them."""

    args: list[str]
    pix_fmt: str | None
    note: str | None = None


def video_encoding(
    path: Path,
    width: int,
    height: int,
    ffmpeg: str | None = None,
    *,
    crf: int = 18,
    lossless: bool = False,
    preset: str = "medium",
    codec: str | None = None,
    pix_fmt: str | None = None,
    encoder_options: Sequence[tuple[str, str]] = (),
) -> Encoding:
    """How a ``width`` x ``height`` video at ``path`` is encoded (``VideoWriter``'s arguments),
    after checking all that can be checked before the first frame, so that a plan can refuse
    it before any work.

    Raises:
        InputError: an unknown container, a codec it cannot hold or ``ffmpeg`` cannot encode,
            a pixel format the codec does not take, a frame size the codec cannot write, a bad
            encoder option.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in WRITABLE_EXTENSIONS:
        raise InputError(
            f"cannot write {Path(path).name}: use one of {', '.join(WRITABLE_EXTENSIONS)}"
        )
    check_preset(preset)
    check_codec(codec, pix_fmt, lossless)
    check_container(suffix, codec, pix_fmt, path)
    for key, _ in encoder_options:
        check_encoder_option(key)
    encoding = _video_codec_args(
        suffix, width, height, crf, lossless, preset, codec, pix_fmt, encoder_options
    )
    encoder = encoding.args[encoding.args.index("-c:v") + 1]
    ffmpeg = find_ffmpeg(ffmpeg)
    if encoder not in available_encoders(ffmpeg):
        raise InputError(
            f"{ffmpeg} cannot encode {codec or encoder} (it lacks the {encoder} "
            "encoder; `celpaint info` lists what it can): use another --codec or --ffmpeg"
        )
    return encoding


def _video_codec_args(
    suffix: str,
    width: int,
    height: int,
    crf: int,
    lossless: bool,
    preset: str,
    codec: str | None = None,
    pix_fmt: str | None = None,
    encoder_options: Sequence[tuple[str, str]] = (),
) -> Encoding:
    """Encoder arguments for a container and codec (``codec`` None: the container's default)."""
    requested, codec = codec, codec or default_codec(suffix)
    if codec is None:
        # A palette made from the whole clip looks far better than GIF's default palette.
        filters = "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a"
        return Encoding(["-vf", filters, "-c:v", "gif"], None)
    spec = CODECS[codec]
    if lossless:
        args = _lossless_args(suffix, requested, preset)
        for key, value in encoder_options:
            args += [f"-{key}:v", value]
        return Encoding(args, None)
    note = None
    if pix_fmt is None:
        pix_fmt = spec.default_pix_fmt
        if spec.even_sizes and (width % 2 or height % 2):
            # 4:2:0 subsampling needs even sizes; 4:4:4 keeps the exact size at some player risk.
            pix_fmt = "yuv444p"
            note = f"{width}x{height} is odd-sized: the video uses yuv444p (some players lack it)"
    _check_size(spec, pix_fmt, width, height)
    private: dict[str, str] = {}
    if spec.uses_crf:
        private["crf"] = str(crf)
    if spec.uses_preset:
        private["preset"] = preset
    if codec == "vp9":
        private["b"] = "0"  # constant quality: -crf alone is a bitrate cap for libvpx
    if codec in _PROFILES:
        private["profile"] = _PROFILES[codec][pix_fmt]
    if codec.startswith("prores"):
        private["vendor"] = "apl0"  # what Apple's own encoder writes; some players check it
    private.update(encoder_options)  # the user's choice wins over celpaint's defaults
    args = ["-c:v", spec.encoder]
    for key, value in private.items():
        args += [f"-{key}:v", value]
    args += ["-pix_fmt", pix_fmt]
    if pix_fmt.startswith("yuv") and suffix != ".avi":
        # Tagged, ffmpeg converts RGB to Rec. 709 YUV, and every decoder (ours too) converts
        # back with the same matrix; untagged, DNxHR's own bt709 tag met ffmpeg's default
        # bt601 conversion and shifted colors by up to 26 levels. AVI cannot hold the tags:
        # there both ways stay bt601 (docs/design.md#video-outputs-iovideopy).
        args += ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
        args += ["-color_range", "tv"]
    if codec == "h265" and suffix in (".mp4", ".m4v", ".mov"):
        args += ["-tag:v", "hvc1"]  # the tag Apple's players require for HEVC
    if suffix in (".mp4", ".m4v", ".mov"):
        args += ["-movflags", "+faststart"]
    return Encoding(args, pix_fmt, note)


def _lossless_args(suffix: str, codec: str | None, preset: str) -> list[str]:
    if codec == "vp9" or (codec is None and suffix == ".webm"):
        return ["-c:v", "libvpx-vp9", "-lossless", "1", "-pix_fmt", "gbrp"]
    if codec == "ffv1" or (codec is None and suffix == ".avi"):
        return ["-c:v", "ffv1", "-pix_fmt", "bgr0"]
    return ["-c:v", "libx264rgb", "-qp", "0", "-preset", preset, "-pix_fmt", "rgb24"]


def _check_size(spec: VideoCodec, pix_fmt: str, width: int, height: int) -> None:
    min_width, min_height = spec.min_size
    if width < min_width or height < min_height:
        raise InputError(
            f"{spec.name} needs frames of at least {min_width}x{min_height}, not "
            f"{width}x{height}; use another --codec"
        )
    if not spec.even_sizes:
        return
    odd_width = width % 2 and ("420" in pix_fmt or "422" in pix_fmt)
    if odd_width or (height % 2 and "420" in pix_fmt):
        raise InputError(
            f"{spec.name} in {pix_fmt} needs an even {'width' if odd_width else 'height'}, "
            f"not {width}x{height}; use a 4:4:4 --pix-fmt such as yuv444p"
        )


def audio_options(
    suffix: str, audio_info: MediaInfo | None, lossless_audio: bool = False
) -> tuple[list[str], str | None]:
    """ffmpeg arguments that take the audio streams of input 1 (``audio_info``'s file) into a
    ``suffix`` container: copied where the container holds their codec, else re-encoded
    (losslessly with ``lossless_audio``, for an intermediate that is muxed again later).

    Returns:
        (the arguments, empty without audio; a note for the user when audio is left out or
        re-encoded, else None).
    """
    if audio_info is None or not audio_info.audio:
        return [], None
    if suffix == ".gif":
        return [], "GIF has no audio: the audio of the source is left out"
    args = ["-map", "1:a"]
    allowed = _AUDIO_COPY_OK[suffix]
    fallback = _AUDIO_FALLBACK[suffix]
    if lossless_audio:
        fallback = _LOSSLESS_AUDIO.get(suffix, fallback)
    reencoded = []
    for position, stream in enumerate(audio_info.audio):
        if allowed is None or stream.codec in allowed:
            args += [f"-c:a:{position}", "copy"]
        else:
            codec, *options = fallback
            args += [f"-c:a:{position}", codec, *options]
            reencoded.append(stream.codec)
    note = None
    if reencoded:
        note = (
            f"{suffix} cannot hold {', '.join(sorted(set(reencoded)))} audio: re-encoded as "
            f"{fallback[0]}"
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
        path: the video to create (its extension picks the container).
        width, height: frame size; every written frame must match.
        fps: the exact frame rate.
        audio_from: a clip whose audio streams are all copied (re-encoded only where the
            container cannot hold the codec: lossy for delivery codecs, PCM or FLAC for
            ProRes, DNxHR and FFV1).
        crf: quality for H.264, H.265 and VP9 (lower is better; 18 is visually lossless for
            H.264); other codecs ignore it.
        lossless: bit-exact RGB output (H.264 RGB at qp 0, VP9 lossless, FFV1); by default
            FFV1 for ``.avi``, VP9 for ``.webm``, else H.264.
        preset: x264/x265 speed preset (``X264_PRESETS``); faster presets give larger files
            at the same ``crf``. Other codecs ignore it.
        codec: a ``CODECS`` name; None: the container's own default (``default_codec``).
        pix_fmt: the pixel format of the video (one of the codec's ``pix_fmts``); None: the
            codec's default (yuv444p for odd-sized H.264/H.265).
        encoder_options: ``(KEY, VALUE)`` pairs passed to the encoder as ``-KEY:v VALUE``
            (``check_encoder_option``); they win over celpaint's defaults for the same KEY.
        replace: what the finished video may replace at ``path``: anything (True), nothing
            (False: a file there makes ``close`` keep the video beside it and raise
            ``ProcessingError``) or only the file version of a ``FileStamp``.
        metadata: container-level tags to write (``-metadata KEY=VALUE``), e.g. ``comment``.

    Raises:
        InputError: an unknown container, a codec it cannot hold or the ffmpeg in use cannot
            encode, a pixel format the codec does not take, a frame size the codec cannot
            write, a bad encoder option.
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
        codec: str | None = None,
        pix_fmt: str | None = None,
        encoder_options: Sequence[tuple[str, str]] = (),
    ):
        self.path = Path(path)
        self.replace = replace
        suffix = self.path.suffix.lower()
        self.width, self.height, self.fps = width, height, Fraction(fps)
        self.ffmpeg = find_ffmpeg(ffmpeg)
        encoding = video_encoding(
            self.path, width, height, self.ffmpeg, crf=crf, lossless=lossless, preset=preset,
            codec=codec, pix_fmt=pix_fmt, encoder_options=encoder_options,
        )  # fmt: skip
        self.pix_fmt = encoding.pix_fmt
        if audio_from is not None and not isinstance(audio_from, MediaInfo):
            audio_from = probe(audio_from, self.ffmpeg, audio_only=True)
        self.frames_written = 0
        self._temp = partial_path(self.path)
        intermediate = codec is not None and CODECS[codec].intermediate
        audio_args, audio_note = audio_options(suffix, audio_from, lossless_audio=intermediate)
        for note in (encoding.note, audio_note):
            if note:
                log.warning("%s: %s", self.path.name, note)
        command = [
            self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-r", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0",
        ]  # fmt: skip
        if audio_args:
            command += ["-i", str(audio_from.path.absolute())]
        command += ["-map", "0:v:0", *audio_args, *encoding.args]
        for key, value in (metadata or {}).items():
            command += ["-metadata", f"{key}={value}"]
        # Absolute paths: a name starting with "-" must not read as an ffmpeg option.
        command += ["-f", MUXERS[suffix], str(self._temp.absolute())]
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


# ffmpeg's muxer (-f) for each container celpaint writes.
MUXERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".gif": "gif",
}
