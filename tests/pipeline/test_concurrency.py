"""Concurrency correctness of the streaming pipeline (not its speed: nothing here is timed).

The pipeline must give exactly what a plain sequential loop gives, keep the frame order whatever
each stage's pace, end with the failing stage's own error and no output, leave no thread or
ffmpeg process behind, and survive out-of-memory errors without losing or repeating a frame.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from celpaint.device import torch_threads
from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.sinks import EncodeOptions, VideoSink
from celpaint.io.sources import Source
from celpaint.io.video import VideoReader
from celpaint.models.checkpoint import ModelConfig
from celpaint.pipeline.api import colorize
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer, generator_workers
from celpaint.pipeline.engine import run_jobs
from celpaint.pipeline.jobs import plan
from tests.helpers import assert_nothing_left

BATCH = 5  # does not divide the clip's 24 frames, so the last batch is a short one


def _read_video(path: Path, ffmpeg: str) -> list[np.ndarray]:
    return [frame.copy() for frame in VideoReader(path, ffmpeg)]


def _batches(frames: np.ndarray, transform) -> np.ndarray:
    """The sequential reference: the same batches, one after the other, in this thread."""
    return np.concatenate(
        [transform(frames[start : start + BATCH]) for start in range(0, len(frames), BATCH)]
    )


@pytest.mark.parametrize("output", ["out.mkv", "frames"])
def test_output_is_identical_to_a_sequential_run(tmp_path, clip, ffmpeg, lineart_model, output):
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu", batch_size=BATCH)
    expected = _batches(np.stack(_read_video(clip, ffmpeg)), colorizer.colorize)
    options = EncodeOptions(lossless=True)
    jobs = plan([clip], tmp_path / output, options)
    run_jobs(jobs, BATCH, transform=colorizer.colorize)
    if output == "frames":
        produced = [read_image(path) for path in list_images(tmp_path / output)]
    else:
        produced = _read_video(tmp_path / output, ffmpeg)
    np.testing.assert_array_equal(np.stack(produced), expected)


def test_stateful_colorizing_is_identical_to_a_sequential_run(
    tmp_path, clip, ffmpeg, lineart_model
):
    # Temporal smoothing carries state from frame to frame, so any reordering or repeat in the
    # pipeline would change every later frame.
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu", batch_size=BATCH)
    options = EncodeOptions(lossless=True)
    stream = colorizer.stream(ColorizeOptions())
    # With as many torch threads per forward pass as colorize gives each of its passes: a
    # convolution's float sums may round differently when split over another thread count.
    with torch_threads(generator_workers(colorizer)[1]):
        expected = _batches(np.stack(_read_video(clip, ffmpeg)), stream)
    colorize([clip], tmp_path / "out.mkv", colorizer, encode=options)
    np.testing.assert_array_equal(np.stack(_read_video(tmp_path / "out.mkv", ffmpeg)), expected)


def _numbered_frames(folder: Path, count: int) -> Path:
    """Frames whose every pixel holds the frame's index, so order is visible in any frame."""
    folder.mkdir()
    for index in range(count):
        write_image(folder / f"f{index:03d}.png", np.full((24, 32, 3), index, np.uint8))
    return folder


def _frame_indices(frames) -> list[int]:
    indices = []
    for frame in frames:
        assert (frame == frame.flat[0]).all(), "a frame mixes pixels of several frames"
        indices.append(int(frame.flat[0]))
    return indices


@pytest.mark.parametrize(("seed", "workers"), [(0, 1), (1, 1), (2, 1), (0, 2), (1, 3)])
def test_order_is_kept_under_random_delays_in_every_stage(
    tmp_path, ffmpeg, threads_before, seed, workers
):
    source = _numbered_frames(tmp_path / "in", 40)
    rng = random.Random(seed)
    lock = threading.Lock()

    def pause(longest: float) -> None:
        with lock:  # random.Random is shared by three threads
            delay = rng.random() * longest
        time.sleep(delay)

    original_frames, original_write = Source.frames, VideoSink.write

    def slow_frames(self):
        for frame in original_frames(self):
            pause(0.01)
            yield frame

    def slow_transform(frames):
        pause(0.03)
        return frames.copy()

    def slow_write(self, name, rgb):
        pause(0.01)
        original_write(self, name, rgb)

    out = tmp_path / "out.mkv"
    options = EncodeOptions(lossless=True)
    batch_size = rng.choice([1, 3, 7])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Source, "frames", slow_frames)
        patch.setattr(VideoSink, "write", slow_write)
        jobs = plan([source], out, options)
        (result,) = run_jobs(jobs, batch_size, transform=slow_transform, workers=workers)
    assert result.frames == 40
    assert _frame_indices(_read_video(out, ffmpeg)) == list(range(40))
    assert_nothing_left(threads_before)


class StageFailure(Exception):
    pass


class _ThreeStages:
    """A transform in three stages (see ``engine.transform_stages``) that hand each other
    different kinds of objects, pause at random, and can fail in one stage at one batch."""

    def __init__(self, pause=lambda: None, failing: int | None = None, at: int = 0):
        self.pause, self.failing, self.at = pause, failing, at
        self.calls = [0, 0, 0]
        self._lock = threading.Lock()  # the first stage may run on several threads

    def stages(self):
        return [self.first, self.second, self.third]

    def _step(self, number: int) -> None:
        with self._lock:
            self.calls[number] += 1
            call = self.calls[number]
        self.pause()
        if number == self.failing and call == self.at + 1:
            raise StageFailure(f"stage {number} failed")

    def first(self, frames):
        self._step(0)
        return {"frames": frames.astype(np.int16)}

    def second(self, item):
        self._step(1)
        return [255 - frame for frame in item["frames"]]

    def third(self, frames):
        self._step(2)
        return (255 - np.stack(frames)).astype(np.uint8)


@pytest.mark.parametrize(("seed", "workers"), [(0, 1), (1, 1), (0, 2), (1, 2)])
def test_order_is_kept_through_several_transform_stages(
    tmp_path, ffmpeg, threads_before, seed, workers
):
    source = _numbered_frames(tmp_path / "in", 30)
    rng = random.Random(seed)
    lock = threading.Lock()

    def pause() -> None:
        with lock:
            delay = rng.random() * 0.02
        time.sleep(delay)

    out = tmp_path / "out.mkv"
    options = EncodeOptions(lossless=True)
    transform = _ThreeStages(pause)
    jobs = plan([source], out, options)
    (result,) = run_jobs(jobs, 4, transform=transform, workers=workers)
    assert result.frames == 30 and transform.calls == [8, 8, 8]
    assert _frame_indices(_read_video(out, ffmpeg)) == list(range(30))
    assert_nothing_left(threads_before)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("failing, at", [(0, 0), (1, 0), (1, 3), (2, 0), (2, 5), (0, 4)])
def test_an_error_in_any_transform_stage_ends_the_run(
    tmp_path, clip, threads_before, failing, at, workers
):
    out = tmp_path / "out.mp4"
    options = EncodeOptions()
    jobs = plan([clip], out, options)
    with pytest.raises(StageFailure, match=f"stage {failing} failed"):
        run_jobs(jobs, 3, transform=_ThreeStages(failing=failing, at=at), workers=workers)
    assert list(tmp_path.iterdir()) == []
    assert_nothing_left(threads_before)


def _fail_in(stage: str, at: int, patch: pytest.MonkeyPatch):
    """Make ``stage`` fail on its ``at``-th frame or batch; returns the transform to run."""
    original_frames, original_write = Source.frames, VideoSink.write
    original_close = VideoSink.close

    def frames(self):
        for index, frame in enumerate(original_frames(self)):
            if stage == "decode" and index == at:
                raise StageFailure("decode failed")
            yield frame

    def write(self, name, rgb):
        if stage == "encode" and self.frames_written == at:
            raise StageFailure("encode failed")
        original_write(self, name, rgb)

    def close(self):
        if stage == "finish":
            raise StageFailure("finish failed")
        return original_close(self)

    calls = {"batches": 0}

    def transform(batch):
        calls["batches"] += 1
        if stage == "transform" and calls["batches"] == at + 1:
            raise StageFailure("transform failed")
        return batch

    patch.setattr(Source, "frames", frames)
    patch.setattr(VideoSink, "write", write)
    patch.setattr(VideoSink, "close", close)
    return transform


@pytest.mark.parametrize(
    "stage, at",
    [("decode", 0), ("decode", 7), ("transform", 0), ("transform", 4), ("encode", 0),
     ("encode", 10), ("finish", 0)],
)  # fmt: skip
def test_an_error_in_each_stage_ends_the_run_with_it_and_no_output(
    tmp_path, clip, threads_before, stage, at
):
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    options = EncodeOptions()
    with pytest.MonkeyPatch.context() as patch:
        transform = _fail_in(stage, at, patch)
        jobs = plan([clip], out_folder / "out.mp4", options)
        with pytest.raises(StageFailure, match=f"{stage} failed"):
            run_jobs(jobs, 3, transform=transform)
    assert list(out_folder.iterdir()) == []
    assert_nothing_left(threads_before)


def test_an_error_while_other_stages_wait_on_full_queues(tmp_path, clip, threads_before):
    # A slow transform lets the decoder fill its queue and block; the failure must still end
    # the run rather than leave the decoder waiting for room forever.
    out = tmp_path / "out.mp4"
    options = EncodeOptions()
    calls = {"batches": 0}

    def slow_then_failing(batch):
        calls["batches"] += 1
        time.sleep(0.2)
        if calls["batches"] == 3:
            raise StageFailure("transform failed")
        return batch

    jobs = plan([clip], out, options)
    with pytest.raises(StageFailure):
        run_jobs(jobs, 1, transform=slow_then_failing)
    assert list(tmp_path.iterdir()) == []
    assert_nothing_left(threads_before)


def test_success_leaves_nothing_behind(tmp_path, clip, threads_before):
    options = EncodeOptions()
    (result,) = run_jobs(plan([clip], tmp_path / "o.mp4", options), 4)
    assert result.frames == 24 and result.output.exists()
    assert_nothing_left(threads_before)


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_while_waiting_on_a_stage_stops_everything(tmp_path, clip, threads_before, workers):
    """A real SIGINT reaching the main thread while it waits for the (slow) decoder (or, with
    workers, for the generator threads)."""
    out = tmp_path / "out.mp4"
    options = EncodeOptions()
    original_frames = Source.frames

    def slow_frames(self):
        for index, frame in enumerate(original_frames(self)):
            if index == 6:
                os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            yield frame

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Source, "frames", slow_frames)
            jobs = plan([clip], out, options)
            with pytest.raises(KeyboardInterrupt):
                run_jobs(jobs, 2, transform=lambda batch: batch, workers=workers)
                # The signal may land just after the run; waiting keeps it inside the raises.
                time.sleep(5)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert list(tmp_path.iterdir()) == []
    assert_nothing_left(threads_before)


def test_cpu_colorize_runs_two_single_threaded_generator_passes(
    tmp_path, clip, ffmpeg, lineart_model, threads_before, monkeypatch
):
    from celpaint.pipeline import colorizer as colorizer_module

    monkeypatch.setattr(colorizer_module, "usable_cores", lambda: 4)
    colorizer = Colorizer.from_pretrained(lineart_model, device="cpu", batch_size=3)
    assert colorizer_module.generator_workers(colorizer) == (2, 2)
    colorizer.compiled = True  # a compiled model's calls must not overlap
    assert colorizer_module.generator_workers(colorizer) == (1, None)
    colorizer.compiled = False
    monkeypatch.setattr(colorizer_module, "usable_cores", lambda: 2)
    assert colorizer_module.generator_workers(colorizer) == (2, 1)

    seen: list[tuple[str, int]] = []
    original = colorizer.predict_work_lab

    def recording(rgb, geometry):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        time.sleep(0.02)  # long enough for the other worker to take the next batch
        return original(rgb, geometry)

    monkeypatch.setattr(colorizer, "predict_work_lab", recording)
    threads = torch.get_num_threads()
    options = EncodeOptions(lossless=True)
    colorize([clip], tmp_path / "out.mkv", colorizer, encode=options)
    assert torch.get_num_threads() == threads  # restored
    assert {name for name, _ in seen} == {"celpaint-stage-0-0", "celpaint-stage-0-1"}
    assert {count for _, count in seen} == {1}
    # The same frames as one pass of every batch in order (smoothing included).
    monkeypatch.setattr(colorizer, "predict_work_lab", original)
    stream = colorizer.stream(ColorizeOptions())
    frames = np.stack(_read_video(clip, ffmpeg))
    with torch_threads(1):
        expected = [stream(frames[at : at + 3]) for at in range(0, len(frames), 3)]
    produced = np.stack(_read_video(tmp_path / "out.mkv", ffmpeg))
    np.testing.assert_array_equal(produced, np.concatenate(expected))
    assert_nothing_left(threads_before)


@pytest.mark.parametrize("model", ["lineart_model", "gray_model"])
def test_rendering_on_several_threads_changes_nothing(
    tmp_path, ffmpeg, threads_before, monkeypatch, request, model
):
    from celpaint.pipeline import colorizer as colorizer_module
    from tests.conftest import make_clip

    # Larger than the work size, so every frame is upsampled (the costly, threaded step).
    clip = make_clip(tmp_path / "clip.mp4", ffmpeg, frames=9, size=(200, 120))
    frames = np.stack(_read_video(clip, ffmpeg))
    colorizer = Colorizer.from_pretrained(request.getfixturevalue(model), work_size=64)
    params = ColorizeOptions()
    monkeypatch.setattr(colorizer_module, "render_workers", lambda count: 1)
    one = _batches(frames, colorizer.stream(params))
    monkeypatch.setattr(colorizer_module, "render_workers", lambda count: min(count, 3))
    several = _batches(frames, colorizer.stream(params))
    np.testing.assert_array_equal(one, several)
    assert_nothing_left(threads_before)


class _IdentityGenerator(nn.Module):
    """A stand-in generator that paints each frame with its own gray level and runs out of
    "device memory" for batches bigger than ``limit``."""

    def __init__(self, limit: int, error: type[Exception]):
        super().__init__()
        self.limit, self.error = limit, error
        self.batch_sizes: list[int] = []
        self.anchor = nn.Parameter(torch.zeros(()))  # so .to(device) has something to move

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(source))
        if len(source) > self.limit:
            if self.error is RuntimeError:
                raise RuntimeError("CUDA error: out of memory (fake)")
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return source.repeat(1, 3, 1, 1) + self.anchor


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_out_of_memory_backoff_keeps_every_frame_once_in_order(tmp_path, ffmpeg, error):
    source = _numbered_frames(tmp_path / "in", 30)
    generator = _IdentityGenerator(limit=2, error=error)
    config = ModelConfig("unet", {}, "lineart", "rgb", size_multiple=8, work_size=64)
    colorizer = Colorizer(generator, config, device="cpu", batch_size=8)
    out = tmp_path / "out.mkv"
    options = EncodeOptions(lossless=True)
    jobs = plan([source], out, options)
    (result,) = run_jobs(jobs, 8, transform=colorizer.colorize)
    assert result.frames == 30
    assert _frame_indices(_read_video(out, ffmpeg)) == list(range(30))
    # 8 fails, 4 fails, then chunks of 2 for the rest of the run: no batch is retried twice.
    assert generator.batch_sizes[:3] == [8, 4, 2] and colorizer.batch_size == 2
    assert sum(size for size in generator.batch_sizes if size <= 2) == 30


def test_several_inputs_share_one_loaded_model(tmp_path, clip, lineart_model, monkeypatch):
    from celpaint.cli.app import main

    loads = []
    original = Colorizer.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Colorizer, "from_pretrained", classmethod(counting))
    frames = _numbered_frames(tmp_path / "shots", 3)
    code = main(["colorize", str(clip), str(frames), "-o", str(tmp_path / "out"),
                 "-m", str(lineart_model), "-q", "--device", "cpu"])  # fmt: skip
    assert code == 0 and len(loads) == 1
    assert (tmp_path / "out" / clip.name).exists() and (tmp_path / "out" / "shots").is_dir()


def test_compile_flag_compiles_the_generator_once(tmp_path, lineart_model, monkeypatch):
    from celpaint.cli.app import main

    compiled = []

    def fake_compile(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        return model  # compiling for real takes minutes on a CPU; the wiring is what counts

    monkeypatch.setattr(torch, "compile", fake_compile)
    frames = _numbered_frames(tmp_path / "shots", 3)
    code = main(["colorize", str(frames), "-o", str(tmp_path / "out"),
                 "-m", str(lineart_model), "-q", "--device", "cpu", "--compile"])  # fmt: skip
    assert code == 0 and len(compiled) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pipeline_matches_cpu_and_picks_a_batch_size(tmp_path, clip, lineart_model):
    cpu = Colorizer.from_pretrained(lineart_model, device="cpu", batch_size=BATCH)
    cuda = Colorizer.from_pretrained(lineart_model, device="cuda", precision="fp32")
    assert cuda.batch_size >= 1
    options = EncodeOptions(lossless=True)
    colorize([clip], tmp_path / "cpu", cpu, encode=options)
    colorize([clip], tmp_path / "cuda", cuda, encode=options)
    for want, got in zip(
        list_images(tmp_path / "cpu"), list_images(tmp_path / "cuda"), strict=True
    ):
        assert np.abs(read_image(want).astype(int) - read_image(got)).max() <= 2
