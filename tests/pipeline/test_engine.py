"""The streaming engine: planning outputs, concurrency, order, errors and cleanup."""

import random
import shutil
import time

import numpy as np
import pytest

from celpaint.errors import InputError, ProcessingError
from celpaint.io.frames import write_image
from celpaint.io.sinks import EncodeOptions
from celpaint.io.sources import Source
from celpaint.io.video import VideoReader
from celpaint.pipeline.engine import run_jobs
from celpaint.pipeline.jobs import plan
from tests.conftest import make_frames
from tests.helpers import assert_nothing_left


def _invert(frames: np.ndarray) -> np.ndarray:
    return 255 - frames


def test_plan_rules(tmp_path, clip):
    frames = make_frames(tmp_path / "shots")
    options = EncodeOptions()
    jobs = plan([clip], tmp_path / "o.mkv", options)
    assert jobs[0].output_kind == "video"
    jobs = plan([clip, frames], tmp_path / "out", options)
    assert [j.output.name for j in jobs] == ["test pattern.mp4", "shots"]
    assert [j.output_kind for j in jobs] == ["video", "folder"]
    jobs = plan([frames], None, options)
    assert jobs[0].output == tmp_path / "shots_color"
    with pytest.raises(InputError, match="would both be written"):
        plan([frames, frames], tmp_path / "out", options)
    with pytest.raises(InputError, match="several frames"):
        plan([frames], tmp_path / "x.png", options)
    for job in jobs:
        job.source.close()


@pytest.mark.parametrize("kind", ["video", "folder"])
def test_concurrent_run_matches_sequential_under_random_delays(
    tmp_path, clip, ffmpeg, kind, threads_before
):
    expected = [_invert(f) for f in VideoReader(clip, ffmpeg)]
    rng = random.Random(0)

    def slow_transform(frames):
        time.sleep(rng.random() * 0.02)
        return _invert(frames)

    original_frames = Source.frames

    def jittery_frames(self):
        for frame in original_frames(self):
            time.sleep(rng.random() * 0.005)
            yield frame

    out = tmp_path / ("out.mkv" if kind == "video" else "out")
    options = EncodeOptions(lossless=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Source, "frames", jittery_frames)
        jobs = plan([clip], out, options)
        (result,) = run_jobs(jobs, 5, transform=slow_transform)
    assert result.frames == 24
    if kind == "video":
        produced = list(VideoReader(out, ffmpeg))
    else:
        from celpaint.io.frames import list_images, read_image

        produced = [read_image(p) for p in list_images(out)]
    assert len(produced) == len(expected)
    for want, got in zip(expected, produced, strict=True):
        np.testing.assert_array_equal(want, got)
    assert_nothing_left(threads_before)


def test_interrupt_stops_every_stage_and_process(tmp_path, clip, threads_before):
    out = tmp_path / "out.mp4"
    options = EncodeOptions()

    def interrupted(frames):
        raise KeyboardInterrupt

    jobs = plan([clip], out, options)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, 4, transform=interrupted)
    assert list(tmp_path.iterdir()) == []
    assert_nothing_left(threads_before)


def test_a_dead_encoder_is_reported(tmp_path, clip, monkeypatch):
    out = tmp_path / "out.mp4"
    options = EncodeOptions()
    jobs = plan([clip], out, options)

    def wrong_size(frames):
        return frames[:, :10]  # the encoder expects full frames

    with pytest.raises((ProcessingError, ValueError)):
        run_jobs(jobs, 4, transform=wrong_size)
    assert list(tmp_path.iterdir()) == []


def _appearing(target, content=b"made by another program"):
    """A transform that, on its first batch, has another program's file appear at ``target``."""

    def transform(frames):
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
        return frames

    return transform


@pytest.mark.parametrize("name", ["out.mp4", "out.png"])
def test_a_file_that_appears_during_the_run_is_never_replaced(tmp_path, clip, name):
    source = clip
    if name.endswith(".png"):
        source = write_image(tmp_path / "in.png", np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / name
    (job,) = plan([source], out, EncodeOptions())
    with pytest.raises(ProcessingError, match="appeared at .*left untouched.*result is at"):
        run_jobs([job], 8, transform=_appearing(out))
    assert out.read_bytes() == b"made by another program"
    kept = [p for p in tmp_path.iterdir() if ".celpaint-result-" in p.name]
    assert len(kept) == 1 and kept[0].stat().st_size > 50
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # --overwrite replaces what was there when the work was planned, not what came later.
    kept[0].unlink()
    (job,) = plan([source], out, EncodeOptions(overwrite=True))
    with pytest.raises(ProcessingError, match="changed at"):
        run_jobs([job], 8, transform=_appearing(out, b"changed by another program"))
    assert out.read_bytes() == b"changed by another program"
    (job,) = plan([source], out, EncodeOptions(overwrite=True))
    run_jobs([job], 8, transform=_invert)
    assert out.stat().st_size > 50


def test_keep_going_finishes_the_others_and_leaves_nothing_of_a_failure(
    tmp_path, clip, threads_before
):
    batch = tmp_path / "in"
    batch.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(clip, batch / name)
    out = tmp_path / "out"
    jobs = plan([batch], out, EncodeOptions())

    def transform_for(job):
        def transform(frames):
            if job.output.name == "b.mp4":
                raise ValueError("this batch is cursed")
            return _invert(frames)

        return transform

    with pytest.raises(ValueError, match="cursed"):
        # Without keep_going the first failure stops the batch: c is never started.
        run_jobs(
            plan([batch], tmp_path / "stopped", EncodeOptions()), 4, transform_for=transform_for
        )
    assert [p.name for p in (tmp_path / "stopped").iterdir()] == ["a.mp4"]
    results = run_jobs(jobs, 4, transform_for=transform_for, keep_going=True)
    assert [r.status for r in results] == ["written", "failed", "written"]
    assert results[1].error == "ValueError: this batch is cursed" and results[1].frames == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "c.mp4"]
    assert_nothing_left(threads_before)
