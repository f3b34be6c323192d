"""`celpaint train` through the real entry point, end to end into `celpaint colorize`."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from celpaint.cli.app import main
from celpaint.color import tensor as color
from celpaint.io.frames import list_images, read_image
from celpaint.models.checkpoint import load_model
from celpaint.training.rundir import STATE_NAME, load_train_state
from tests.conftest import make_clip

TINY = ["--depth", "3", "--base-channels", "4", "--max-channels", "8", "--disc-channels", "4",
        "--crop", "24", "--work-size", "64", "--batch-size", "2", "--workers", "0",
        "--threads", "1", "--samples", "2"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lightness(image: np.ndarray) -> torch.Tensor:
    return color.rgb_to_lab(torch.from_numpy(image).permute(2, 0, 1).float() / 255)[0]


def test_train_then_colorize_with_the_run(pairs, tmp_path, capfd):
    run = tmp_path / "runs" / "mine"
    data = ["--sketch", str(pairs / "sketch"), "--color", str(pairs / "color")]
    code = main(["train", "--model", "pix2pix", "--out", str(run), *data, "--epochs", "2", *TINY])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert "training pix2pix on cpu: 4 training / 1 validation pairs" in captured.err
    assert "trained 4 steps" in captured.err and "img/s" in captured.err
    assert "epoch 2/2: PSNR" in captured.err
    for name in ("generator", "discriminator", STATE_NAME, "losses.csv", "loss_curves.png",
                 "metrics.json", "samples/epoch_001.png", "samples/epoch_002.png"):  # fmt: skip
        assert (run / name).exists(), name

    out = tmp_path / "colored"
    code = main(["colorize", str(pairs / "sketch"), "-o", str(out), "--model", str(run)])
    assert code == 0, capfd.readouterr().err
    colored = list_images(out)
    assert [p.name for p in colored] == [p.name for p in list_images(pairs / "sketch")]
    assert read_image(colored[0]).shape == (32, 40, 3)


def test_lab_model_from_a_clip_keeps_lightness_when_colorizing(tmp_path, ffmpeg, capfd):
    clip = make_clip(tmp_path / "clip.mp4", ffmpeg, frames=6, size=(64, 48), audio=False)
    run = tmp_path / "lab"
    code = main(["train", "--model", "lab", "--out", str(run), "--color", str(clip),
                 "--epochs", "1", "--val-fraction", "0.34", *TINY])  # fmt: skip
    assert code == 0, capfd.readouterr().err
    _, config = load_model(run / "generator")
    assert (config.input_kind, config.output) == ("grayscale", "ab")
    frames = tmp_path / "frames"
    assert main(["extract", str(clip), "-o", str(frames)]) == 0
    out = tmp_path / "colored"
    assert main(["colorize", str(frames), "-o", str(out), "--model", str(run)]) == 0
    source = read_image(list_images(frames)[0])
    colored = read_image(list_images(out)[0])
    assert (_lightness(colored) - _lightness(source)).abs().mean() < 1.0


def test_bad_input_gives_clear_errors(pairs, tmp_path, capfd):
    sketch = tmp_path / "sketch"
    sketch.mkdir()
    for path in sorted((pairs / "sketch").iterdir())[:3]:
        (sketch / f"x_{path.name}").write_bytes(path.read_bytes())
    code = main(["train", "--out", str(tmp_path / "run"), "--sketch", str(sketch),
                 "--color", str(pairs / "color"), *TINY])  # fmt: skip
    err = capfd.readouterr().err
    assert code == 2
    assert err.startswith("error: 5 color frames have no line art") and "x_frame1.png" in err
    assert not (tmp_path / "run").exists()

    code = main(["train", "--out", str(tmp_path / "run"), "--color", str(pairs / "color"),
                 "--batch-size", "8", *TINY[:-10]])  # fmt: skip
    assert code == 2 and "fewer than one batch" in capfd.readouterr().err

    code = main(["train", "--out", str(tmp_path / "run"), "--model", "gan", *TINY])
    assert code == 2 and "--model must be pix2pix or lab" in capfd.readouterr().err


def test_existing_run_needs_resume_or_overwrite(pairs, tmp_path, capfd):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--sketch", str(pairs / "sketch"), "--color",
            str(pairs / "color"), "--epochs", "1", *TINY]  # fmt: skip
    assert main(args) == 0
    capfd.readouterr()
    assert main(args) == 2
    assert "holds another training run; pass --resume" in capfd.readouterr().err
    # A finished run resumes to nothing left to do; the data paths come from the run.
    assert main(["train", "--out", str(run), "--resume", "--threads", "1"]) == 0
    assert load_train_state(run / STATE_NAME)["step"] == 2
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 2
    assert "continues the run's schedule" in capfd.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--depth", "4"]) == 2
    assert "keeps its architecture" in capfd.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celpaint", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_step(run: Path, beyond: int, process: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if load_train_state(run / STATE_NAME)["step"] > beyond:
                return
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow  # two subprocesses: ~10-20 s
def test_ctrl_c_saves_and_resume_continues(pairs, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--sketch", str(pairs / "sketch"), "--color",
            str(pairs / "color"), "--epochs", "5000", "--save-every", "1", *TINY]  # fmt: skip
    process = _start(args, tmp_path)
    _wait_for_step(run, 0, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Continue with: celpaint train --out" in err
    first = load_train_state(run / STATE_NAME)["step"]

    process = _start(["train", "--out", str(run), "--resume"], tmp_path)
    _wait_for_step(run, first, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"resuming at step {first}" in err
    last = load_train_state(run / STATE_NAME)["step"]
    with (run / "losses.csv").open() as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == list(range(1, last + 1))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # torchrun starts three processes: ~10-15 s
def test_torchrun_two_processes(pairs, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "celpaint", "train", "--out", str(run), "--sketch", str(pairs / "sketch"),
        "--color", str(pairs / "color"), "--epochs", "2", "--val-fraction", "0", "--device",
        "cpu", *TINY,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert "x 2 processes" in result.stderr
    # 5 pairs, 2 per process per step: one global batch of 4 per epoch.
    assert load_train_state(run / STATE_NAME)["step"] == 2
    assert result.stderr.count("trained 2 steps") == 1  # only rank 0 reports
