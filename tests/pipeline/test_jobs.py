"""Planning: no output of a job set may be any of its inputs, under any name; batch folders,
--resume and keep_going."""

import os

import numpy as np
import pytest

from celpaint.errors import InputError
from celpaint.io.frames import FileStamp, write_image
from celpaint.io.sinks import EncodeOptions
from celpaint.pipeline.jobs import plan
from tests.conftest import make_clip, make_frames


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


# --- batch folders ----------------------------------------------------------------------------


def _video(path, ffmpeg):
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_clip(path, ffmpeg, frames=2, size=(32, 32), audio=False)


def _outputs(jobs, root):
    for job in jobs:
        if job.source is not None:
            job.source.close()
    return [(str(job.output.relative_to(root)), job.output_kind) for job in jobs]


def test_a_folder_of_videos_is_a_batch_of_clips(tmp_path, ffmpeg):
    vids = tmp_path / "vids"
    _video(vids / "b 2.mkv", ffmpeg)
    _video(vids / "b 10.mp4", ffmpeg)
    _video(vids / ".hidden.mp4", ffmpeg)
    (vids / "notes.txt").write_text("not a clip")
    jobs = plan([vids], tmp_path / "out", EncodeOptions())
    assert _outputs(jobs, tmp_path / "out") == [("b 2.mkv", "video"), ("b 10.mp4", "video")]
    # Without -o, one folder beside the batch (not NAME_color files among the inputs).
    jobs = plan([vids], None, EncodeOptions())
    assert _outputs(jobs, tmp_path) == [("vids_color/b 2.mkv", "video"),
                                        ("vids_color/b 10.mp4", "video")]  # fmt: skip
    # Beside other inputs a batch folder gets a folder of its own in -o.
    clip = _video(tmp_path / "c.mp4", ffmpeg)
    jobs = plan([clip, vids], tmp_path / "out", EncodeOptions())
    assert [o for o, _ in _outputs(jobs, tmp_path / "out")] == ["c.mp4", "vids/b 2.mkv",
                                                                 "vids/b 10.mp4"]  # fmt: skip
    with pytest.raises(InputError, match="2 inputs need -o to be a folder"):
        plan([vids], tmp_path / "one.mp4", EncodeOptions())
    for inside in (vids, vids / "colored"):
        with pytest.raises(InputError, match="inside the batch folder"):
            plan([vids], inside, EncodeOptions())


def test_recursive_walks_the_tree_and_outputs_mirror_it(tmp_path, ffmpeg, caplog):
    tree = tmp_path / "season"
    _video(tree / "intro.mp4", ffmpeg)
    _video(tree / "ep1" / "shot1.mov", ffmpeg)
    make_frames(tree / "ep1" / "shot2", count=2)
    make_frames(tree / "ep1" / "shot2" / "rejects", count=1)  # inside a frame sequence: ignored
    _video(tree / "ep2" / "deep" / "shot3.mp4", ffmpeg)
    (tree / "empty").mkdir()
    (tree / "ep2" / "loop").symlink_to(tree)  # a link back up the tree is not walked again
    jobs = plan([tree], tmp_path / "out", EncodeOptions(), recursive=True)
    assert _outputs(jobs, tmp_path / "out") == [
        ("intro.mp4", "video"),
        ("ep1/shot1.mov", "video"),
        ("ep1/shot2", "folder"),
        ("ep2/deep/shot3.mp4", "video"),
    ]
    # Without --recursive: the top folder's videos, and a warning about the rest.
    jobs = plan([tree], tmp_path / "out", EncodeOptions())
    assert _outputs(jobs, tmp_path / "out") == [("intro.mp4", "video")]
    assert "pass --recursive" in caplog.text


def test_folders_that_are_no_batch_say_what_to_do(tmp_path, ffmpeg):
    mixed = make_frames(tmp_path / "mixed", count=2)
    _video(mixed / "clip.mp4", ffmpeg)
    with pytest.raises(InputError, match="both frames .* and videos"):
        plan([mixed], tmp_path / "out", EncodeOptions())
    nested = tmp_path / "nested"
    _video(nested / "a" / "clip.mp4", ffmpeg)
    with pytest.raises(InputError, match="only sub-folders; pass --recursive"):
        plan([nested], tmp_path / "out", EncodeOptions())
    mixed_deep = tmp_path / "deep"
    _video(mixed_deep / "clip.mp4", ffmpeg)
    make_frames(mixed_deep / "sub", count=1)
    _video(mixed_deep / "sub" / "other.mp4", ffmpeg)
    with pytest.raises(InputError, match="sub holds both frames"):
        plan([mixed_deep], tmp_path / "out", EncodeOptions(), recursive=True)
    (tmp_path / "nothing" / "inside").mkdir(parents=True)
    with pytest.raises(InputError, match="no images or videos in any of its sub-folders"):
        plan([tmp_path / "nothing"], tmp_path / "out", EncodeOptions(), recursive=True)
    assert not (tmp_path / "out").exists()


def test_resume_takes_existing_outputs_as_done(tmp_path, ffmpeg):
    vids = tmp_path / "vids"
    _video(vids / "a.mp4", ffmpeg)
    _video(vids / "b.mp4", ffmpeg)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.mp4").write_bytes(b"complete, as outputs appear only when complete")
    with pytest.raises(InputError, match="--overwrite to replace it, or --resume"):
        plan([vids], out, EncodeOptions())
    jobs = plan([vids], out, EncodeOptions(resume=True))
    assert [(job.done, job.runnable) for job in jobs] == [(True, False), (False, True)]
    assert jobs[0].planned is None  # nothing will replace it
    jobs[1].source.close()


def test_keep_going_records_unreadable_inputs_instead_of_stopping(tmp_path, ffmpeg):
    vids = tmp_path / "vids"
    _video(vids / "a.mp4", ffmpeg)
    (vids / "broken.mp4").write_bytes(b"\x00not a video at all")
    _video(vids / "c.mp4", ffmpeg)
    with pytest.raises(InputError, match="broken.mp4"):
        plan([vids], tmp_path / "out", EncodeOptions())
    jobs = plan([vids], tmp_path / "out", EncodeOptions(), keep_going=True)
    assert [job.input.name for job in jobs if job.runnable] == ["a.mp4", "c.mp4"]
    (broken,) = [job for job in jobs if not job.runnable]
    assert broken.source is None and "broken.mp4" in broken.error
    assert broken.output == tmp_path / "out" / "broken.mp4"
    _outputs(jobs, tmp_path / "out")
