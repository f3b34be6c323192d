"""`celpaint lineart` through the real entry point."""

from fractions import Fraction

import cv2
import numpy as np

from celpaint.cli.app import main
from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.media import probe
from celpaint.io.video import VideoReader
from celpaint.ops.lineart import xdog
from tests.helpers import audio_stream_count


def cartoon(width: int = 80, height: int = 60, shift: int = 0) -> np.ndarray:
    image = np.full((height, width, 3), (140, 180, 220), np.uint8)
    cv2.circle(image, (25 + shift, 30), 14, (220, 70, 40), -1)
    cv2.rectangle(image, (45, 15), (70, 50), (60, 140, 60), -1)
    return image


def test_image_in_image_out(tmp_path):
    source = write_image(tmp_path / "frame.png", cartoon())
    out = tmp_path / "lines.png"
    assert main(["lineart", str(source), "-o", str(out), "-q"]) == 0
    lines = read_image(out)
    assert lines.shape == (60, 80, 3)
    np.testing.assert_array_equal(lines[:, :, 0], xdog(cartoon()))
    assert lines.min() == 0 and lines[30, 25].min() == 255  # outline dark, inside white


def test_folder_in_folder_out_keeps_names(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    names = ["shot_1", "shot_2", "shot_10"]
    for index, name in enumerate(names):
        write_image(frames / f"{name}.png", cartoon(shift=index * 3))
    out = tmp_path / "lines"
    assert main(["lineart", str(frames), "-o", str(out), "-q", "--threshold", "0.5"]) == 0
    written = list_images(out)
    assert [p.stem for p in written] == names
    for index, path in enumerate(written):
        lines = read_image(path)[:, :, 0]
        assert set(np.unique(lines)) == {0, 255}
        np.testing.assert_array_equal(lines, xdog(cartoon(shift=index * 3), threshold=0.5))


def test_video_keeps_fps_frame_count_and_audio(tmp_path, clip, ffmpeg):
    out = tmp_path / "lines.mp4"
    assert main(["lineart", str(clip), "-o", str(out), "-q", "--sigma", "1.2"]) == 0
    source, result = probe(clip, ffmpeg), probe(out, ffmpeg)
    assert result.fps == source.fps == Fraction(30000, 1001)
    assert result.frame_count == source.frame_count
    assert (result.width, result.height) == (source.width, source.height)
    assert audio_stream_count(out, ffmpeg) == 1
    first = next(iter(VideoReader(out, ffmpeg)))
    # Mostly paper with some dark lines: a line drawing, not the test pattern's colors.
    assert np.mean(first > 200) > 0.6 and first.min() < 60
    assert np.abs(first.astype(int) - first[:, :, :1]).max() < 12  # gray (up to yuv420p)


def test_errors_are_input_errors(tmp_path, capsys):
    assert main(["lineart", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    source = write_image(tmp_path / "frame.png", cartoon())
    existing = write_image(tmp_path / "existing.png", cartoon())
    before = existing.read_bytes()
    assert main(["lineart", str(source), "-o", str(existing), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == before
    assert main(["lineart", str(source), "-o", str(existing), "-q", "--overwrite"]) == 0
    assert existing.read_bytes() != before
    assert main(["lineart", str(source), "-o", str(tmp_path / "y.png"), "--sigma", "0"]) == 2
    assert "sigma" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()


def test_default_output_beside_input(tmp_path):
    source = write_image(tmp_path / "pic.png", cartoon())
    assert main(["lineart", str(source), "-q"]) == 0
    assert (tmp_path / "pic_lineart.png").is_file()


def test_a_nested_batch_and_keep_going(tmp_path, ffmpeg, capsys):
    from tests.conftest import make_clip, make_frames

    tree = tmp_path / "season"
    tree.mkdir()
    make_clip(tree / "a.mp4", ffmpeg, frames=3, size=(64, 48))
    (tree / "bad.mp4").write_bytes(b"\x00\x01 not a video")
    make_frames(tree / "ep1" / "shot", count=2)
    out = tmp_path / "out"
    # Without --keep-going the unreadable input stops the batch before anything is written.
    assert main(["lineart", str(tree), "-o", str(out), "-R"]) == 2
    assert not out.exists()
    capsys.readouterr()
    # With it: the others are traced (the tree mirrored), the bad one is named, exit 1.
    assert main(["lineart", str(tree), "-o", str(out), "-R", "-k"]) == 1
    err = capsys.readouterr().err
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["a.mp4", "ep1/shot/f1.png", "ep1/shot/f2.png"]
    assert "failed" in err and "bad.mp4" in err and "2 traced, 1 failed" in err
    assert probe(out / "a.mp4", ffmpeg).frame_count == 3
    # Sub-folders are walked only with -R.
    capsys.readouterr()
    assert main(["lineart", str(tree / "ep1"), "-o", str(tmp_path / "flat"), "-k"]) == 2
    assert "only sub-folders; pass --recursive" in capsys.readouterr().err
