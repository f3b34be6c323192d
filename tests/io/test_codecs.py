"""Delivery codecs: every codec round-trips frame count, exact fps, audio and its pixel format;
codec, container, pixel format and encoder options are checked before anything is written."""

import subprocess
from fractions import Fraction

import numpy as np
import pytest

from celpaint.errors import InputError
from celpaint.io import video
from celpaint.io.media import probe
from celpaint.io.sinks import EncodeOptions
from celpaint.io.video import CODECS, VideoReader, VideoWriter, parse_encoder_option
from tests.conftest import make_clip
from tests.helpers import audio_stream_count, stream_duration

RATE = Fraction(24000, 1001)
# dnxhr takes frames of 256x120 and more; one size for every codec keeps the table simple.
SIZE = (256, 120)
FRAMES = 6


@pytest.fixture(scope="module")
def source(tmp_path_factory, ffmpeg):
    """A clip with AAC audio, and its decoded frames."""
    path = tmp_path_factory.mktemp("codecs") / "source.mp4"
    make_clip(path, ffmpeg, frames=FRAMES, size=SIZE, rate="24000/1001")
    return path, list(VideoReader(path, ffmpeg))


def audio_codecs(path, ffmpeg) -> list[str]:
    header = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True)
    lines = header.stderr.decode().splitlines()
    return [line.split("Audio: ", 1)[1].split()[0] for line in lines if "Audio: " in line]


# (codec, container, --pix-fmt, what ffmpeg calls the codec, the pixel format read back,
# largest mean difference to the source frames in 8-bit levels)
CASES = [
    ("h264", ".mp4", None, "h264", "yuv420p", 4),
    ("h264", ".mov", "yuv422p10le", "h264", "yuv422p10le", 4),
    ("h265", ".mp4", None, "hevc", "yuv420p", 4),
    ("h265", ".mkv", "yuv422p10le", "hevc", "yuv422p10le", 4),
    ("prores", ".mov", None, "prores", "yuv422p10le", 3),
    # ProRes 4444 is decoded at 12 bits whatever it was written from.
    ("prores_4444", ".mkv", None, "prores", "yuv444p12le", 1),
    ("dnxhr", ".mov", None, "dnxhd", "yuv422p", 3),
    ("dnxhr", ".mkv", "yuv422p10le", "dnxhd", "yuv422p10le", 3),
    ("ffv1", ".mkv", None, "ffv1", "bgr0", 0),
    ("ffv1", ".avi", "yuv444p10le", "ffv1", "yuv444p10le", 1),
    ("vp9", ".webm", None, "vp9", "yuv420p", 4),
    ("vp9", ".mkv", "yuv444p10le", "vp9", "yuv444p10le", 4),
]


@pytest.mark.parametrize("codec, suffix, pix_fmt, stream, read_back, tolerance", CASES)
def test_every_codec_keeps_frames_rate_audio_and_pixel_format(
    tmp_path, ffmpeg, source, codec, suffix, pix_fmt, stream, read_back, tolerance
):
    clip, frames = source
    out = tmp_path / f"out{suffix}"
    with VideoWriter(
        out, *SIZE, RATE, ffmpeg, audio_from=clip, codec=codec, pix_fmt=pix_fmt, preset="ultrafast"
    ) as writer:
        for frame in frames:
            writer.write(frame)
    info = probe(out, ffmpeg)
    assert (info.codec, info.pix_fmt) == (stream, read_back)
    assert (info.width, info.height, info.frame_count, info.fps) == (*SIZE, FRAMES, RATE)
    assert audio_stream_count(out, ffmpeg) == 1
    original = stream_duration(clip, ffmpeg, "0:a:0")
    assert abs(stream_duration(out, ffmpeg, "0:a:0") - original) < 0.05
    decoded = list(VideoReader(out, ffmpeg))
    assert len(decoded) == FRAMES
    for before, after in zip(frames, decoded, strict=True):
        assert np.abs(before.astype(int) - after).mean() <= tolerance


def test_editing_codecs_keep_audio_lossless_where_it_is_reencoded(tmp_path, ffmpeg):
    # Opus cannot go into .mov or .avi as it is: ProRes gets PCM, H.264 gets AAC as before.
    clip = make_clip(tmp_path / "opus.mkv", ffmpeg, frames=4, size=SIZE, extra=["-c:a", "libopus"])
    frames = list(VideoReader(clip, ffmpeg))
    for codec, suffix, expected in (("prores", ".mov", "pcm_s24le"), ("h264", ".mov", "aac"),
                                    ("ffv1", ".avi", "pcm_s16le")):  # fmt: skip
        out = tmp_path / f"{codec}{suffix}"
        with VideoWriter(out, *SIZE, 24, ffmpeg, audio_from=clip, codec=codec) as writer:
            for frame in frames:
                writer.write(frame)
        assert audio_codecs(out, ffmpeg) == [expected]


def test_encoder_options_reach_the_encoder_and_win_over_the_defaults(tmp_path, ffmpeg, source):
    _, frames = source
    out = tmp_path / "lt.mov"
    with VideoWriter(
        out, *SIZE, 24, ffmpeg, codec="prores", encoder_options=[("profile", "lt")]
    ) as writer:
        for frame in frames:
            writer.write(frame)
    header = subprocess.run([ffmpeg, "-hide_banner", "-i", str(out)], capture_output=True)
    assert "prores (LT)" in header.stderr.decode()  # not HQ, celpaint's own default


def test_codec_container_and_pixel_format_mismatches_are_input_errors(tmp_path, ffmpeg):
    with pytest.raises(InputError, match=r"\.mp4 takes h264, h265, not prores; write prores to"):
        VideoWriter(tmp_path / "x.mp4", 64, 48, 24, ffmpeg, codec="prores")
    with pytest.raises(InputError, match=r"\.webm takes vp9, not h264"):
        VideoWriter(tmp_path / "x.webm", 64, 48, 24, ffmpeg, codec="h264")
    with pytest.raises(InputError, match="GIF takes only its own codec"):
        VideoWriter(tmp_path / "x.gif", 64, 48, 24, ffmpeg, codec="h264")
    with pytest.raises(InputError, match="yuv444p10le, yuva444p10le"):
        VideoWriter(tmp_path / "x.mov", 64, 48, 24, ffmpeg, codec="prores_4444", pix_fmt="yuv420p")
    with pytest.raises(InputError, match="vp9 \\(the codec of .webm\\) takes"):
        VideoWriter(tmp_path / "x.webm", 64, 48, 24, ffmpeg, pix_fmt="bgr0")
    with pytest.raises(InputError, match="at least 256x120"):
        VideoWriter(tmp_path / "x.mov", 64, 48, 24, ffmpeg, codec="dnxhr")
    with pytest.raises(InputError, match="needs an even width"):
        VideoWriter(tmp_path / "x.mp4", 65, 48, 24, ffmpeg, codec="h265", pix_fmt="yuv422p")
    assert list(tmp_path.iterdir()) == []


def test_a_codec_this_ffmpeg_lacks_is_named_before_any_work(tmp_path, ffmpeg, monkeypatch):
    monkeypatch.setattr(video, "available_encoders", lambda ffmpeg: frozenset({"libx264"}))
    with pytest.raises(InputError, match="lacks the libx265 encoder; `celpaint info`"):
        VideoWriter(tmp_path / "x.mp4", 64, 48, 24, ffmpeg, codec="h265")


@pytest.mark.parametrize(
    "text, message",
    [
        ("profile", "not KEY=VALUE"),
        ("-profile=hq", "without a leading -"),
        ("pro file=hq", "encoder option name"),
        ("profile;rm=x", "encoder option name"),
        ("crf=20", "use --crf instead"),
        ("pix_fmt=yuv420p", "use --pix-fmt instead"),
        ("f=mp4", "sets f itself"),
        ("map=0:a", "sets map itself"),
    ],
)
def test_encoder_option_syntax_is_checked(text, message):
    with pytest.raises(InputError, match=message):
        parse_encoder_option(text)


def test_encoder_option_values_stay_one_argument():
    assert parse_encoder_option("x265-params=aq-mode=3:psy-rd=1") == (
        "x265-params",
        "aq-mode=3:psy-rd=1",
    )
    assert parse_encoder_option("vendor=-x y") == ("vendor", "-x y")


def test_encode_options_check_codec_pixel_format_and_lossless_once():
    with pytest.raises(InputError, match="use one of h264, h265, prores"):
        EncodeOptions(codec="mpeg2")
    with pytest.raises(InputError, match="--pix-fmt yuv420p is not one prores takes"):
        EncodeOptions(codec="prores", pix_fmt="yuv420p")
    with pytest.raises(InputError, match="prores is never lossless"):
        EncodeOptions(codec="prores", lossless=True)
    with pytest.raises(InputError, match="--encoder-option 'a b'"):
        EncodeOptions(encoder_options=(("a b", "1"),))
    with pytest.raises(InputError, match="--image-format 'exr' is unknown"):
        EncodeOptions(image_format="exr")
    options = EncodeOptions(codec="prores")
    assert options.video_suffix(".mp4") == ".mov" and options.video_suffix(".mkv") == ".mkv"
    assert EncodeOptions().video_suffix(".flv") == ".mp4"


def test_the_cli_lists_the_same_codecs_and_image_formats():
    from typing import get_args

    from celpaint.cli.options import CodecName, ImageFormatName
    from celpaint.io.frames import IMAGE_FORMATS

    assert get_args(CodecName) == tuple(CODECS)
    assert get_args(ImageFormatName) == tuple(IMAGE_FORMATS)
