"""`celpaint extract`, `assemble` and `info` through the real entry point."""

from fractions import Fraction

import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.io.frames import list_images, read_image
from celpaint.io.media import probe
from celpaint.io.video import VideoReader
from tests.helpers import audio_stream_count, stream_duration


def test_extract_then_assemble_round_trip(tmp_path, clip, ffmpeg):
    frames = tmp_path / "frames"
    assert main(["extract", str(clip), "-o", str(frames), "-q"]) == 0
    names = [p.name for p in list_images(frames)]
    assert len(names) == 24 and names[0] == "frame_000001.png" and names[-1] == "frame_000024.png"
    decoded = list(VideoReader(clip, ffmpeg))
    np.testing.assert_array_equal(read_image(frames / "frame_000007.png"), decoded[6])

    out = tmp_path / "again.mkv"
    args = ["assemble", str(frames), "-o", str(out), "--fps", "30000/1001", "--lossless"]
    assert main([*args, "--audio-from", str(clip), "-q"]) == 0
    info = probe(out, ffmpeg)
    assert info.fps == Fraction(30000, 1001) and info.frame_count == 24
    assert audio_stream_count(out, ffmpeg) == 1
    assert (
        abs(stream_duration(out, ffmpeg, "0:a:0") - stream_duration(clip, ffmpeg, "0:a:0")) < 0.04
    )
    for original, back in zip(decoded, VideoReader(out, ffmpeg), strict=True):
        np.testing.assert_array_equal(original, back)


def test_extract_and_assemble_refuse_bad_targets(tmp_path, clip, capsys):
    assert main(["extract", str(clip), "-o", str(tmp_path / "x.mp4")]) == 2
    assert main(["assemble", str(clip), "-o", str(tmp_path / "x.mp4")]) == 2
    assert main(["assemble", str(tmp_path), "-o", str(tmp_path / "x.png")]) == 2
    assert main(["assemble", str(tmp_path), "-o", str(tmp_path / "x.mp4"), "--fps", "fast"]) == 2
    err = capsys.readouterr().err
    assert "looks like a file" in err and "not a folder of frames" in err
    assert "not a frame rate" in err
    assert list(tmp_path.iterdir()) == []


def test_info_describes_clip_devices_codecs_and_models(clip, capsys):
    assert main(["info", str(clip)]) == 0
    out = capsys.readouterr().out
    for expected in ("30000/1001", "250x142", "24", "aac", "yuv444p", "cpu", "ffmpeg", "models"):
        assert expected in out
    codecs = out[out.index("video codecs") : out.index("models")]
    for codec in ("h264", "h265", "prores_4444", "dnxhr", "ffv1", "vp9", "prores_ks", "libx265"):
        assert codec in codecs
    # The bundled ffmpeg encodes all seven.
    assert codecs.count("can encode") == 7 and "missing" not in codecs


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert "celpaint" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("colorize", "extract", "assemble", "info"):
        assert command in out


def test_assemble_takes_the_audio_of_an_audio_only_file(tmp_path, clip, ffmpeg):
    import subprocess

    song = tmp_path / "song.m4a"
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=330:duration=1",
         "-c:a", "aac", str(song)],
        check=True,
    )  # fmt: skip
    frames = tmp_path / "frames"
    assert main(["extract", str(clip), "-o", str(frames), "-q"]) == 0
    out = tmp_path / "with song.mp4"
    args = ["assemble", str(frames), "-o", str(out), "--fps", "24", "--audio-from", str(song)]
    assert main([*args, "-q"]) == 0
    assert probe(out, ffmpeg).frame_count == 24
    assert audio_stream_count(out, ffmpeg) == 1
    assert abs(stream_duration(out, ffmpeg, "0:a:0") - 1.0) < 0.05
    # Colorizing it is still refused: there is nothing to colorize.
    assert main(["colorize", str(song), "-o", str(tmp_path / "x.mp4"), "-q"]) == 2


def test_overwrite_replaces_the_frames_of_a_folder(tmp_path, clip, ffmpeg):
    from tests.conftest import make_clip

    out = tmp_path / "frames"
    assert main(["extract", str(clip), "-o", str(out), "-q"]) == 0  # 24 frames
    (out / "notes.txt").write_text("mine")
    (out / "keep.jpg").write_bytes(b"not celpaint's")
    short = make_clip(tmp_path / "short.mp4", ffmpeg, frames=3, size=(32, 32), audio=False)
    assert main(["extract", str(short), "-o", str(out), "-q"]) == 2  # refused without it
    assert main(["extract", str(short), "-o", str(out), "-q", "--overwrite"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["frame_000001.png", "frame_000002.png", "frame_000003.png", "keep.jpg",
                     "notes.txt"]  # fmt: skip
    assert read_image(out / "frame_000003.png").shape == (32, 32, 3)


def test_assemble_never_writes_over_its_audio(tmp_path, clip, capsys):
    import os
    import shutil

    frames = tmp_path / "frames"
    assert main(["extract", str(clip), "-o", str(frames), "-q"]) == 0
    song = shutil.copy(clip, tmp_path / "song.mp4")
    os.link(song, tmp_path / "same song.mp4")
    before = song.read_bytes()
    for output in (song, tmp_path / "same song.mp4"):
        args = ["assemble", str(frames), "-o", str(output), "--audio-from", str(song)]
        assert main([*args, "--overwrite", "-q"]) == 2
        assert "is the input" in capsys.readouterr().err
    assert song.read_bytes() == before


@pytest.mark.parametrize("image_format", ["png", "tif", "jpg"])
def test_every_image_format_round_trips_frames_rate_and_audio(tmp_path, clip, ffmpeg, image_format):
    frames = tmp_path / "frames"
    args = ["extract", str(clip), "-o", str(frames), "--image-format", image_format, "-q"]
    assert main(args) == 0
    names = [p.name for p in list_images(frames)]
    assert len(names) == 24 and names[0] == f"frame_000001.{image_format}"
    out = tmp_path / "again.mov"
    args = ["assemble", str(frames), "-o", str(out), "--fps", "30000/1001", "--codec", "prores"]
    assert main([*args, "--audio-from", str(clip), "-q"]) == 0
    info = probe(out, ffmpeg)
    assert (info.frame_count, info.fps, info.pix_fmt) == (24, Fraction(30000, 1001), "yuv422p10le")
    assert audio_stream_count(out, ffmpeg) == 1
    assert (
        abs(stream_duration(out, ffmpeg, "0:a:0") - stream_duration(clip, ffmpeg, "0:a:0")) < 0.04
    )
    decoded = list(VideoReader(clip, ffmpeg))
    for original, back in zip(decoded, VideoReader(out, ffmpeg), strict=True):
        assert np.abs(original.astype(int) - back).mean() < (6 if image_format == "jpg" else 3)


def test_extract_to_a_numbered_sequence_with_start_number(tmp_path, clip, capsys):
    pattern = tmp_path / "seq" / "shot_%04d.png"
    args = ["extract", str(clip), "-o", str(pattern), "--start-number", "0", "-q"]
    assert main(args) == 0
    names = [p.name for p in list_images(tmp_path / "seq")]
    assert names == [f"shot_{n:04d}.png" for n in range(24)]
    assert main(args) == 2
    assert "already holds frames named like shot_%04d.png" in capsys.readouterr().err
    (tmp_path / "seq" / "shot_0023.png").unlink()
    assert main([*args, "--resume"]) == 0
    assert len(list_images(tmp_path / "seq")) == 24
    # The default numbers from 1, as extract's folder names do (frame_000001.png).
    assert main(["extract", str(clip), "-o", str(tmp_path / "b" / "%d.jpg"), "-q"]) == 0
    assert [p.name for p in list_images(tmp_path / "b")][:2] == ["1.jpg", "2.jpg"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--codec", "prores"], ".mp4 takes h264, h265, not prores; write prores to .mov or .mkv"),
        (["--codec", "h265", "--pix-fmt", "yuv422p12le"], "use one of yuv420p, yuv422p"),
        (["--encoder-option", "profile"], "is not KEY=VALUE"),
        (["--encoder-option", "-vf=scale=2:2"], "without a leading -"),
        (["--encoder-option", "map=0"], "sets map itself"),
        (["--codec", "prores", "--lossless"], "prores is never lossless"),
        (["--codec", "mpeg2"], "'mpeg2' is not one of"),
    ],
)
def test_assemble_refuses_bad_codec_settings_before_writing(tmp_path, clip, capsys, args, message):
    frames = tmp_path / "frames"
    assert main(["extract", str(clip), "-o", str(frames), "-q"]) == 0
    out = tmp_path / "out.mp4"
    assert main(["assemble", str(frames), "-o", str(out), *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
