"""Splitting work into parts (pipeline/shard.py): the plan, and parts colored apart that join
into what one run makes."""

from fractions import Fraction

import numpy as np
import pytest

from celpaint.errors import InputError
from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.media import probe
from celpaint.io.segments import join_parts, read_part_tag
from celpaint.io.sinks import EncodeOptions
from celpaint.io.sources import open_source
from celpaint.ops.metrics import ciede2000
from celpaint.pipeline.api import colorize
from celpaint.pipeline.colorizer import Colorizer
from celpaint.pipeline.shard import FrameRange, Shard, colorize_part, deal, split_frames
from tests.conftest import make_clip
from tests.helpers import audio_stream_count, stream_duration

FRAMES = 40
WARMUP = 8
LOSSLESS = EncodeOptions(lossless=True)


def test_split_frames_cuts_consecutive_ranges_with_their_warm_ups():
    parts = split_frames(10, 3, warmup=4)
    assert parts == [
        FrameRange(1, 3, 0, 3, 0),
        FrameRange(2, 3, 3, 6, 3),
        FrameRange(3, 3, 6, 10, 4),
    ]
    assert [part.first for part in parts] == [0, 0, 2]
    assert split_frames(5, 1) == [FrameRange(1, 1, 0, 5, 0)]
    with pytest.raises(InputError, match="too few for 4 parts"):
        split_frames(3, 4)


def test_deal_gives_the_largest_first_to_the_least_loaded():
    # 100 -> rank 0, 60 -> rank 1, 50 -> rank 1 (60 < 100), 40 -> rank 0 (110 > 100)...
    assert deal([40, 100, 50, 60], 2) == [[0, 1], [2, 3]]
    assert deal([5], 3) == [[0], [], []]
    assert deal([], 2) == [[], []]


def test_shard_parses_i_of_n():
    assert Shard.parse("2/4") == Shard(2, 4)
    assert Shard.parse(" 1 / 1 ") == Shard(1, 1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, ffmpeg):
    return make_clip(tmp_path_factory.mktemp("shard") / "clip.mp4", ffmpeg, FRAMES, (64, 48))


@pytest.fixture(scope="module")
def colorizer(lineart_model):
    return Colorizer.from_pretrained(lineart_model, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, clip, colorizer) -> np.ndarray:
    """The frames one run makes (lossless, so the video holds them exactly)."""
    out = tmp_path_factory.mktemp("whole") / "whole.mp4"
    colorize(clip, out, colorizer, encode=LOSSLESS)
    return _read(out)


def _read(path) -> np.ndarray:
    with open_source(path) as source:
        return np.stack(list(source.frames()))


def _errors(frames: np.ndarray, whole: np.ndarray) -> list[float]:
    return [ciede2000(frame, truth) for frame, truth in zip(frames, whole, strict=True)]


def test_parts_joined_make_the_frames_of_one_run(tmp_path, clip, colorizer, whole, ffmpeg):
    parts = [tmp_path / "part 2.mp4", tmp_path / "part 1.mp4"]
    for index, part in ((2, parts[0]), (1, parts[1])):
        result = colorize_part(clip, part, Shard(index, 2), colorizer, encode=LOSSLESS,
                               warmup=WARMUP)  # fmt: skip
        assert result.frames == 20
    tag = read_part_tag(parts[0])
    assert (tag.index, tag.count, tag.start, tag.stop) == (2, 2, 20, 40)
    assert (tag.source.name, tag.source.frames, tag.source.fps) == ("clip.mp4", 40, "30000/1001")
    assert audio_stream_count(parts[0], ffmpeg) == 0  # the audio goes in once, at the join

    out = join_parts(parts, tmp_path / "joined.mp4", clip)
    info = probe(out)
    assert (info.frame_count, info.fps) == (FRAMES, Fraction(30000, 1001))
    assert audio_stream_count(out, ffmpeg) == 1
    assert stream_duration(out, ffmpeg, "0:a:0") == stream_duration(clip, ffmpeg, "0:a:0")
    frames = _read(out)
    assert np.array_equal(frames[:20], whole[:20])
    errors = _errors(frames, whole)
    assert max(errors[20:]) <= 0.5, errors

    # Without a warm-up the second part starts its smoothing afresh at the seam.
    cold = tmp_path / "cold.mp4"
    colorize_part(clip, cold, Shard(2, 2), colorizer, encode=LOSSLESS, warmup=0)
    cold_errors = _errors(_read(cold), whole[20:])
    assert cold_errors[0] > 2 * errors[20] + 1e-3, (cold_errors[0], errors[20])


def test_folder_parts_fill_one_folder_under_the_clip_frame_names(tmp_path, clip, colorizer, whole):
    out = tmp_path / "frames"
    for index in (2, 1):
        colorize_part(clip, out, Shard(index, 2), colorizer, warmup=WARMUP)
    names = [path.name for path in list_images(out)]
    assert names == [f"frame_{number:06d}.png" for number in range(1, FRAMES + 1)]
    frames = np.stack([read_image(out / name) for name in names])
    assert np.array_equal(frames[:20], whole[:20])
    assert max(_errors(frames[20:], whole[20:])) <= 0.5
    # A part whose frames are there already is not done again by accident.
    with pytest.raises(InputError, match="already holds frame_000001.png, a frame of part 1"):
        colorize_part(clip, out, Shard(1, 2), colorizer, warmup=WARMUP)


def test_a_part_of_what_cannot_be_split_is_refused(tmp_path, colorizer, clip):
    image = write_image(tmp_path / "still.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="single image"):
        colorize_part(image, tmp_path / "parts", Shard(1, 2), colorizer)
    with pytest.raises(InputError, match="too few for 41 parts"):
        colorize_part(clip, tmp_path / "p.mp4", Shard(1, 41), colorizer)
    with pytest.raises(InputError, match="cannot be joined into p.gif"):
        colorize_part(clip, tmp_path / "p.gif", Shard(1, 2), colorizer)
    assert sorted(tmp_path.iterdir()) == [image]
