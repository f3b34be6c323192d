"""What keeps outputs from losing anything: never over an input, never over a file that appeared
meanwhile, temporary names that fit, stale temporaries removed, odd and huge inputs refused."""

import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celpaint.errors import InputError, ProcessingError
from celpaint.io.frames import (
    FileStamp,
    check_spares_inputs,
    image_size,
    publish,
    remove_stale_temporaries,
    temporary_path,
    write_image,
)
from celpaint.io.sources import open_source
from tests.conftest import make_frames


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width`` x ``height`` but holds almost no pixel data: reading
    its size works, decoding it fails, so a test sees whether anything was decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def dead_pid() -> int:
    """The PID of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class unblock_later:
    """Within the block, open ``fifo`` for writing after ``seconds`` if something waits to read
    it, so a reader that should never have opened it fails instead of hanging the tests."""

    def __init__(self, fifo: Path, seconds: float = 10.0):
        self.fifo, self.seconds = fifo, seconds
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._open_writer, daemon=True)

    def _open_writer(self) -> None:
        if self.done.wait(self.seconds):
            return
        try:
            os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # nobody reading: nothing to unblock

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def test_image_size_reads_any_header_without_decoding(tmp_path):
    # 30000x30000 is past Pillow's decompression-bomb error (179 megapixels), 13000x13000
    # past its warning; neither may stop reading the size, nor decode anything.
    for width, height in ((30000, 30000), (13000, 13000), (7, 5)):
        assert image_size(write_png_header(tmp_path / "big.png", width, height)) == (width, height)
    bmp = tmp_path / "wide.bmp"
    Image.new("RGB", (3, 2)).save(bmp)
    data = bytearray(bmp.read_bytes())
    data[18:26] = struct.pack("<ii", 20000, 15000)  # BITMAPINFOHEADER width and height
    bmp.write_bytes(bytes(data))
    assert image_size(bmp) == (20000, 15000)


def test_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    big = write_png_header(tmp_path / "big.png", 13000, 13000)
    with pytest.raises(InputError, match=r"13000x13000 .*--max-pixels 169000000"):
        open_source(big)
    folder = tmp_path / "frames"
    folder.mkdir()
    write_png_header(folder / "f1.png", 30000, 30000)
    with pytest.raises(InputError, match="--max-pixels"):
        open_source(folder)
    small = write_image(tmp_path / "small.png", np.zeros((10, 20, 3), np.uint8))
    with pytest.raises(InputError, match="--max-pixels 200"):
        open_source(small, max_pixels=199)
    assert open_source(small, max_pixels=200).info.width == 20


def test_pipes_and_devices_are_refused_without_reading(tmp_path):
    # Opening a FIFO for reading would wait for a writer forever: refused from its stat.
    for name in ("frame.png", "clip.mp4"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        with unblock_later(fifo), pytest.raises(InputError, match="named pipe"):
            open_source(fifo)
    with pytest.raises(InputError, match="device"):
        open_source("/dev/zero")


def test_an_output_is_never_an_input_under_another_name(tmp_path):
    frames = make_frames(tmp_path / "shots", count=2)
    inputs = [frames / "f1.png", frames / "f2.png"]
    (tmp_path / "link.png").symlink_to(frames / "f1.png")
    os.link(frames / "f2.png", tmp_path / "hard.png")
    (tmp_path / "folder link").symlink_to(frames)
    for output in (frames / "f1.png", tmp_path / "link.png", tmp_path / "hard.png"):
        with pytest.raises(InputError, match="is the input"):
            check_spares_inputs(output, inputs)
    for folder in (frames, tmp_path / "folder link", tmp_path / "shots" / ".." / "shots"):
        with pytest.raises(InputError, match="is the folder of the input"):
            check_spares_inputs(folder, inputs, folder=True)
    check_spares_inputs(tmp_path / "new.png", inputs)
    check_spares_inputs(tmp_path, inputs, folder=True)  # the folder above is fine
    check_spares_inputs(frames, [tmp_path / "clip.mp4"], folder=True)


def test_publish_never_replaces_what_it_may_not(tmp_path):
    target = tmp_path / "out.png"

    def finished() -> Path:
        temp = temporary_path(target)
        temp.write_bytes(b"result")
        return temp

    publish(finished(), target, replace=False)
    assert target.read_bytes() == b"result"
    target.write_bytes(b"appeared meanwhile")
    with pytest.raises(ProcessingError, match="appeared at .*out.png.*left untouched") as error:
        publish(finished(), target, replace=False)
    assert target.read_bytes() == b"appeared meanwhile"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.celpaint-result-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"result"
    assert str(kept[0]) in str(error.value)
    kept[0].unlink()

    planned = FileStamp.of(target)
    target.write_bytes(b"changed after planning")
    with pytest.raises(ProcessingError, match="changed at"):
        publish(finished(), target, replace=planned)
    assert target.read_bytes() == b"changed after planning"
    publish(finished(), target, replace=FileStamp.of(target))
    assert target.read_bytes() == b"result"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["n" * 244 + ".png", "é" * 121 + ".mp4", "short.mkv"])
def test_temporary_names_stay_hidden_recognisable_and_short(tmp_path, name):
    target = tmp_path / name
    temp = temporary_path(target)
    assert temp.name.startswith(".") and ".celpaint-partial-" in temp.name
    assert temp.suffix == target.suffix and len(os.fsencode(temp.name)) <= 255
    temp.write_bytes(b"x")  # the file system takes it
    other = temporary_path(tmp_path / (name[:-5] + "x" + name[-4:]))
    assert other != temp  # cut names differ by their hash
    assert write_image(target.with_suffix(".png"), np.zeros((2, 2, 3), np.uint8)).exists()


def test_stale_temporaries_of_dead_runs_go_and_live_ones_stay(tmp_path):
    target = tmp_path / ("n" * 244 + ".mp4")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = temporary_path(target, dead_pid())
        live = temporary_path(target, sleeper.pid)
        other_output = temporary_path(tmp_path / "other.mp4", dead_pid())
        for path in (stale, live, other_output):
            path.write_bytes(b"x")
        assert remove_stale_temporaries(tmp_path, target) == [stale]
        assert live.exists() and other_output.exists()
        assert remove_stale_temporaries(tmp_path) == [other_output]
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
