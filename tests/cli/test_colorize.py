"""`celpaint colorize` through the real entry point."""

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.media import probe
from tests.conftest import make_clip, make_frames
from tests.helpers import audio_stream_count, stream_duration


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "celpaint", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )  # fmt: skip


def test_clip_keeps_frames_rate_size_and_audio(tmp_path, clip, ffmpeg, lineart_model):
    out = tmp_path / "colored clip.mp4"
    result = run_cli("colorize", clip, "-o", out, "--model", lineart_model)
    assert result.returncode == 0, result.stderr
    assert "colored 24 frames" in result.stderr
    info = probe(out, ffmpeg)
    assert info.frame_count == 24
    assert info.fps == Fraction(30000, 1001)
    assert (info.width, info.height) == (250, 142)
    assert audio_stream_count(out, ffmpeg) == 1
    source_audio = stream_duration(clip, ffmpeg, "0:a:0")
    assert abs(stream_duration(out, ffmpeg, "0:a:0") - source_audio) <= 1001 / 30000


def test_frame_folder_keeps_names_and_order(tmp_path, lineart_model):
    frames = make_frames(tmp_path / "shots", names=["f1", "f2", "f10", "f9"])
    out = tmp_path / "colored"
    assert main(["colorize", str(frames), "-o", str(out), "--model", str(lineart_model)]) == 0
    assert [p.name for p in list_images(out)] == ["f1.png", "f2.png", "f9.png", "f10.png"]
    # Each output is the colorized version of the input of the same name (frames differ).
    assert read_image(out / "f10.png").shape == read_image(frames / "f10.png").shape
    assert not np.array_equal(read_image(out / "f1.png"), read_image(out / "f10.png"))


def test_temporal_flat_fill_and_work_size_options(tmp_path, lineart_model, capfd):
    frames = make_frames(tmp_path / "shots", count=3, size=(96, 64))
    model = ["--model", str(lineart_model)]
    smoothed, plain, flat = tmp_path / "smoothed", tmp_path / "plain", tmp_path / "flat"
    options = ["--temporal-strength", "0.5", "--scene-threshold", "0.3", "--work-size", "32"]
    assert main(["colorize", str(frames), "-o", str(smoothed), *model, *options]) == 0
    assert main(["colorize", str(frames), "-o", str(plain), *model, "--no-temporal"]) == 0
    assert main(["colorize", str(frames), "-o", str(flat), *model, "--flat-fill"]) == 0
    for folder in (smoothed, plain, flat):
        assert [read_image(p).shape for p in list_images(folder)] == [(64, 96, 3)] * 3
    assert main(["colorize", str(frames), "-o", str(tmp_path / "x"), *model,
                 "--temporal-strength", "1.5"]) == 2  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_several_inputs_give_one_output_each(tmp_path, clip, gray_model):
    frames = make_frames(tmp_path / "shots")
    image = tmp_path / "still.jpg"
    write_image(image, np.full((40, 30, 3), 128, np.uint8))
    out = tmp_path / "out"
    code = main(
        ["colorize", str(clip), str(frames), str(image), "-o", str(out), "-m", str(gray_model)]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["shots", "still.png", "test pattern.mp4"]
    assert len(list_images(out / "shots")) == 5


def test_default_output_goes_beside_the_input(tmp_path, ffmpeg, lineart_model):
    clip = make_clip(tmp_path / "short.mkv", ffmpeg, frames=3, size=(32, 32))
    assert main(["colorize", str(clip), "--model", str(lineart_model), "-q"]) == 0
    assert probe(tmp_path / "short_color.mkv", ffmpeg).frame_count == 3


@pytest.mark.parametrize(
    "name", ["with space.mp4", "ünïcødé 日本.mp4", "-leading-dash.mp4", "semi;colon $(x) 'q'.mp4"]
)
def test_awkward_file_names(tmp_path, ffmpeg, lineart_model, name):
    make_clip(tmp_path / name, ffmpeg, frames=3, size=(32, 32), audio=False)
    out_name = "out " + name
    # A leading dash must be passed after "--" or as a path, like any CLI.
    result = run_cli("colorize", "--model", lineart_model, "-o", f"./{out_name}", "--", name,
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / out_name, ffmpeg).frame_count == 3


def _snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture
def workspace(tmp_path, clip, ffmpeg):
    """Inputs of every kind of bad: each case must fail without writing anything."""
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "truncated.mp4").write_bytes(clip.read_bytes()[:3000])
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "sine", "-t", "1",
         str(tmp_path / "audio only.mp4")], check=True,
    )  # fmt: skip
    (tmp_path / "empty").mkdir()
    mixed = make_frames(tmp_path / "mixed", count=2)
    write_image(mixed / "f3.png", np.zeros((5, 5, 3), np.uint8))
    make_frames(tmp_path / "good", count=2)
    broken = make_frames(tmp_path / "broken", count=2)
    (broken / "f3.png").write_bytes(b"not a png")
    (tmp_path / "exists.mp4").write_bytes(b"precious")
    (tmp_path / "a file").write_text("x")
    (tmp_path / "model-empty").mkdir()
    corrupt = tmp_path / "model-corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    return tmp_path


BAD_INPUTS = [
    (["missing.mp4", "-o", "o.mp4"], "does not exist"),
    (["notes.mp4", "-o", "o.mp4"], "not a video"),
    (["truncated.mp4", "-o", "o.mp4"], "truncated.mp4"),
    (["audio only.mp4", "-o", "o.mp4"], "no video stream"),
    (["empty", "-o", "o"], "holds no images"),
    (["mixed", "-o", "o"], "differ in size"),
    (["broken", "-o", "o"], "f3.png is not a readable image"),
    (["clip.mp4", "-o", "clip.mp4"], "is the input"),
    (["clip.mp4", "-o", "exists.mp4"], "--overwrite"),
    (["clip.mp4", "-o", "a file/o.mp4"], "is a file"),
    (["clip.mp4", "-o", "o.mp4", "--model", "nowhere"], "neither a shipped model"),
    (["clip.mp4", "-o", "o.mp4", "--model", "model-empty"], "no config.json"),
    (["clip.mp4", "-o", "o.mp4", "--model", "model-corrupt"], "not valid JSON"),
    (["clip.mp4", "good", "-o", "o.mp4"], "need -o to be a folder"),
    (["clip.mp4", "good", "-o", "clip.mp4"], "need -o to be a folder"),
    (["clip.mp4", "-o", "o.mp4", "--device", "toaster"], "not a device"),
    (["clip.mp4", "-o", "o.mp4", "--batch-size", "0"], "--batch-size"),
    (["clip.mp4", "-o", "o.mp4", "--work-size", "8"], "size multiple"),
    (["clip.mp4", "-o", "o.mp4", "--ffmpeg", "no-such-ffmpeg"], "--ffmpeg names no-such-ffmpeg"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_fails_cleanly_and_writes_nothing(
    workspace, lineart_model, capsys, args, message
):
    if "--model" not in args:
        args = [*args, "--model", str(lineart_model)]
    before = _snapshot(workspace)
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        code = main(["colorize", *args])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert _snapshot(workspace) == before
    assert (workspace / "exists.mp4").read_bytes() == b"precious"


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "colorize", tmp_path / "missing.mp4", "-o", tmp_path / "o.mp4")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_overwrite_replaces_an_existing_output(tmp_path, clip, lineart_model):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"old")
    args = ["colorize", str(clip), "-o", str(out), "-m", str(lineart_model), "-q"]
    assert main([*args, "--overwrite"]) == 0
    assert out.stat().st_size > 100


def _interrupt_when(process, ready, timeout=120):
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the run never got going"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, ffmpeg):
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", ffmpeg, frames=400)


def test_interrupted_video_leaves_no_file_at_the_output(tmp_path, long_clip, lineart_model):
    out = tmp_path / "out.mp4"
    process = subprocess.Popen(
        [sys.executable, "-m", "celpaint", "colorize", str(long_clip), "-o", str(out),
         "-m", str(lineart_model), "-q", "-b", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _interrupt_when(process, lambda: any(tmp_path.glob(".out.celpaint-partial*")))
    assert process.returncode == 130, process.stderr.read()
    assert "interrupted" in process.stderr.read().decode()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_frame_folder_resumes_to_the_same_result(tmp_path, long_clip, lineart_model):
    out = tmp_path / "frames"
    command = [sys.executable, "-m", "celpaint", "colorize", str(long_clip), "-o", str(out),
               "-m", str(lineart_model), "-q", "-b", "2"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _interrupt_when(process, lambda: out.is_dir() and len(list(out.glob("*.png"))) >= 20)
    assert process.returncode == 130
    done = len(list_images(out))
    assert 20 <= done < 400
    assert not list(out.glob(".*"))  # no half-written frame
    refused = run_cli(*command[3:])
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_cli(*[a for a in command[3:] if a != "-q"], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} already done" in resumed.stderr.replace("\n", " ")
    assert len(list_images(out)) == 400
    # Frames written before and after the interruption match an uninterrupted run.
    full = tmp_path / "full"
    assert main(["colorize", str(long_clip), "-o", str(full), "-m", str(lineart_model), "-q"]) == 0
    for name in ("frame_000001.png", f"frame_{done:06d}.png", "frame_000400.png"):
        assert np.abs(read_image(out / name).astype(int) - read_image(full / name)).max() <= 1


def test_an_input_is_never_written_over_under_any_name(tmp_path, ffmpeg, lineart_model):
    clip = make_clip(tmp_path / "clip.mp4", ffmpeg, frames=3, size=(32, 32), audio=False)
    frames = make_frames(tmp_path / "shots", count=2)
    (tmp_path / "link.mp4").symlink_to(clip)
    os.link(clip, tmp_path / "hard.mp4")
    (tmp_path / "shots link").symlink_to(frames)
    model = ["-m", str(lineart_model), "-q", "--overwrite"]
    cases = [
        ("colorize", clip, "-o", tmp_path / "link.mp4"),
        ("colorize", clip, "-o", tmp_path / "hard.mp4"),
        ("colorize", frames, "-o", tmp_path / "shots link"),  # the input folder
        ("colorize", frames / "f1.png", "-o", frames),  # a folder holding the input
        ("colorize", frames, clip, "-o", tmp_path),  # tmp_path/clip.mp4 is the second input
        ("lineart", clip, "-o", tmp_path / "hard.mp4"),
    ]
    before = _snapshot(tmp_path)
    for command, *args in cases:
        code = main([command, *map(str, args), *(model if command == "colorize" else ["-q"])])
        assert code == 2, args
    assert _snapshot(tmp_path) == before


def test_pipes_are_refused_instead_of_read(tmp_path, lineart_model):
    os.mkfifo(tmp_path / "frame.png")
    os.mkfifo(tmp_path / "clip.mp4")
    # A run that opened the pipe would wait forever; the timeout turns that into a failure.
    result = run_cli("colorize", tmp_path / "frame.png", "-o", tmp_path / "o.png",
                     "-m", lineart_model, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "named pipe" in result.stderr
    result = run_cli("info", tmp_path / "clip.mp4", timeout=60)
    assert result.returncode == 2 and "named pipe" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_the_pixel_limit_is_checked_before_decoding(tmp_path, ffmpeg, lineart_model, capsys):
    from tests.io.test_outputs import write_png_header

    model = ["-m", str(lineart_model), "-q"]
    big = write_png_header(tmp_path / "big.png", 13000, 13000)  # its pixel data is absent
    assert main(["colorize", str(big), "-o", str(tmp_path / "o.png"), *model]) == 2
    assert "--max-pixels 169000000" in capsys.readouterr().err
    huge = write_png_header(tmp_path / "huge.png", 30000, 30000)
    assert main(["info", str(huge)]) == 2
    assert "--max-pixels 900000000" in capsys.readouterr().err
    clip = make_clip(tmp_path / "clip.mp4", ffmpeg, frames=2, size=(32, 32), audio=False)
    for command in (["colorize", *model], ["lineart", "-q"], ["extract", "-q"]):
        assert main([*command, str(clip), "-o", str(tmp_path / "o"), "--max-pixels", "1023"]) == 2
        assert "32x32" in capsys.readouterr().err
    assert main(["colorize", str(clip), "-o", str(tmp_path / "o"), "--max-pixels", "1024",
                 *model]) == 0  # fmt: skip
    assert len(list_images(tmp_path / "o")) == 2
    assert not (tmp_path / "o.png").exists()


def test_opencv_s_own_pixel_limit_is_a_clear_error(tmp_path, lineart_model):
    image = write_image(tmp_path / "in.png", np.zeros((20, 20, 3), np.uint8))
    result = subprocess.run(
        [sys.executable, "-m", "celpaint", "colorize", str(image), "-o", str(tmp_path / "o.png"),
         "-m", str(lineart_model)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "100"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "larger than OpenCV decodes" in result.stderr and "unexpected" not in result.stderr


def test_tiny_frames_and_long_names(tmp_path, ffmpeg, lineart_model, capsys):
    model = ["-m", str(lineart_model), "-q"]
    # A 1x1 frame is colorized like any other (OpenCV once read it as a scalar).
    for size in ((1, 1), (1, 4), (3, 1)):
        pixel = write_image(tmp_path / "pixel.png", np.full((*size, 3), 128, np.uint8))
        assert main(["colorize", str(pixel), *model, "--overwrite"]) == 0
        assert read_image(tmp_path / "pixel_color.png").shape == (*size, 3)
    assert "unexpected" not in capsys.readouterr().err
    # 244 bytes is a valid name; the hidden temporary beside the output must fit too.
    name = "n" * 238
    image = write_image(tmp_path / f"{name}.png", np.full((6, 5, 3), 128, np.uint8))
    clip = make_clip(tmp_path / f"{name}.mp4", ffmpeg, frames=2, size=(32, 32), audio=False)
    assert main(["colorize", str(image), *model]) == 0
    assert main(["colorize", str(clip), *model]) == 0
    assert (tmp_path / f"{name}_color.png").is_file()
    assert probe(tmp_path / f"{name}_color.mp4", ffmpeg).frame_count == 2
    # A name past the limit is refused before any work, not failed after it.
    assert main(["colorize", str(image), "-o", str(tmp_path / ("m" * 252 + ".png")), *model]) == 2
    assert "longer than the 255 bytes" in capsys.readouterr().err


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, ffmpeg, lineart_model):
    from tests.io.test_outputs import dead_pid

    clip = make_clip(tmp_path / "clip.mp4", ffmpeg, frames=2, size=(32, 32), audio=False)
    out = tmp_path / "out.mp4"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale = tmp_path / f".out.celpaint-partial-{dead_pid()}.mp4"
        live = tmp_path / f".out.celpaint-partial-{sleeper.pid}.mp4"
        unrelated = tmp_path / f".other.celpaint-partial-{dead_pid()}.mp4"
        for path in (stale, live, unrelated):
            path.write_bytes(b"half a video")
        assert main(["colorize", str(clip), "-o", str(out), "-m", str(lineart_model), "-q"]) == 0
        assert not stale.exists()
        assert live.exists() and unrelated.exists()  # a live run's, another output's
        assert probe(out, ffmpeg).frame_count == 2
    finally:
        sleeper.kill()
        sleeper.wait()
