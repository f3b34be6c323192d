import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from celpaint.errors import InputError
from celpaint.io.frames import list_images, natural_key, read_image, write_image
from celpaint.io.sinks import FolderSink
from celpaint.io.sources import open_source
from tests.conftest import make_frames


def test_natural_order(tmp_path):
    for name in ("f10.png", "f2.png", "f1.png", "F3.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["f1.png", "f2.png", "F3.png", "f10.png"]
    assert natural_key("a2b") < natural_key("a10b")


def test_reads_gray_16bit_palette_and_rgba(tmp_path, caplog):
    gray = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.dstack([gray] * 3))

    deep = (np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    expected = np.round(deep / 257).astype(np.uint8)
    assert np.abs(read_image(tmp_path / "deep.png")[..., 0].astype(int) - expected).max() <= 1

    palette = Image.new("P", (8, 4))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([0, 1] * 16)
    palette.save(tmp_path / "palette.png")
    rgb = read_image(tmp_path / "palette.png")
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[0, 1]) == (0, 0, 255)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGR order
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    with caplog.at_level(logging.WARNING, logger="celpaint"):
        rgb = read_image(tmp_path / "alpha.png")
    assert "transparency" in caplog.text
    assert tuple(rgb[0, 0]) == (200, 0, 0) and tuple(rgb[3, 0]) == (255, 255, 255)


def test_unreadable_and_missing_images(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "missing.png")


def test_write_image_is_atomic_and_round_trips(tmp_path):
    frame = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    path = write_image(tmp_path / "a b ü.png", frame)
    np.testing.assert_array_equal(read_image(path), frame)
    assert [p.name for p in tmp_path.iterdir()] == ["a b ü.png"]


def test_folder_source_checks_sizes_and_readability(tmp_path):
    folder = make_frames(tmp_path / "mixed", count=3)
    write_image(folder / "f4.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="differ in size.*f4.png"):
        open_source(folder)
    broken = make_frames(tmp_path / "broken", count=2)
    (broken / "f3.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="f3.png"):
        open_source(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        open_source(tmp_path / "empty")


def test_folder_writer_resume(tmp_path):
    writer = FolderSink(tmp_path / "out", resume=True)
    assert not writer.is_done("a")
    writer.write("a", np.zeros((4, 4, 3), np.uint8))
    assert writer.is_done("a") and not writer.is_done("b")
    assert not FolderSink(tmp_path / "out", resume=False).is_done("a")
