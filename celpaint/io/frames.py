"""Image files and frame folders: reading in natural order, atomic writes, resume; and the
file-level safety every output gets: never over an input, never over a file that appeared
during the run, temporary names that fit, stale temporaries of killed runs removed.

Frames are uint8 RGB arrays of shape ``(H, W, 3)``; 16-bit images are written from uint16.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import logging
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from celpaint.errors import InputError, ProcessingError

log = logging.getLogger("celpaint")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# The formats frame-folder outputs are written in (``--image-format``) and their extensions.
IMAGE_FORMATS = {"png": ".png", "tif": ".tif", "jpg": ".jpg"}
# The image extensions written with 16 bits per channel where the input had them.
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff")
# The largest frame (width x height) read unless the caller raises it (``--max-pixels``). Every
# frame is held several times over in float32 while it is colorized, so 100 megapixels already
# take gigabytes; 8K is 33 megapixels. Checked from file headers and the video probe, before
# anything is decoded.
MAX_PIXELS = 100_000_000
_DIGITS = re.compile(r"(\d+)")
# Hidden temporary files: ``.STEM.celpaint-partial-PID.SUFFIX`` beside the output they become.
_TEMP_MARK = ".celpaint-partial-"
_TEMP_NAME = re.compile(r"^\.(?P<stem>.*)\.celpaint-partial-(?P<pid>\d+)(?P<suffix>\.[^.]*)?$")
# The longest file name (in bytes) most file systems take; os.pathconf says where it can.
_NAME_MAX = 255


def natural_key(name: str) -> list:
    """Sort key that puts ``f2`` before ``f10``."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder``, in natural order (hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and is_image(p) and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


def read_image(path: str | os.PathLike, report_alpha: bool = True) -> np.ndarray:
    """Read an image file as uint8 RGB ``(H, W, 3)``.

    Grayscale is replicated to three channels, 16-bit images are scaled to 8 bits, palette
    images are expanded, and an alpha channel is composited on white (with a warning unless
    ``report_alpha`` is False).

    Raises:
        InputError: the file is missing or not a readable image.
    """
    rgb, had_alpha = decode_image(path)
    if had_alpha and report_alpha:
        log.warning("%s has transparency: composited on white", Path(path).name)
    return rgb


def decode_image(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """Like ``read_image``, without warnings: returns ``(rgb, had_transparency)``."""
    path = Path(path)
    try:
        require_regular(path)
        # np.fromfile + imdecode instead of imread: imread silently fails on some paths.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as error:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):
            raise InputError(
                f"{path} is larger than OpenCV decodes (OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 pixels "
                "unless set); scale it down first"
            ) from None
        image = None
    if image is None:
        raise InputError(f"{path} is not a readable image (corrupt, or not an image format)")
    return _to_rgb8(image, path)


def _to_rgb8(image: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"{path} has unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2), False
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2), False
    had_alpha = False
    if channels == 4:
        had_alpha = bool(image[:, :, 3].min() < 255)
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        bgr = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        image = (bgr + 0.5).astype(np.uint8)
    elif channels != 3:
        raise InputError(f"{path} has {channels} channels; expected 1, 3 or 4")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), had_alpha


def image_bit_depth(path: str | os.PathLike) -> int:
    """Bits per channel of a PNG or TIFF from its header (16 or 8; 8 for other formats, and
    for a file that cannot tell, whose reading reports the error). celpaint reads every image
    as 8 bits (``read_image``); this says what an output may keep."""
    path = Path(path)
    try:
        require_regular(path)
        with open(path, "rb") as file:
            header = file.read(26)
        if header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR":
            return 16 if header[24] == 16 else 8
        if header[:4] in (b"II*\x00", b"MM\x00*"):
            with Image.open(path) as image:
                bits = image.tag_v2.get(258, 8)
            return 16 if 16 in (bits if isinstance(bits, tuple) else (bits,)) else 8
    except (OSError, InputError, UnidentifiedImageError, ValueError, SyntaxError):
        pass
    return 8


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels (whatever their
    number: Pillow's decompression-bomb check is left to ``check_pixels``)."""
    try:
        require_regular(path)
        # The format's own reader, found by the extension, reads the header without Pillow's
        # bomb check, which would stop at 179 megapixels with an error of its own.
        factory = Image.OPEN.get(Image.registered_extensions().get(path.suffix.lower(), ""))
        if factory is not None:
            errors = (SyntaxError, IndexError, TypeError, ValueError)
            with contextlib.suppress(*errors), factory[0](str(path)) as image:
                return image.size
        with Image.open(path) as image:  # a PNG named .jpg and the like
            return image.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        # PIL does not know every format OpenCV reads; decode as the last resort.
        frame = read_image(path, report_alpha=False)
        return frame.shape[1], frame.shape[0]


def require_regular(path: Path) -> None:
    """Raise ``InputError`` unless ``path`` is a regular file or a folder: reading a named pipe
    or a device would wait forever or never end. Missing paths raise ``FileNotFoundError``."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = (
        "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )  # fmt: skip
    raise InputError(f"{path} is {kind}; give a video or image file or a folder of images")


def check_pixels(path: Path, width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ``InputError`` when a ``width`` x ``height`` frame of ``path`` is over ``max_pixels``
    (see ``MAX_PIXELS``)."""
    if width * height > max_pixels:
        raise InputError(
            f"{path} is {width}x{height} ({width * height:,} pixels a frame), over the limit of "
            f"{max_pixels:,}; pass --max-pixels {width * height} to read it anyway (memory "
            "permitting) or scale it down"
        )


def check_spares_inputs(
    output: Path, inputs: Iterable[Path], folder: bool = False, what: str = "the output"
) -> None:
    """Refuse an output that would write over an input, whatever its name.

    Args:
        output: a file to write, or a folder of frames to fill (``folder``).
        inputs: every file the run reads (videos, images, the frames of input folders,
            ``--audio-from``).
        folder: ``output`` is a frame folder: refused also when it is the folder an input
            image lies in (its frames could replace it, and ``--overwrite`` clears frames).
        what: how messages name ``output`` (``the output``, ``--json``).

    Raises:
        InputError: ``output`` is an input (same path, a symbolic or hard link), or a frame
            folder holding an input image.
    """
    output_id = _identity(output)
    if output_id is None:
        return  # every input exists; a path that does not cannot name one
    parents: dict[Path, bool] = {}
    for path in inputs:
        if _identity(path) == output_id:
            raise InputError(f"{what} {output} is the input {path}; choose another path")
        if folder and is_image(path):
            if path.parent not in parents:
                parents[path.parent] = _identity(path.parent) == output_id
            if parents[path.parent]:
                raise InputError(
                    f"{what} {output} is the folder of the input {path}; frames written there "
                    "could replace input frames, so choose another folder"
                )


def _identity(path: Path) -> tuple[int, int] | None:
    """What ``os.path.samefile`` compares (device and inode, links followed); None if missing."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def name_fits(path: Path) -> int | None:
    """The byte limit on a file name in ``path``'s folder when ``path.name`` is longer than it,
    else None."""
    limit = _name_max(path.parent)
    return limit if len(os.fsencode(path.name)) > limit else None


def _name_max(folder: Path) -> int:
    for candidate in (folder, *folder.parents):
        try:
            return min(os.pathconf(candidate, "PC_NAME_MAX"), _NAME_MAX)
        except (OSError, ValueError):
            continue
    return _NAME_MAX


def temporary_path(target: Path, pid: int | None = None) -> Path:
    """The hidden file ``target`` is written to before it is renamed into place:
    ``.STEM.celpaint-partial-PID.SUFFIX`` beside it (PID: this process's), so a killed run's
    leftovers are recognised (``remove_stale_temporaries``). Where that name would pass the
    255-byte limit, the stem is cut and a short hash of it added."""
    stem = _short_stem(target, _TEMP_MARK)
    return target.with_name(f".{stem}{_TEMP_MARK}{pid or os.getpid()}{target.suffix}")


def _short_stem(target: Path, mark: str) -> str:
    """``target``'s stem, cut to leave room for a dot, ``mark``, a number of up to 10 digits and
    the suffix within ``_NAME_MAX`` bytes, with 8 hex digits of its hash where it was cut."""
    room = _NAME_MAX - len(os.fsencode(f".{mark}{target.suffix}")) - 10
    encoded = os.fsencode(target.stem)
    if len(encoded) <= room:
        return target.stem
    digest = hashlib.sha1(encoded).hexdigest()[:8]
    return os.fsdecode(encoded[: room - 9]) + "~" + digest


def remove_stale_temporaries(folder: Path, target: Path | None = None) -> list[Path]:
    """Delete the temporary files (``temporary_path``) that killed celpaint runs left in
    ``folder``: those of ``target`` only when given, else every one; never one whose process
    is still alive. Returns the paths removed."""
    if not folder.is_dir():
        return []
    stem = _short_stem(target, _TEMP_MARK) if target is not None else None
    removed = []
    for entry in os.scandir(folder):
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if stem is not None and (match["stem"], match["suffix"] or "") != (stem, target.suffix):
            continue
        if _process_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
            log.info("removed %s, left by a celpaint run that no longer runs", entry.name)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a number no process has: keep it)
    return True


@dataclass(frozen=True)
class FileStamp:
    """The version of a file: its inode, modification time and size. Planning records it for
    an output that ``--overwrite`` may replace; a different stamp at the end means the file
    changed during the run."""

    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> FileStamp | None:
        try:
            status = os.stat(path)
        except OSError:
            return None
        return cls(status.st_ino, status.st_mtime_ns, status.st_size)


def publish(temp: Path, target: Path, replace: bool | FileStamp = True) -> Path:
    """Rename the finished ``temp`` to ``target``.

    Args:
        replace: True: replace whatever is at ``target``. False: never replace anything (the
            rename fails if a file appeared at ``target`` meanwhile, atomically). A
            ``FileStamp``: replace only that version of ``target``.

    Returns:
        ``target``.

    Raises:
        ProcessingError: a file at ``target`` that may not be replaced; it is left untouched
            and the result is kept beside it under a visible name the message gives.
    """
    if replace is True or (replace is not False and FileStamp.of(target) == replace):
        os.replace(temp, target)
        return target
    try:
        rename_no_replace(temp, target)
    except FileExistsError:
        mark = ".celpaint-result-"
        kept = target.with_name(f"{_short_stem(target, mark)}{mark}{os.getpid()}{target.suffix}")
        what = "a file appeared at" if replace is False else "the file changed at"
        try:
            rename_no_replace(temp, kept)
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise ProcessingError(
                f"{what} {target} during the run and was left untouched; the result could not "
                f"be kept beside it ({error.strerror or error}): rerun"
            ) from None
        raise ProcessingError(
            f"{what} {target} during the run and was left untouched; the result is at {kept} "
            "(rerun with --overwrite to replace that file)"
        ) from None
    return target


def rename_no_replace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (``FileExistsError``), without
    a moment where both could be replaced: renameat2(RENAME_NOREPLACE) on Linux, else a hard
    link and unlink, else (file systems without hard links) a check and a rename."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        at_cwd, no_replace = -100, 1
        if renameat2(at_cwd, os.fsencode(source), at_cwd, os.fsencode(target), no_replace) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
            raise OSError(code, os.strerror(code), str(source))
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.rename(source, target)
        return
    os.unlink(source)


@functools.cache
def _renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    function.argtypes += [ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, replace: bool | FileStamp = True) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (``temporary_path``): renamed to ``path``
    when the block ends (``publish``, with ``replace``), deleted if it fails, so ``path`` is
    never seen half written."""
    path = Path(path)
    temp = temporary_path(path)
    try:
        yield temp
        publish(temp, path, replace)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically (see ``atomic_path``)."""
    path = Path(path)
    remove_stale_temporaries(path.parent, path)
    try:
        with atomic_path(path) as temp:
            temp.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ProcessingError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def json_safe(value):
    """``value`` with every infinity (identical frames' PSNR) as the string ``"inf"`` or
    ``"-inf"`` and every NaN as None, in nested dicts, lists and tuples: strict JSON."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented, strict JSON (``json_safe``) atomically (see ``write_text``)."""
    return write_text(path, json.dumps(json_safe(data), indent=2) + "\n")


def write_image(path: str | os.PathLike, rgb: np.ndarray, replace: bool | FileStamp = True) -> Path:
    """Write an RGB ``(H, W, 3)`` (or gray ``(H, W)``) image atomically, in the format of the
    extension (PNG when there is none).

    ``rgb`` is uint8, or uint16 for 16 bits per channel (PNG and TIFF only). The image is
    encoded to a temporary file in the same folder and renamed into place, so an interrupted
    write never leaves a truncated image at ``path``. ``replace``: what may be replaced at
    ``path`` (see ``publish``, which raises ``ProcessingError`` for the rest).

    Raises:
        ValueError: not a uint8/uint16 image of that shape, or uint16 for another format.
    """
    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    if rgb.dtype not in (np.uint8, np.uint16) or rgb.ndim not in (2, 3):
        raise ValueError(
            f"expected a uint8 or uint16 (H, W[, 3]) image, not {rgb.dtype} {rgb.shape}"
        )
    if rgb.dtype == np.uint16 and suffix not in SIXTEEN_BIT_EXTENSIONS:
        raise ValueError(f"{suffix} holds 8 bits per channel; write 16-bit images as PNG or TIFF")
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise ProcessingError(f"could not encode {path.name} as {suffix}")
    try:
        with atomic_path(path, replace) as temp:
            temp.write_bytes(encoded.tobytes())
    except OSError as error:
        raise ProcessingError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def to_16_bits(rgb: np.ndarray) -> np.ndarray:
    """uint8 -> uint16 with the same values on the 16-bit scale (``v * 257``: 255 -> 65535)."""
    return rgb.astype(np.uint16) * 257
