"""What an output path asks for, numbered sequences, image formats and 16-bit images."""

import cv2
import numpy as np
import pytest

from celpaint.errors import InputError
from celpaint.io.frames import list_images, read_image, to_16_bits, write_image
from celpaint.io.sinks import EncodeOptions, FramePattern, output_kind
from celpaint.pipeline.api import convert
from celpaint.pipeline.jobs import plan
from tests.conftest import make_frames


def make_16bit_frames(folder, count=3, size=(40, 30)):
    """PNGs with 16 bits per channel whose low byte is not zero (a smooth ramp)."""
    folder.mkdir(parents=True)
    width, height = size
    ramp = np.linspace(0, 65535, width, dtype=np.float64)
    for index in range(count):
        image = np.empty((height, width, 3), np.uint16)
        image[..., 0] = ramp.astype(np.uint16)
        image[..., 1] = (ramp[::-1] * 0.5 + index * 997).astype(np.uint16)
        image[..., 2] = 40000 - index * 3001
        cv2.imwrite(str(folder / f"f{index + 1}.png"), image)
    return folder


def test_output_kind_knows_every_format_and_refuses_others(tmp_path):
    assert output_kind(tmp_path / "a.MOV") == "video"
    assert output_kind(tmp_path / "a.tif") == "image"
    assert output_kind(tmp_path / "frames") == "folder"
    assert output_kind(tmp_path / "seq" / "shot_%04d.png") == "sequence"
    (tmp_path / "renders.v2").mkdir()
    assert output_kind(tmp_path / "renders.v2") == "folder"  # a folder that exists stays one
    for name in ("x.mxf", "y.mp", "out.v2"):
        with pytest.raises(InputError) as error:
            output_kind(tmp_path / name)
        message = str(error.value)
        assert f"celpaint does not write .{name.split('.')[-1]} files" in message
        assert ".mp4 .m4v .mov .mkv .webm .avi .gif" in message and ".png" in message
        assert "frames/%04d.png" in message and "without an extension" in message


@pytest.mark.parametrize(
    "name", ["%s.png", "%04d_%04d.png", "%04d", "%04d.mp4", "%4d.png", "%04dpng"]
)
def test_malformed_sequence_patterns_are_refused(tmp_path, name):
    with pytest.raises(InputError, match="%0Nd|image extension"):
        output_kind(tmp_path / name)


def test_frame_pattern_names_and_recognises_its_files(tmp_path):
    pattern = FramePattern.parse(tmp_path / "shot_%03d_v2.tif")
    assert pattern.path(7).name == "shot_007_v2.tif" and pattern.path(1234).name.startswith(
        "shot_1234"
    )
    assert pattern.matches("shot_12345_v2.tif") and not pattern.matches("shot_001_v2.png")
    assert FramePattern.parse(tmp_path / "%d.png").path(5).name == "5.png"


def test_sequence_output_numbers_frames_from_start_number_and_resumes(tmp_path):
    frames = make_frames(tmp_path / "in", count=4, names=["a", "b", "c", "d"])
    out = tmp_path / "seq" / "%04d.png"
    result = convert(frames, out, EncodeOptions(start_number=0))
    assert result.frames == 4
    names = [p.name for p in list_images(tmp_path / "seq")]
    assert names == ["0000.png", "0001.png", "0002.png", "0003.png"]
    np.testing.assert_array_equal(
        read_image(tmp_path / "seq/0002.png"), read_image(frames / "c.png")
    )
    with pytest.raises(InputError, match="already holds frames named like %04d.png"):
        plan([frames], out, EncodeOptions())
    (tmp_path / "seq/0003.png").unlink()
    again = convert(frames, out, EncodeOptions(start_number=0, resume=True))
    assert (again.frames, again.skipped) == (1, 3)
    np.testing.assert_array_equal(
        read_image(tmp_path / "seq/0003.png"), read_image(frames / "d.png")
    )


@pytest.mark.parametrize("image_format, exact", [("png", True), ("tif", True), ("jpg", False)])
def test_folder_outputs_take_the_image_format(tmp_path, image_format, exact):
    frames = make_frames(tmp_path / "in", count=3)
    convert(frames, tmp_path / "out", EncodeOptions(image_format=image_format))
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [f"f{i}.{image_format}" for i in (1, 2, 3)]
    for path in written:
        original = read_image(frames / f"{path.stem}.png")
        difference = np.abs(read_image(path).astype(int) - original)
        assert difference.max() == 0 if exact else difference.mean() < 3


@pytest.mark.parametrize("output", ["out", "seq/%02d.tif", "one.png"])
def test_16_bit_inputs_give_16_bit_png_and_tiff(tmp_path, output):
    frames = make_16bit_frames(tmp_path / "in")
    source = frames if output != "one.png" else frames / "f2.png"
    convert(source, tmp_path / output, EncodeOptions(image_format="tif"))
    written = (
        [tmp_path / "one.png"]
        if output == "one.png"
        else list_images((tmp_path / output).parent if "%" in output else tmp_path / output)
    )
    assert len(written) == (1 if output == "one.png" else 3)
    for path in written:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint16
    # The frames are colorized (here: copied) at 8 bits per channel; the 16-bit output holds
    # those values on the 16-bit scale.
    first = cv2.cvtColor(cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    expected = frames / "f2.png" if output == "one.png" else frames / "f1.png"
    np.testing.assert_array_equal(first, to_16_bits(read_image(expected)))


def test_8_bit_inputs_and_jpeg_outputs_stay_8_bit(tmp_path):
    make_frames(tmp_path / "in8", count=2)
    convert(tmp_path / "in8", tmp_path / "out8", EncodeOptions(image_format="tif"))
    assert cv2.imread(str(tmp_path / "out8/f1.tif"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    frames16 = make_16bit_frames(tmp_path / "in16")
    convert(frames16, tmp_path / "out16", EncodeOptions(image_format="jpg"))
    assert cv2.imread(str(tmp_path / "out16/f1.jpg"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    with pytest.raises(ValueError, match="8 bits per channel"):
        write_image(tmp_path / "x.jpg", np.zeros((4, 4, 3), np.uint16))


def test_names_made_from_inputs_follow_the_image_format_and_codec(tmp_path, clip):
    image = write_image(tmp_path / "still.png", np.zeros((8, 8, 3), np.uint8))
    folder = make_frames(tmp_path / "shot.010", count=2)  # a dot in a folder name is no extension
    options = EncodeOptions(image_format="tif", codec="prores")
    jobs = plan([image, folder, clip], None, options, tag="color")
    try:
        assert [(j.output.name, j.output_kind) for j in jobs] == [
            ("still_color.tif", "image"),
            ("shot.010_color", "folder"),
            ("test pattern_color.mov", "video"),  # .mp4 cannot hold ProRes
        ]
    finally:
        for job in jobs:
            job.source.close()


def test_a_codec_the_output_container_cannot_hold_is_refused_when_planned(tmp_path, clip):
    with pytest.raises(InputError, match=r"\.mp4 takes h264, h265, not dnxhr"):
        plan([clip], tmp_path / "out.mp4", EncodeOptions(codec="dnxhr"))
    assert list(tmp_path.iterdir()) == []


def test_an_aborted_sequence_removes_only_its_own_temporaries(tmp_path):
    from celpaint.io.frames import temporary_path
    from celpaint.io.sinks import SequenceSink

    sink = SequenceSink(FramePattern.parse(tmp_path / "a_%03d.png"))
    ours = temporary_path(tmp_path / "a_007.png")
    others = [temporary_path(tmp_path / "b_007.png"), temporary_path(tmp_path / "a_007.tif")]
    for path in (ours, *others):
        path.write_bytes(b"partial")
    sink.write("x", np.zeros((2, 2, 3), np.uint8))
    sink.abort()
    assert not ours.exists() and all(path.exists() for path in others)
    assert (tmp_path / "a_001.png").is_file()  # finished frames stay, as in a folder
