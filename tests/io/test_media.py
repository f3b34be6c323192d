from fractions import Fraction

import pytest

from celpaint.errors import InputError
from celpaint.io import media
from tests.conftest import make_clip


def test_probe_keeps_exact_rational_rate_size_and_audio(clip, ffmpeg):
    info = media.probe(clip, ffmpeg)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 24
    assert (info.width, info.height) == (250, 142)
    assert [a.codec for a in info.audio] == ["aac"]
    assert not info.variable_frame_rate


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".avi", ".mov"])
def test_probe_recovers_ntsc_rate_from_rounded_time_bases(tmp_path, ffmpeg, suffix):
    path = make_clip(tmp_path / f"clip{suffix}", ffmpeg, frames=30, size=(64, 48), audio=False)
    info = media.probe(path, ffmpeg)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 30


def test_probe_detects_variable_frame_rate(tmp_path, ffmpeg):
    # Frames 0-9 at 10 fps, then 10 more at 40 fps: a clear variable-rate clip.
    path = make_clip(
        tmp_path / "vfr.mkv", ffmpeg, frames=20, size=(64, 48), rate="10", audio=False,
        extra=[
            "-vf", r"settb=1/1000,setpts=if(lt(N\,10)\,N*100\,1000+(N-10)*25)/1000/TB",
            "-fps_mode", "passthrough", "-enc_time_base", "1/1000",
        ],
    )  # fmt: skip
    assert media.probe(path, ffmpeg).variable_frame_rate


def test_probe_rejects_non_video_and_truncated_files(tmp_path, clip, ffmpeg):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(InputError, match="not a video"):
        media.probe(text, ffmpeg)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:2000])
    with pytest.raises(InputError):
        media.probe(truncated, ffmpeg)
    with pytest.raises(InputError, match="does not exist"):
        media.probe(tmp_path / "missing.mp4", ffmpeg)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(23.976, Fraction(24000, 1001)), (29.97, Fraction(30000, 1001)),
     (59.94, Fraction(60000, 1001)), (25.0, Fraction(25)), (12.5, Fraction(25, 2))],
)  # fmt: skip
def test_snap_frame_rate(value, expected):
    assert media.snap_frame_rate(value) == expected


def test_parse_frame_rate():
    assert media.parse_frame_rate("24000/1001") == Fraction(24000, 1001)
    assert media.parse_frame_rate("23.976") == Fraction(24000, 1001)
    assert media.parse_frame_rate("24") == 24
    for bad in ("fast", "0", "-3", "1/0"):
        with pytest.raises(InputError):
            media.parse_frame_rate(bad)


def test_audio_only_probe_reads_the_audio_and_not_the_video(clip, ffmpeg, monkeypatch):
    def no_scan(*args):
        raise AssertionError("scanned the video packets")

    monkeypatch.setattr(media, "_packet_timestamps", no_scan)
    info = media.probe(clip, ffmpeg, audio_only=True)
    assert len(info.audio) == 1 and info.frame_count == 0 and info.duration > 0
    with pytest.raises(AssertionError, match="scanned"):
        media.probe(clip, ffmpeg)


def test_find_ffmpeg_order(monkeypatch, ffmpeg, tmp_path):
    monkeypatch.setenv("CELPAINT_FFMPEG", ffmpeg)
    assert media.find_ffmpeg() == ffmpeg
    monkeypatch.setenv("CELPAINT_FFMPEG", str(tmp_path / "no-ffmpeg"))
    with pytest.raises(InputError, match="CELPAINT_FFMPEG"):
        media.find_ffmpeg()
    # An explicit path wins over the environment.
    assert media.find_ffmpeg(ffmpeg) == ffmpeg
    monkeypatch.delenv("CELPAINT_FFMPEG")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "imageio_ffmpeg" in media.find_ffmpeg()
