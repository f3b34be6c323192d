"""Batches through the real entry point: folders of videos, nested trees, --keep-going,
--resume of interrupted and finished batches, and --model auto."""

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.io.frames import list_images, read_image
from celpaint.io.media import probe
from celpaint.io.video import VideoReader
from celpaint.pipeline.auto import HEAD_FRAMES
from tests.conftest import make_clip, make_frames
from tests.pipeline.test_auto import make_gray_clip, make_line_art_clip


def _clip(path, ffmpeg, frames=4, audio=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_clip(path, ffmpeg, frames=frames, size=(64, 48), audio=audio)


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _stamps(root):
    return {name: (os.stat(root / name).st_ino, os.stat(root / name).st_mtime_ns)
            for name in _files(root)}  # fmt: skip


def _colorize(*args, model):
    return main(["colorize", *map(str, args), "-m", str(model)])


def test_a_folder_of_videos_and_a_nested_tree(tmp_path, ffmpeg, lineart_model, capsys):
    tree = tmp_path / "season"
    _clip(tree / "a.mp4", ffmpeg, frames=5, audio=True)
    _clip(tree / "b.mov", ffmpeg, frames=3)
    _clip(tree / "ep1" / "c.mp4", ffmpeg)
    make_frames(tree / "ep1" / "shot", count=3)
    _clip(tree / "ep2" / "deep" / "d.mkv", ffmpeg)
    # A folder of videos is a batch of clips; its sub-folders only with --recursive.
    assert _colorize(tree, "-o", tmp_path / "flat", model=lineart_model) == 0
    err = capsys.readouterr().err
    assert _files(tmp_path / "flat") == ["a.mp4", "b.mov"]
    assert "2 sub-folder(s) not walked; pass --recursive" in err and "2 colored" in err
    out = tmp_path / "out"
    assert _colorize(tree, "-o", out, "--recursive", "-q", model=lineart_model) == 0
    assert _files(out) == ["a.mp4", "b.mov", "ep1/c.mp4", "ep1/shot/f1.png", "ep1/shot/f2.png",
                           "ep1/shot/f3.png", "ep2/deep/d.mkv"]  # fmt: skip
    for name, frames in (("a.mp4", 5), ("b.mov", 3), ("ep1/c.mp4", 4), ("ep2/deep/d.mkv", 4)):
        info = probe(out / name, ffmpeg)
        assert (info.frame_count, info.width, info.height) == (frames, 64, 48)
        assert info.fps == Fraction(30000, 1001)
    assert probe(out / "a.mp4", ffmpeg).audio
    # Without -o the batch's outputs go to one folder beside it.
    assert _colorize(tree / "ep1", "-R", "-q", model=lineart_model) == 0
    assert _files(tree / "ep1_color") == ["c.mp4", "shot/f1.png", "shot/f2.png", "shot/f3.png"]


def test_keep_going_skips_bad_inputs_and_exits_1(tmp_path, ffmpeg, lineart_model, capsys):
    batch = tmp_path / "batch"
    _clip(batch / "a.mp4", ffmpeg)
    (batch / "bad.mp4").write_bytes(b"\x00\x01 not a video")  # fails at planning
    # A frame folder that fails while running, at its last frame (past the frames looked
    # at to check the model, HEAD_FRAMES).
    shot = make_frames(batch / "shot", count=HEAD_FRAMES + 2)
    last = shot / f"f{HEAD_FRAMES + 2}.png"
    good = last.read_bytes()
    last.write_bytes(good[:60] + b"\x00" * 40)
    _clip(batch / "z.mp4", ffmpeg)
    out = tmp_path / "out"
    # Without --keep-going the first failure stops the batch, before anything is written.
    assert _colorize(batch, "-o", out, "-R", model=lineart_model) == 2
    assert "bad.mp4" in capsys.readouterr().err and not out.exists()
    code = _colorize(batch, "-o", out, "-R", "--keep-going", model=lineart_model)
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"failed {batch / 'bad.mp4'}: " in err and f"failed {shot}: " in err
    assert f"{last.name} is not a readable image" in err
    assert "2 colored, 2 failed" in err
    assert "error: 2 of 4 inputs failed" in err and "--resume" in err
    # The others are complete; of the failures nothing partial is left: no video, and a
    # frame folder holds only frames finished before the failure, each complete.
    files = _files(out)
    assert [f for f in files if not f.startswith("shot/")] == ["a.mp4", "z.mp4"]
    kept = [f for f in files if f.startswith("shot/")]
    assert f"shot/{last.name}" not in kept and not any("/." in f for f in kept)
    assert all(read_image(out / f).shape == (48, 64, 3) for f in kept)
    assert kept or not (out / "shot").exists()  # no empty folder either
    assert probe(out / "z.mp4", ffmpeg).frame_count == 4
    # Mended, the same command with --resume does only what is left.
    last.write_bytes(good)
    (batch / "bad.mp4").unlink()
    assert _colorize(batch, "-o", out, "-R", "-k", "--resume", model=lineart_model) == 0
    assert "2 done earlier, 1 colored" in capsys.readouterr().err
    assert _files(out) == ["a.mp4", *(f"shot/{p.name}" for p in list_images(shot)), "z.mp4"]


def test_resume_of_a_killed_batch_does_only_what_is_left(tmp_path, ffmpeg, lineart_model, capsys):
    batch = tmp_path / "batch"
    _clip(batch / "a.mp4", ffmpeg, frames=4)
    _clip(batch / "b.mp4", ffmpeg, frames=100)
    _clip(batch / "c.mp4", ffmpeg, frames=100)
    out = tmp_path / "out"
    command = ["colorize", batch, "-o", out, "-m", lineart_model, "-b", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "celpaint", *map(str, command), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "a.mp4").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the first output never appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # no clean-up at all
    process.wait(timeout=60)
    process.stderr.close()
    assert _files(out) == ["a.mp4"] or all(n == "a.mp4" or n.startswith(".") for n in _files(out))
    first = _stamps(out)["a.mp4"]
    assert main([*map(str, command), "--resume"]) == 0
    assert "1 done earlier, 2 colored" in capsys.readouterr().err
    assert _files(out) == ["a.mp4", "b.mp4", "c.mp4"]  # the killed run's temporary is gone
    assert _stamps(out)["a.mp4"] == first  # untouched: same file, same time
    assert [probe(out / n, ffmpeg).frame_count for n in ("b.mp4", "c.mp4")] == [100, 100]
    # A finished batch: nothing to do, and it says so.
    before = _stamps(out)
    assert main([*map(str, command), "--resume"]) == 0
    assert "nothing to do: all 3 outputs were done earlier" in capsys.readouterr().err
    assert _stamps(out) == before


def test_a_folder_mixing_frames_and_videos_is_refused(tmp_path, ffmpeg, lineart_model, capsys):
    mixed = make_frames(tmp_path / "mixed", count=2)
    _clip(mixed / "clip.mp4", ffmpeg)
    (tmp_path / "only folders" / "inside").mkdir(parents=True)
    _clip(tmp_path / "only folders" / "inside" / "clip.mp4", ffmpeg)
    assert _colorize(mixed, "-o", tmp_path / "out", model=lineart_model) == 2
    assert "holds both frames (f1.png) and videos (clip.mp4)" in capsys.readouterr().err
    assert _colorize(tmp_path / "only folders", "-o", tmp_path / "out", model=lineart_model) == 2
    assert "pass --recursive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # extract and assemble take one clip or frame folder, not a batch.
    batch = tmp_path / "only folders" / "inside"
    assert main(["extract", str(batch), "-o", str(tmp_path / "out")]) == 2
    assert "is a folder of videos; give one video" in capsys.readouterr().err


def _frames(path):
    return np.stack(list(VideoReader(path)))


@pytest.fixture(scope="module")
def drawn_and_filmed(tmp_path_factory, ffmpeg):
    batch = tmp_path_factory.mktemp("auto") / "batch"
    batch.mkdir()
    make_line_art_clip(batch / "drawn.mp4", ffmpeg, frames=3)
    make_gray_clip(batch / "filmed.mp4", ffmpeg, frames=3)
    return batch


def test_model_auto_picks_the_shipped_model_per_input(tmp_path, drawn_and_filmed, capsys):
    batch = drawn_and_filmed
    out = tmp_path / "auto"
    assert main(["colorize", str(batch), "-o", str(out), "--lossless"]) == 0  # auto: the default
    err = capsys.readouterr().err
    assert f"{batch / 'drawn.mp4'}: model lineart (looks like line art)" in err
    assert f"{batch / 'filmed.mp4'}: model gray (looks like grayscale or color footage)" in err
    assert "warning" not in err
    assert "2 colored (1 gray, 1 lineart)" in err
    # Each output is what that model gives.
    for name, model in (("drawn.mp4", "lineart"), ("filmed.mp4", "gray")):
        alone = tmp_path / f"{model}.mp4"
        assert main(["colorize", str(batch / name), "-o", str(alone), "-m", model, "-q",
                     "--lossless"]) == 0  # fmt: skip
        assert np.array_equal(_frames(out / name), _frames(alone)), name


def test_a_model_that_does_not_fit_the_input_is_a_warning(tmp_path, drawn_and_filmed, capsys):
    drawn = drawn_and_filmed / "drawn.mp4"
    assert main(["colorize", str(drawn), "-o", str(tmp_path / "o.mp4"), "-m", "gray"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {drawn} looks like line art but the model expects grayscale footage, so its "
        "colors will be washed out; use --model lineart (or auto)"
    ]
    assert probe(tmp_path / "o.mp4").frame_count == 3
