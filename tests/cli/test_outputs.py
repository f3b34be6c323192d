"""Output paths, delivery codecs, sequences and 16-bit images through `colorize` and `lineart`."""

import shutil
from fractions import Fraction

import cv2
import numpy as np
import pytest

from celpaint.cli.app import main
from celpaint.io.frames import list_images
from celpaint.io.media import probe
from tests.conftest import make_clip, make_frames
from tests.helpers import audio_stream_count, stream_duration
from tests.io.test_image_outputs import make_16bit_frames


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, ffmpeg):
    return make_clip(tmp_path_factory.mktemp("short") / "shot.mp4", ffmpeg, frames=8, size=(64, 48))


@pytest.mark.parametrize("command", ["colorize", "lineart"])
@pytest.mark.parametrize("name", ["x.mxf", "y.mp"])
def test_an_unknown_output_extension_lists_the_formats(
    tmp_path, short_clip, lineart_model, capsys, command, name
):
    model = ["-m", str(lineart_model)] if command == "colorize" else []
    out = tmp_path / "out" / name
    assert main([command, str(short_clip), "-o", str(out), *model, "-q"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"celpaint does not write .{name.split('.')[1]} files" in err
    assert ".mp4 .m4v .mov .mkv .webm .avi .gif" in err and ".png .jpg" in err and "%04d" in err
    assert not (tmp_path / "out").exists()


def test_colorize_writes_prores_with_frames_rate_and_audio(
    tmp_path, short_clip, ffmpeg, lineart_model
):
    out = tmp_path / "shot_color.mov"
    args = ["colorize", str(short_clip), "-o", str(out), "-m", str(lineart_model), "-q"]
    assert main([*args, "--codec", "prores", "--encoder-option", "profile=standard"]) == 0
    info = probe(out, ffmpeg)
    source = probe(short_clip, ffmpeg)
    assert (info.codec, info.pix_fmt) == ("prores", "yuv422p10le")
    assert (info.frame_count, info.fps) == (8, source.fps) and source.fps == Fraction(30000, 1001)
    assert audio_stream_count(out, ffmpeg) == 1
    original = stream_duration(short_clip, ffmpeg, "0:a:0")
    assert abs(stream_duration(out, ffmpeg, "0:a:0") - original) < 0.04


def test_colorize_a_16_bit_image_into_a_16_bit_tiff(tmp_path, lineart_model):
    frames = make_16bit_frames(tmp_path / "in", count=1, size=(64, 48))
    out = tmp_path / "colored.tif"
    assert main(["colorize", str(frames / "f1.png"), "-o", str(out), "-m", str(lineart_model),
                 "-q"]) == 0  # fmt: skip
    image = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint16 and image.shape == (48, 64, 3)
    # 8-bit precision on the 16-bit scale (README: what is kept).
    assert np.all(image % 257 == 0)


def test_lineart_folder_of_16_bit_frames_as_tiff_and_as_a_sequence(tmp_path):
    frames = make_16bit_frames(tmp_path / "in", count=3)
    assert main(["lineart", str(frames), "-o", str(tmp_path / "tif"), "--image-format", "tif",
                 "-q"]) == 0  # fmt: skip
    written = list_images(tmp_path / "tif")
    assert [p.name for p in written] == ["f1.tif", "f2.tif", "f3.tif"]
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).dtype == np.uint16 for p in written)
    pattern = tmp_path / "seq" / "lines_%03d.png"
    assert main(["lineart", str(frames), "-o", str(pattern), "--start-number", "101", "-q"]) == 0
    names = [p.name for p in list_images(tmp_path / "seq")]
    assert names == ["lines_101.png", "lines_102.png", "lines_103.png"]


def test_names_made_from_inputs_take_a_container_that_holds_the_codec(tmp_path, short_clip, ffmpeg):
    clip = shutil.copy(short_clip, tmp_path / "a.mp4")
    frames = make_frames(tmp_path / "b", count=2)
    args = ["lineart", str(clip), str(frames), "-o", str(tmp_path / "out"), "--codec", "dnxhr"]
    assert main([*args, "-q"]) == 2  # 64x48 is too small for DNxHR: refused before any work
    assert not (tmp_path / "out").exists()
    args = ["lineart", str(clip), str(frames), "--codec", "prores", "--image-format", "jpg", "-q"]
    assert main(args) == 0
    assert probe(tmp_path / "a_lineart.mov", ffmpeg).pix_fmt == "yuv422p10le"
    assert [p.name for p in list_images(tmp_path / "b_lineart")] == ["f1.jpg", "f2.jpg"]
