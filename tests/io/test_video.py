from fractions import Fraction

import numpy as np
import pytest

from celpaint.errors import InputError, ProcessingError
from celpaint.io.media import probe
from celpaint.io.video import VideoReader, VideoWriter, partial_path
from tests.conftest import make_clip
from tests.helpers import audio_stream_count, stream_duration


def _frames(count=6, size=(37, 23)):
    rng = np.random.default_rng(1)
    width, height = size
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4", ".avi", ".webm"])
def test_lossless_round_trip_is_bit_exact_at_odd_sizes(tmp_path, ffmpeg, suffix):
    frames = _frames()
    path = tmp_path / f"out{suffix}"
    with VideoWriter(path, 37, 23, Fraction(24000, 1001), ffmpeg, lossless=True) as writer:
        for frame in frames:
            writer.write(frame)
    info = probe(path, ffmpeg)
    assert (info.width, info.height, info.frame_count) == (37, 23, 6)
    assert info.fps == Fraction(24000, 1001)
    decoded = list(VideoReader(path, ffmpeg))
    assert len(decoded) == 6
    for original, back in zip(frames, decoded, strict=True):
        np.testing.assert_array_equal(original, back)


def test_reader_yields_every_frame_in_order(clip, ffmpeg):
    reader = VideoReader(clip, ffmpeg)
    frames = list(reader)
    assert len(frames) == 24 and reader.frames_read == 24
    assert frames[0].shape == (142, 250, 3) and frames[0].dtype == np.uint8
    # testsrc2 moves every frame: consecutive frames differ.
    assert all(np.any(a != b) for a, b in zip(frames, frames[1:], strict=False))


def test_writer_copies_audio_and_keeps_rate(tmp_path, clip, ffmpeg):
    frames = list(VideoReader(clip, ffmpeg))
    out = tmp_path / "copy.mkv"
    with VideoWriter(out, 250, 142, Fraction(30000, 1001), ffmpeg, audio_from=clip) as writer:
        for frame in frames:
            writer.write(frame)
    assert audio_stream_count(out, ffmpeg) == 1
    assert probe(out, ffmpeg).fps == Fraction(30000, 1001)
    original = stream_duration(clip, ffmpeg, "0:a:0")
    assert abs(stream_duration(out, ffmpeg, "0:a:0") - original) < 1 / 29.97


def test_writer_reencodes_audio_the_container_cannot_hold(tmp_path, ffmpeg):
    source = make_clip(
        tmp_path / "pcm.mkv", ffmpeg, frames=10, size=(32, 32), extra=["-c:a", "pcm_s16le"]
    )
    out = tmp_path / "out.webm"
    with VideoWriter(out, 32, 32, Fraction(25), ffmpeg, audio_from=source) as writer:
        for frame in _frames(10, (32, 32)):
            writer.write(frame)
    assert "opus" in probe(out, ffmpeg).audio[0].codec


def test_abort_and_errors_leave_nothing_at_the_target(tmp_path, ffmpeg):
    out = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, 32, 32, Fraction(24), ffmpeg) as writer:
        writer.write(_frames(1, (32, 32))[0])
        raise RuntimeError("boom")
    assert not out.exists() and not partial_path(out).exists()
    writer = VideoWriter(out, 32, 32, Fraction(24), ffmpeg)
    with pytest.raises(ValueError):
        writer.write(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ProcessingError, match="no frames"):
        writer.close()
    assert not out.exists()


def test_preset_trades_encoding_time_for_size(tmp_path, clip, ffmpeg):
    frames = list(VideoReader(clip, ffmpeg))
    sizes = {}
    for preset in ("ultrafast", "medium"):
        out = tmp_path / f"{preset}.mp4"
        with VideoWriter(out, 250, 142, Fraction(30000, 1001), ffmpeg, preset=preset) as writer:
            for frame in frames:
                writer.write(frame)
        assert probe(out, ffmpeg).frame_count == len(frames)
        sizes[preset] = out.stat().st_size
    # ultrafast turns off most of x264's compression tools: same quality, a bigger file.
    assert sizes["ultrafast"] > sizes["medium"]
    with pytest.raises(InputError, match="--preset 'quick' is unknown"):
        VideoWriter(tmp_path / "x.mp4", 32, 32, Fraction(24), ffmpeg, preset="quick")
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob(".x*"))


def test_writer_rejects_unknown_containers(tmp_path, ffmpeg):
    with pytest.raises(InputError, match="use one of"):
        VideoWriter(tmp_path / "out.xyz", 32, 32, Fraction(24), ffmpeg)


def test_gif_output(tmp_path, ffmpeg):
    out = tmp_path / "anim.gif"
    with VideoWriter(out, 32, 24, Fraction(10), ffmpeg) as writer:
        for frame in _frames(5, (32, 24)):
            writer.write(frame)
    info = probe(out, ffmpeg)
    assert (info.width, info.height, info.frame_count) == (32, 24, 5)
