"""`celpaint train` through the real entry point, end to end into `celpaint colorize`."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from celpaint.cli.app import main
from celpaint.color import tensor as color
from celpaint.io.frames import list_images, read_image, temporary_path
from celpaint.models.checkpoint import load_model
from celpaint.training.rundir import LOCK_NAME, STATE_NAME, load_train_state
from tests.conftest import make_clip
from tests.helpers import Killed, die_at

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


def test_bad_input_gives_clear_errors(pairs, tmp_path, capfd, monkeypatch):
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

    monkeypatch.setenv("COLUMNS", "300")  # the parser's error in one line
    code = main(["train", "--out", str(tmp_path / "run"), "--model", "gan", *TINY])
    assert code == 2 and "'gan' is not one of 'pix2pix', 'lab'" in capfd.readouterr().err


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
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.1"]) == 2
    assert "continues the schedule of the run" in capfd.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--depth", "4"]) == 2
    assert "--depth 4 (the run's: 3)" in capfd.readouterr().err
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
def test_resuming_shows_the_right_epoch_and_this_sessions_rate(pairs, tmp_path, capfd):
    run = tmp_path / "run"
    data = ["--sketch", str(pairs / "sketch"), "--color", str(pairs / "color")]
    assert main(["train", "--out", str(run), *data, "--epochs", "1", *TINY]) == 0
    capfd.readouterr()
    assert main(["train", "--out", str(run), "--resume"]) == 0
    err = capfd.readouterr().err
    assert f"{run} has finished its 1 epoch (2 steps); nothing to do" in err
    assert "epoch 2/1" not in err and "img/s" not in err and "reading data" not in err

    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--threads", "1"]) == 0
    err = capfd.readouterr().err
    assert "2 steps per epoch, 4 steps, resuming at step 2" in err
    assert "epoch 2/2: PSNR" in err and "epoch 3/2" not in err
    assert "trained 2 steps (steps 3-4) in" in err and " 0.0 img/s" not in err
    assert load_train_state(run / STATE_NAME)["step"] == 4


def test_a_config_file_starts_a_run_and_the_command_line_overrides_it(pairs, tmp_path, capfd):
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'sketch = "{pairs / "sketch"}"\ncolor = "{pairs / "color"}"\nepochs = 1\ndepth = 3\n'
        "base_channels = 4\nmax-channels = 8\ndisc_base_channels = 4\ncrop = 24\n"
        "work_size = 64\nbatch_size = 2\nworkers = 0\nthreads = 1\nsamples = 2\n"
        'lr = 0.001\nnorm = "instance"\n'
    )
    run = tmp_path / "run"
    assert main(["train", "--config", str(toml), "--out", str(run), "--lr", "0.0005"]) == 0
    written = json.loads((run / "config.json").read_text())
    assert (written["lr"], written["norm"], written["depth"], written["epochs"]) == (
        0.0005, "instance", 3, 1,
    )  # fmt: skip
    assert written["out"] == str(run) and "resume" not in written
    # The run's config.json starts another run like it; --resume agrees with it.
    again = tmp_path / "again"
    config = run / "config.json"
    assert main(["train", "--config", str(config), "--out", str(again)]) == 0
    assert json.loads((again / "config.json").read_text()) == {**written, "out": str(again)}
    capfd.readouterr()
    assert main(["train", "--config", str(config), "--resume", "--epochs", "2"]) == 0
    assert "trained 2 steps (steps 3-4)" in capfd.readouterr().err

    toml.write_text('epochs = 1\ncolour = "red"\n')
    assert main(["train", "--config", str(toml), "--out", str(tmp_path / "x")]) == 2
    assert "unknown option(s) colour" in capfd.readouterr().err
    assert main(["train", "--config", str(config), "--resume", "--norm", "batch"]) == 2
    assert "--norm 'batch' (the run's: 'instance')" in capfd.readouterr().err
    toml.write_text("epochs = 1\n")
    assert main(["train", "--config", str(toml)]) == 2
    assert "pass --out RUN_FOLDER" in capfd.readouterr().err
    assert not (tmp_path / "x").exists()


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


# Faults that lose nothing: what `train` refuses, and what a killed or failing run leaves.


def _data(pairs: Path) -> list[str]:
    return ["--sketch", str(pairs / "sketch"), "--color", str(pairs / "color")]


def _train(run: Path, pairs: Path, *extra: str) -> list[str]:
    return ["train", "--out", str(run), *_data(pairs), "--epochs", "1", *TINY, *extra]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its contents."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _loss_steps(run: Path) -> list[int]:
    with (run / "losses.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


@pytest.mark.parametrize(
    "option",
    [["--depth", "1"], ["--base-channels", "0"], ["--max-channels", "0"],
     ["--disc-channels", "-1"], ["--seed", "-1"], ["--disc-layers", "0"], ["--lr", "nan"],
     ["--val-fraction", "1"], ["--dropout", "1"], ["--threads", "0"], ["--workers", "-1"],
     ["--save-every", "-1"], ["--samples", "-1"], ["--val-limit", "-1"], ["--epochs", "0"],
     ["--pixel-weight", "-1"], ["--base-channels", "1000000000"], ["--depth", "40"]],
)  # fmt: skip
def test_options_out_of_range_are_refused_before_the_run_folder_exists(
    pairs, tmp_path, capfd, option
):
    run = tmp_path / "run"
    code = main([*_train(run, pairs), *option])
    err = capfd.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {option[0]} must be") and err.count("\n") == 1, err
    assert not run.exists()


def test_overwrite_replaces_only_the_files_of_a_run(pairs, tmp_path, capfd):
    # A folder that is no run keeps everything, whatever its files are called.
    mine = tmp_path / "mine"
    (mine / "samples").mkdir(parents=True)
    (mine / "samples" / "holiday.png").write_bytes(b"photo")
    (mine / "metrics.json").write_text('{"mine": true}')
    before = _tree(mine)
    assert main(_train(mine, pairs, "--overwrite")) == 2
    err = capfd.readouterr().err
    assert "holds no celpaint run" in err and "pass an empty or new --out" in err
    assert _tree(mine) == before

    # A run folder: the run's files are replaced, the user's beside them kept.
    run = tmp_path / "run"
    assert main([*_train(run, pairs), "--epochs", "2"]) == 0
    (run / "notes.txt").write_text("mine")
    (run / "samples" / "favourite.png").write_bytes(b"x")
    assert main(_train(run, pairs, "--overwrite")) == 0, capfd.readouterr().err
    assert (run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png",
                                                                   "favourite.png"]  # fmt: skip
    assert load_train_state(run / STATE_NAME)["step"] == 2 and _loss_steps(run) == [1, 2]


@pytest.mark.parametrize("where", ["is", "lies inside", "holds"])
def test_out_may_not_be_in_or_around_the_data(pairs, tmp_path, capfd, where):
    data = tmp_path / "data"
    shutil.copytree(pairs, data)
    out = {"is": data / "color", "lies inside": data / "sketch" / "run", "holds": data}[where]
    before = _tree(data)
    assert main(_train(out, data)) == 2
    err = capfd.readouterr().err
    assert f"--out {out} {where} the training data --" in err, err
    assert _tree(data) == before and not (data / "sketch" / "run").exists()


@pytest.mark.slow  # ~30 short runs: ~30-60 s
def test_a_run_killed_at_any_rename_loads_and_resumes_with_every_step_logged(
    pairs, tmp_path, monkeypatch, capfd
):
    args = ["--save-every", "1"]  # 2 steps: a periodic checkpoint, then the epoch's
    with monkeypatch.context() as patch:
        calls = die_at(patch, 10**9)
        assert main(_train(tmp_path / "dry", pairs, *args)) == 0
    total = len(calls)
    assert total >= 10
    for k in range(1, total + 1):
        run = tmp_path / f"run{k}"
        with monkeypatch.context() as patch:
            die_at(patch, k)
            with pytest.raises(Killed):
                main(_train(run, pairs, *args))
        if (run / "generator").exists() or (run / ".generator.previous").exists():
            load_model(run)  # a checkpoint, once there was one, is there at every instant
        if (run / STATE_NAME).is_file():
            code = main(["train", "--out", str(run), "--resume", "--threads", "1"])
        else:
            code = main(_train(run, pairs, *args, "--overwrite"))
        assert code == 0, (k, capfd.readouterr().err)
        assert _loss_steps(run) == [1, 2], k
        assert not list(run.rglob(".*")), k  # the killed run's temporaries are gone
        load_model(run)


def test_the_next_run_removes_what_killed_runs_left(pairs, tmp_path, capfd):
    run = tmp_path / "run"
    assert main(_train(run, pairs)) == 0
    dead, alive = _dead_pid(), os.getppid()
    left = [".loss_curves.png.partial.png", ".train_state.pt.partial.pt",
            "samples/.epoch_001.png.partial.png", temporary_path(run / "losses.csv", dead).name,
            f".generator.tmp-{dead}-x/model.safetensors", f".discriminator.tmp-{dead}-y/a.json",
            f".generator.tmp-{alive}-z/config.json"]  # fmt: skip
    for name in left:
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_bytes(b"left behind")
    shutil.copytree(run / "generator", run / ".generator.previous")
    assert main(["train", "--out", str(run), "--resume", "--threads", "1"]) == 0
    # A live process's staging folder may still be in use: it stays.
    assert sorted(p.name for p in run.rglob(".*")) == [f".generator.tmp-{alive}-z"]
    assert _loss_steps(run) == [1, 2]


@contextlib.contextmanager
def _held_lock(run: Path, pid: int) -> Iterator[None]:
    run.mkdir(parents=True, exist_ok=True)
    with (run / LOCK_NAME).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write(f"{pid}\n")
        handle.flush()
        yield


def test_a_second_train_on_a_locked_out_is_refused(pairs, tmp_path, capfd):
    run = tmp_path / "run"
    assert main(_train(run, pairs)) == 0
    capfd.readouterr()
    assert not (run / LOCK_NAME).exists()  # a run that ended keeps no lock file
    for args in (_train(tmp_path / "fresh", pairs), ["train", "--out", str(run), "--resume"],
                 _train(run, pairs, "--overwrite")):  # fmt: skip
        out = Path(args[2])
        with _held_lock(out, 4242):
            before = _tree(out)
            assert main(args) == 2
            err = capfd.readouterr().err
            assert err == (f"error: another celpaint train is writing {out} (pid 4242); wait for "
                           "it or choose another --out\n")  # fmt: skip
            assert _tree(out) == before


@pytest.mark.slow  # a training subprocess: ~10 s
def test_two_processes_on_one_out(pairs, tmp_path, capfd):
    run = tmp_path / "run"
    first = _start([*_train(run, pairs), "--epochs", "5000", "--save-every", "1"], tmp_path)
    _wait_for_step(run, 0, first)
    assert main(_train(run, pairs, "--overwrite")) == 2
    assert f"another celpaint train is writing {run} (pid {first.pid})" in capfd.readouterr().err
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert not (run / LOCK_NAME).exists()


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# Room for the first logs only, or for the first training state too (~240 kB) but not more.
@pytest.mark.parametrize("room_kib", [48, 300])
def test_a_full_disk_is_a_clear_error_and_the_run_continues_after(pairs, tmp_path, capfd, room_kib):
    with _tmpfs(tmp_path / "disk", "size=1m") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"x" * (shutil.disk_usage(disk).free - room_kib * 1024))
        run = disk / "run"
        code = main(_train(run, pairs, "--epochs", "2"))
        err = capfd.readouterr().err
        assert code == 1, err
        assert f"error: no space left on the device holding {run}; free space and " in err, err
        assert [p.name for p in run.rglob(".*")] in ([], [LOCK_NAME])  # no temporaries
        filler.unlink()
        if "--resume" in err:
            assert main(["train", "--out", str(run), "--resume", "--threads", "1"]) == 0
        else:
            assert "--overwrite" in err
            assert main(_train(run, pairs, "--epochs", "2", "--overwrite")) == 0
        assert _loss_steps(run) == [1, 2, 3, 4]
        load_model(run)


def test_a_read_only_out_is_refused_before_any_work(pairs, tmp_path, capfd):
    if os.geteuid() == 0:
        context = _tmpfs(tmp_path / "locked", "ro,size=64k")
    else:
        (tmp_path / "locked").mkdir()
        (tmp_path / "locked").chmod(0o555)
        context = contextlib.nullcontext(tmp_path / "locked")
    with context as locked:
        for out in (locked, locked / "runs" / "new"):
            assert main(_train(out, pairs)) == 2
            err = capfd.readouterr().err
            assert f"cannot write the run to {out}: the folder {locked} is not writable" in err
