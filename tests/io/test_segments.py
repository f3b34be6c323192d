"""Part tags and joining parts without re-encoding (io/segments.py), on videos written here."""

import itertools
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from celpaint.errors import InputError
from celpaint.io.media import probe
from celpaint.io.segments import ClipIdentity, PartTag, join_parts, read_part_tag
from celpaint.io.sources import open_source
from celpaint.io.video import VideoWriter
from tests.conftest import make_clip
from tests.helpers import audio_stream_count, stream_duration

RATE = Fraction(30000, 1001)
SIZE = (64, 48)
ENCODING = {
    "container": ".mp4",
    "crf": 18,
    "preset": "medium",
    "lossless": True,
    "fps": "30000/1001",
}


def _frames(count: int) -> np.ndarray:
    """``count`` distinct frames: a bar that moves one pixel a frame over a gradient."""
    width, height = SIZE
    frames = np.zeros((count, height, width, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)
    for index in range(count):
        frames[index, :, index % width, 1] = 255
    return frames


def _tag(index: int, count: int, start: int, stop: int, frames: int = 30, **source) -> PartTag:
    identity = dict(name="clip.mp4", frames=frames, width=SIZE[0], height=SIZE[1], fps="30000/1001")
    identity.update(source)
    return PartTag(
        index, count, start, stop, ClipIdentity(**identity, path="/x/clip.mp4"), ENCODING
    )


def _part(path: Path, frames: np.ndarray, tag: PartTag) -> Path:
    with VideoWriter(path, SIZE[0], SIZE[1], RATE, lossless=True, metadata=tag.metadata()) as out:
        for frame in frames:
            out.write(frame)
    return path


def _parts(folder: Path, bounds=(0, 10, 20, 30)) -> list[Path]:
    frames = _frames(bounds[-1])
    count = len(bounds) - 1
    return [
        _part(folder / f"part {index + 1}.mp4", frames[start:stop],
              _tag(index + 1, count, start, stop, frames=bounds[-1]))
        for index, (start, stop) in enumerate(itertools.pairwise(bounds))
    ]  # fmt: skip


def test_a_tag_survives_the_container_with_awkward_characters(tmp_path, ffmpeg):
    source = ClipIdentity("a;b=c#d\\e'f é\n.mp4", 30, 64, 48, "24", "/p")
    tag = PartTag(2, 3, 10, 20, source, ENCODING)
    assert read_part_tag(_part(tmp_path / "part.mp4", _frames(3), tag)) == tag
    assert read_part_tag(make_clip(tmp_path / "plain.mp4", ffmpeg, frames=2)) is None


def test_join_copies_the_parts_in_order_with_the_audio(tmp_path, ffmpeg):
    parts = _parts(tmp_path)
    audio = make_clip(tmp_path / "sound.mp4", ffmpeg, frames=30, size=SIZE)
    out = join_parts(list(reversed(parts)), tmp_path / "joined.mp4", audio)
    info = probe(out)
    assert (info.frame_count, info.fps, info.width, info.height) == (30, RATE, *SIZE)
    assert np.array_equal(np.stack(list(open_source(out).frames())), _frames(30))
    assert audio_stream_count(out, ffmpeg) == 1
    assert stream_duration(out, ffmpeg, "0:a:0") == pytest.approx(
        stream_duration(audio, ffmpeg, "0:a:0")
    )
    # The joined video is not itself a part, and nothing is left beside it.
    assert read_part_tag(out) is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_join_refuses_a_missing_part_and_names_it(tmp_path):
    parts = _parts(tmp_path)
    with pytest.raises(InputError, match=r"part 2 of 3 of .*clip.mp4 is missing.*--shard 2/3"):
        join_parts([parts[0], parts[2]], tmp_path / "joined.mp4")
    assert not (tmp_path / "joined.mp4").exists()


def test_join_refuses_a_part_twice_another_clip_and_another_cut(tmp_path):
    parts = _parts(tmp_path)
    with pytest.raises(InputError, match="given twice"):
        join_parts([parts[0], parts[1], parts[1], parts[2]], tmp_path / "out.mp4")
    other = _part(tmp_path / "other.mp4", _frames(10), _tag(2, 3, 10, 20, frames=31))
    with pytest.raises(InputError, match="a different clip"):
        join_parts([parts[0], other, parts[2]], tmp_path / "out.mp4")
    (tmp_path / "halves").mkdir()
    halves = _parts(tmp_path / "halves", bounds=(0, 15, 30))
    with pytest.raises(InputError, match="cut into 2 parts, not 3"):
        join_parts([parts[0], halves[1], parts[2]], tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_join_refuses_an_incomplete_part_and_a_file_that_is_no_part(tmp_path, ffmpeg):
    parts = _parts(tmp_path)
    short = _part(tmp_path / "short.mp4", _frames(20)[10:15], _tag(2, 3, 10, 20))
    with pytest.raises(InputError, match="holds 5 frames.*incomplete.*--shard 2/3"):
        join_parts([parts[0], short, parts[2]], tmp_path / "out.mp4")
    plain = make_clip(tmp_path / "plain.mp4", ffmpeg, frames=10, size=SIZE)
    with pytest.raises(InputError, match="not a part written by"):
        join_parts([parts[0], plain, parts[2]], tmp_path / "out.mp4")
    with pytest.raises(InputError, match="already exists"):
        join_parts(parts, parts[0].with_name("plain.mp4"))
    with pytest.raises(InputError, match="is the input"):
        join_parts(parts, parts[0], replace=True)
    assert probe(plain).frame_count == 10
