"""Image files and frame folders: reading in natural order, atomic writes, resume.

Frames are uint8 RGB arrays of shape ``(H, W, 3)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from celpaint.errors import InputError, ProcessingError

log = logging.getLogger("celpaint")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_DIGITS = re.compile(r"(\d+)")


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
        # np.fromfile + imdecode instead of imread: imread silently fails on some paths.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
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


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        # PIL does not know every format OpenCV reads; decode as the last resort.
        frame = read_image(path, report_alpha=False)
        return frame.shape[1], frame.shape[0]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: renamed to ``path`` when the block ends,
    deleted if it fails, so ``path`` is never seen half written."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically (see ``atomic_path``)."""
    path = Path(path)
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


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write a uint8 RGB ``(H, W, 3)`` (or gray ``(H, W)``) image atomically.

    The image is encoded to a temporary file in the same folder and renamed into place, so
    an interrupted write never leaves a truncated image at ``path``.
    """
    path = Path(path)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W[, 3]) image, got {rgb.dtype} {rgb.shape}")
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    suffix = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise ProcessingError(f"could not encode {path.name} as {suffix}")
    try:
        with atomic_path(path) as temp:
            temp.write_bytes(encoded.tobytes())
    except OSError as error:
        raise ProcessingError(f"cannot write {path}: {error.strerror or error}") from None
    return path
