"""Sharded colorizing through the real entry point: torchrun, ``--shard I/N`` and ``join``."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.io.frames import list_images, read_image, remove_stale_temporaries, write_image
from celpaint.io.media import probe
from celpaint.io.sources import open_source
from celpaint.ops.metrics import ciede2000
from tests.conftest import make_clip, make_frames
from tests.helpers import audio_stream_count, stream_duration

FRAMES = 40
WARMUP = ["--warm-up", "8"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, ffmpeg) -> Path:
    return make_clip(tmp_path_factory.mktemp("shard") / "clip.mp4", ffmpeg, FRAMES, (64, 48))


@pytest.fixture(scope="module")
def whole(tmp_path_factory, clip, lineart_model) -> np.ndarray:
    """The frames one process makes (lossless: the video holds them exactly)."""
    out = tmp_path_factory.mktemp("whole") / "whole.mp4"
    assert main(["colorize", str(clip), "-o", str(out), "-m", str(lineart_model), "--lossless",
                 "--device", "cpu", "-q"]) == 0  # fmt: skip
    return _read(out)


def _read(path: Path) -> np.ndarray:
    with open_source(path) as source:
        return np.stack(list(source.frames()))


def _assert_like_one_run(out: Path, clip: Path, whole: np.ndarray, ffmpeg: str) -> None:
    """Frames as one process makes them (identical in the first half, within Delta E 0.5 in
    the second), and the clip's frame count, rate and audio."""
    info = probe(out, ffmpeg)
    assert (info.frame_count, info.fps) == (FRAMES, Fraction(30000, 1001))
    assert audio_stream_count(out, ffmpeg) == 1
    assert stream_duration(out, ffmpeg, "0:a:0") == stream_duration(clip, ffmpeg, "0:a:0")
    frames = _read(out)
    assert np.array_equal(frames[:20], whole[:20])
    errors = [ciede2000(frame, truth) for frame, truth in zip(frames, whole, strict=True)]
    assert max(errors[20:]) <= 0.5, errors


def _colorize(*args) -> int:
    return main(["colorize", *map(str, args), "--device", "cpu", "-q"])


def test_two_shard_processes_and_join_make_one_run(tmp_path, clip, whole, lineart_model, ffmpeg):
    model = ["-m", lineart_model, "--lossless", *WARMUP]
    parts = [tmp_path / "part1.mp4", tmp_path / "part2.mp4"]
    assert _colorize(clip, "--shard", "2/2", "-o", parts[1], *model) == 0
    assert _colorize(clip, "--shard", "1/2", "-o", parts[0], *model) == 0
    out = tmp_path / "joined.mp4"
    # The audio comes from the clip the parts name.
    assert main(["join", str(parts[1]), str(parts[0]), "-o", str(out)]) == 0
    _assert_like_one_run(out, clip, whole, ffmpeg)


def test_join_refuses_a_missing_or_foreign_part(tmp_path, clip, lineart_model, capfd):
    model = ["-m", lineart_model, "--no-temporal"]
    for spec, name in (("1/3", "a.mp4"), ("3/3", "c.mp4"), ("2/2", "half.mp4")):
        assert _colorize(clip, "--shard", spec, "-o", tmp_path / name, *model) == 0
    capfd.readouterr()
    out = tmp_path / "joined.mp4"
    assert main(["join", str(tmp_path / "a.mp4"), str(tmp_path / "c.mp4"), "-o", str(out)]) == 2
    assert "part 2 of 3 of" in capfd.readouterr().err
    parts = [str(tmp_path / name) for name in ("a.mp4", "half.mp4", "c.mp4")]
    assert main(["join", *parts, "-o", str(out)]) == 2
    assert "cut into 2 parts, not 3" in capfd.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("spec", ["0/4", "5/4", "x/y", "1/0", "2", "-1/2"])
def test_bad_shard_specs_are_usage_errors(tmp_path, clip, lineart_model, capfd, spec):
    out = tmp_path / "part.mp4"
    assert _colorize(clip, "--shard", spec, "-o", out, "-m", lineart_model) == 2
    assert "--shard" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_shard_needs_one_clip_and_an_output(tmp_path, clip, lineart_model, capfd):
    model = ["-m", lineart_model]
    assert _colorize(clip, clip, "--shard", "1/2", "-o", tmp_path / "out", *model) == 2
    assert "one clip, but 2 inputs" in capfd.readouterr().err
    assert _colorize(clip, "--shard", "1/2", *model) == 2
    assert "--shard needs -o" in capfd.readouterr().err
    assert _colorize(clip, "--shard", "1/2", "-o", tmp_path / "p.mp4", "-r", "1=x.png", *model) == 2
    assert "cannot be combined with --shard" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(*args) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "celpaint", "colorize", *map(str, args), "--device", "cpu",
    ]  # fmt: skip


_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}


@pytest.mark.slow  # torchrun starts three processes: ~10 s
def test_torchrun_splits_one_clip_and_joins_it(tmp_path, clip, whole, lineart_model, ffmpeg):
    out = tmp_path / "out.mp4"
    command = _torchrun(clip, "-o", out, "-m", lineart_model, "--lossless", *WARMUP)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("colored 40 frames") == 1  # rank 0 reports the whole clip
    _assert_like_one_run(out, clip, whole, ffmpeg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no part left


@pytest.mark.slow
def test_torchrun_overwriting_a_folder_leaves_only_this_clips_frames(tmp_path, clip, lineart_model):
    out = tmp_path / "frames"
    out.mkdir()
    # An earlier, longer output's frame, and a file that is not a frame.
    write_image(out / "frame_000099.png", np.zeros((8, 8, 3), np.uint8))
    (out / "notes.txt").write_text("mine")
    command = _torchrun(clip, "-o", out, "-m", lineart_model, "--overwrite", *WARMUP)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_ENV)
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in out.iterdir())
    assert names == [f"frame_{n:06d}.png" for n in range(1, 41)] + ["notes.txt"]


@pytest.mark.slow
def test_torchrun_deals_several_inputs_out_whole(tmp_path, clip, whole, lineart_model):
    frames = make_frames(tmp_path / "shots", count=6)
    out = tmp_path / "out"
    command = _torchrun(clip, frames, "-o", out, "-m", lineart_model, "--lossless")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_ENV)
    assert result.returncode == 0, result.stderr
    # Whole inputs are colored by one process each, exactly as one process colors them.
    assert np.array_equal(_read(out / "clip.mp4"), whole)
    alone = tmp_path / "alone"
    assert _colorize(frames, "-o", alone, "-m", lineart_model) == 0
    for path in list_images(alone):
        assert np.array_equal(read_image(out / "shots" / path.name), read_image(path))


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_with_nothing_at_the_output(tmp_path, ffmpeg, lineart_model):
    clip = make_clip(tmp_path / "long.mp4", ffmpeg, frames=400, size=(96, 64))
    out = tmp_path / "out.mp4"
    command = _torchrun(clip, "-o", out, "-m", lineart_model, "--batch-size", "1")
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=_ENV)
    # The second rank's part, while it is written, names the rank's process.
    pid = _wait_for_part(tmp_path, "part2of2", process)
    os.kill(pid, signal.SIGKILL)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    # torchrun names the killed rank; rank 0 stops, by torchrun's SIGTERM or through its lost
    # peer, and says so.
    assert "SIGKILL" in err
    assert "interrupted: nothing incomplete" in err or "another process of the distributed" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["long.mp4"]
    # What the killed process could not remove is a temporary of a dead process, which the
    # next run (or anyone) clears.
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_a_failing_rank_ends_the_run_with_nothing_left(tmp_path, clip, lineart_model, ffmpeg):
    # An ffmpeg that fails for the second rank's part only, as a full disk would.
    broken = tmp_path / "ffmpeg"
    broken.write_text(
        f'#!/bin/sh\ncase "$*" in *part2of2*) echo "No space left on device" >&2; exit 1;; '
        f'esac\nexec "{ffmpeg}" "$@"\n'
    )
    broken.chmod(0o755)
    out = tmp_path / "out" / "out.mp4"
    out.parent.mkdir()
    command = _torchrun(clip, "-o", out, "-m", lineart_model, "--ffmpeg", broken)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_ENV)
    assert result.returncode != 0
    assert "No space left on device" in result.stderr
    assert "process 1 of the distributed run failed" in result.stderr  # said by rank 0
    assert list(out.parent.iterdir()) == []  # no output, no part left behind


def _wait_for_part(folder: Path, mark: str, process: subprocess.Popen) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        for path in folder.iterdir():
            found = re.search(r"celpaint-partial-(\d+)", path.name)
            if mark in path.name and found:
                return int(found[1])
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"no part {mark} appeared: {process.communicate()[1]}")
