"""Shared fixtures: generated clips, frame folders and tiny random checkpoints."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from celpaint.io.frames import write_image
from celpaint.io.media import find_ffmpeg
from celpaint.models.checkpoint import ModelConfig, save_model
from celpaint.models.registry import build

CLIP_SIZE = (250, 142)  # odd-looking on purpose: not a multiple of any network size
CLIP_RATE = "30000/1001"
CLIP_FRAMES = 24


def tiny_unet_args(out_channels: int) -> dict:
    return dict(in_channels=1, out_channels=out_channels, depth=4, base_channels=4, max_channels=16)


def make_checkpoint(directory: Path, kind: str = "lineart", work_size: int = 128) -> Path:
    """A tiny randomly initialised generator saved in the checkpoint format."""
    torch.manual_seed(0)
    output = "rgb" if kind == "lineart" else "ab"
    args = tiny_unet_args(3 if output == "rgb" else 2)
    model = build("unet", **args)
    config = ModelConfig("unet", args, kind, output, size_multiple=16, work_size=work_size)
    return save_model(model, directory, config)


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory) -> Path:
    """ONNX exports (the onnxruntime backend's cache) go to a temporary folder, never to the
    user's cache; CLI subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("celpaint-cache")
    previous = os.environ.get("CELPAINT_CACHE")
    os.environ["CELPAINT_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CELPAINT_CACHE", None)
    else:
        os.environ["CELPAINT_CACHE"] = previous


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return find_ffmpeg()


def make_clip(
    path: Path,
    ffmpeg: str,
    frames: int = CLIP_FRAMES,
    size: tuple[int, int] = CLIP_SIZE,
    rate: str = CLIP_RATE,
    audio: bool = True,
    extra: list[str] | None = None,
) -> Path:
    """A test-pattern clip with a sine audio track, made by ffmpeg's lavfi sources."""
    width, height = size
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={rate}",
    ]  # fmt: skip
    if audio:
        command += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    command += ["-frames:v", str(frames)]
    if audio:
        command += ["-c:a", "aac", "-shortest"]
    if path.suffix in (".mp4", ".mkv", ".mov"):
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        command += ["-c:v", "libx264", "-pix_fmt", pix_fmt]
    command += [*(extra or []), str(path)]
    subprocess.run(command, check=True)
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory, ffmpeg) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "test pattern.mp4", ffmpeg)


@pytest.fixture(scope="session")
def lineart_model(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny-lineart", "lineart")


@pytest.fixture(scope="session")
def gray_model(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny-gray", "grayscale")


def make_frames(folder: Path, count: int = 5, size: tuple[int, int] = (64, 48), names=None):
    """A folder of distinct frames named f1, f2, ..., f10 (natural order matters)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    names = names or [f"f{i}" for i in range(1, count + 1)]
    for index, name in enumerate(names):
        frame = np.full((height, width, 3), 255, np.uint8)
        frame[:, : 4 + index * 3] = rng.integers(0, 255, 3, dtype=np.uint8)
        write_image(folder / f"{name}.png", frame)
    return folder


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread: tiny networks gain nothing from a second, and on a busy
    machine torch's threads wait for each other, so one keeps training tests fast and steady."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """Five line-art/color pairs of 40x32 in ``sketch/`` and ``color/``."""
    from tests.training.test_data import make_pairs

    root = tmp_path_factory.mktemp("pairs")
    make_pairs(root, count=5, size=(40, 32))
    return root


@pytest.fixture
def threads_before() -> set[threading.Thread]:
    return set(threading.enumerate())
