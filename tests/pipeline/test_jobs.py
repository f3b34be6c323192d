"""Planning: no output of a job set may be any of its inputs, under any name."""

import os

import numpy as np
import pytest

from celpaint.errors import InputError
from celpaint.io.frames import FileStamp, write_image
from celpaint.io.sinks import EncodeOptions
from celpaint.pipeline.jobs import plan
from tests.conftest import make_frames


def _refused(inputs, output, options=None, match="is the input"):
    with pytest.raises(InputError, match=match):
        plan(inputs, output, options or EncodeOptions(overwrite=True))


def test_outputs_are_never_inputs_of_the_job_set(tmp_path, clip):
    frames = make_frames(tmp_path / "shots", count=2)
    image = write_image(tmp_path / "still.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "link.mp4").symlink_to(clip)
    os.link(image, tmp_path / "hard.png")
    (tmp_path / "shots link").symlink_to(frames)
    # The input itself, through a symbolic link, through a hard link.
    _refused([image], image)
    _refused([clip], tmp_path / "link.mp4")
    _refused([image], tmp_path / "hard.png")
    # A frame folder output that is an input folder, or holds an input image.
    _refused([frames], tmp_path / "shots link")
    _refused([image], tmp_path, match="folder of the input")
    # Another job's input: out/still.png is the second input.
    out = tmp_path / "out"
    out.mkdir()
    other = write_image(out / "still.png", np.zeros((8, 8, 3), np.uint8))
    _refused([image, other], out)
    # --audio-from is read too.
    (tmp_path / "song.mp4").symlink_to(clip)
    _refused([frames], tmp_path / "song.mp4", EncodeOptions(overwrite=True, audio_from=clip))
    # Refusals keep nothing open and write nothing; a plain output is fine.
    jobs = plan([frames], tmp_path / "shots out", EncodeOptions())
    assert jobs[0].planned is None
    jobs[0].source.close()
    assert not (tmp_path / "shots out").exists()


def test_overwrite_records_what_it_may_replace(tmp_path, clip):
    out = tmp_path / "old.mp4"
    out.write_bytes(b"old")
    (job,) = plan([clip], out, EncodeOptions(overwrite=True))
    job.source.close()
    assert job.planned == FileStamp.of(out)
