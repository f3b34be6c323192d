#!/usr/bin/env python
"""Build paired (line art, color) training frames that look like cel animation frames.

Each frame is composed from clip art: a plausible background (a large opaque clip-art scene
scaled to fill, or a painted sky/ground, wall/floor or plain backdrop in muted colors), then two
to six clip-art objects alpha-composited on top at varied scales and positions, nearer (larger)
objects over farther ones, with some overlap. The line art of every frame is drawn from the
composed color frame with ``celpaint.ops.lineart`` (XDoG), so training sees the same kind of
line as ``celpaint lineart`` produces.

Output::

    OUT/color/000000.png    uint8 RGB, WxH
    OUT/sketch/000000.png   uint8 gray, WxH, dark lines on white
    OUT/manifest.json       sources used, seed, line-art parameters, command, split, skips

Which source images are used:

- Files are found recursively under each ``--source``; symbolic links are skipped (openclipart
  ships many duplicates as links) and so are hidden files.
- Skipped as unusable: unreadable files; huge ones (over 16 megapixels: a few openclipart PNGs
  are 10000x16000 and take 8 GB to decode); tiny ones (content under 40 px); sparse ones (under
  8% of the content box opaque: text, thin line drawings); monochrome ones (under 5% of the content
  pixels with L*a*b* chroma above 15: nothing to learn about color); and ones that are not
  cartoon-like. The cartoon test is: quantise the opaque pixels to 4 bits per channel and count
  the colors that cover 90% of them (``--max-colors``, default 48), and measure the share of
  pixels in flat areas, where the Sobel gradient of the gray image is small (``--min-flat``,
  default 0.3; outlines and anti-aliasing take a good share even in flat art). Photos and
  heavily shaded renders need hundreds of colors and have little flat area; flat-colored
  cel-like art needs few.
- Opaque images whose border is mostly white are objects on a white page: the white connected
  to the border becomes transparent. Images that fill their box and look like scenery (at least
  400x220, landscape, 8+ colors, no uniform frame, not a flag) are scenes, used as backgrounds
  in 30% of the frames when there are at least ``--min-scenes`` (20) of them. Openclipart has
  almost none (its box-filling images are icons, signs and flags), so its frames get painted
  backgrounds (sky and ground with clouds and hills, a room with a window, or a plain wash, in
  muted colors); game art ships real backgrounds.
- Objects are not drawn uniformly: openclipart is mostly computer icons, geometric shapes, signs
  and playing cards (flags and cards are groups of their own), while animation is mostly
  characters, animals and props. A top-level folder is drawn with probability proportional to
  its weight (``CATEGORY_WEIGHTS``; 1 for folders not listed) times the square root of its size;
  a subfolder within it in proportion to the square root of its size; then an image uniformly.
- ``--split train|val`` with ``--val-fraction F`` holds out a fixed share of the source images:
  an image belongs to the validation split when the SHA-1 of its relative path, read as a
  number in [0, 1), is below F. The rule does not depend on the seed, so a train build and a
  val build with the same fraction never share a source image.
- ``--exclude-list FILE`` (repeatable) removes further images: a text file of relative paths
  (one a line, ``#`` comments) or a JSON manifest (this script's or ``samples/MANIFEST.json``),
  whose ``sources[*].path`` entries are read.

Every frame draws from its own random generator seeded with ``(seed, frame index)``, so output
is identical for a seed whatever the number of workers.

Examples::

    python scripts/build_dataset.py --source /usr/share/openclipart/png --out data/train \\
        --count 6000 --split train --val-fraction 0.05 --exclude-list samples/MANIFEST.json
    python scripts/build_dataset.py --source /usr/share/openclipart/png --out data/val \\
        --count 200 --split val --val-fraction 0.05 --exclude-list samples/MANIFEST.json
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import os
import shlex
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from celpaint.io.frames import write_image, write_text
from celpaint.ops.lineart import DEFAULT_PARAMS, LineArtParams, xdog

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_PIXELS = 16_000_000  # a few clip-art PNGs are 10000x16000: decoding one takes 8 GB
MIN_CONTENT = 40  # px: smaller clip art is icon-sized and blurs when scaled up
MIN_COVERAGE = 0.08
MIN_CHROMATIC = 0.05
MAX_UPSCALE = 1.5  # scaling raster clip art up further gives soft, unlike-cel edges
SCENE_MIN_SIZE = (400, 220)
MIN_SCENES = 20  # fewer scenes would repeat in too many frames: paint backgrounds instead
ANALYSIS_SIZE = 160
SCAN_VERSION = 4

# Relative share of openclipart's top-level folders among the composited objects (see above).
CATEGORY_WEIGHTS = {
    "animals": 3.0, "people": 3.0, "plants": 2.0, "food": 2.0, "transportation": 2.0,
    "buildings": 1.5, "recreation": 1.5, "unsorted": 1.5, "decorations": 1.5, "containers": 1.5,
    "tools": 1.0, "office": 1.0, "electronics": 1.0, "science": 1.0, "education": 1.0,
    "computer": 0.4, "shapes": 0.3, "signs_and_symbols": 0.4, "special": 0.3, "logos": 0.2,
    "buttons": 0.2, "geography": 0.3, "flags": 0.2, "cards": 0.15,
}  # fmt: skip

OPENCLIPART_LICENSE = (
    "Public domain: openclipart.org clip art under the Creative Commons Public Domain "
    "Dedication/Certification, as packaged by Debian openclipart-png 1:0.18+dfsg-19 "
    "(see its debian/copyright)"
)


# ---------------------------------------------------------------------------------------------
# Reading and judging source images
# ---------------------------------------------------------------------------------------------


@dataclass
class Asset:
    """A usable source image.

    Attributes:
        path: path relative to the source root (POSIX separators).
        kind: "object" (composited with its alpha) or "scene" (an opaque background).
        width, height: size of the content box in the original image.
        box: content box ``(x, y, w, h)`` in the original image.
        colors: quantised colors covering 90% of the opaque pixels.
        flat: share of opaque pixels in flat areas.
        white_page: an opaque image whose white surroundings were made transparent.
    """

    path: str
    kind: str
    width: int
    height: int
    box: tuple[int, int, int, int]
    colors: int
    flat: float
    white_page: bool = False


def find_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files under ``root``, sorted; links and dotfiles out."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_symlink():
                continue
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


def header_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file header without decoding; None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Only the header is read, so the size warning for huge images does not apply.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def load_rgba(path: Path) -> np.ndarray | None:
    """uint8 RGBA ``(H, W, 4)`` of an image file (opaque if it has no alpha); None if unreadable."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGBA)
    if channels == 2:
        gray = cv2.cvtColor(image[:, :, :1], cv2.COLOR_GRAY2RGB)
        return np.dstack([gray, image[:, :, 1]])
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return None


def _white_page_alpha(rgba: np.ndarray) -> np.ndarray | None:
    """For an opaque image drawn on a white page, alpha with the page removed; else None."""
    rgb = rgba[:, :, :3]
    near_white = (rgb.min(axis=2) >= 240).astype(np.uint8)
    border = np.concatenate([near_white[0], near_white[-1], near_white[:, 0], near_white[:, -1]])
    if border.mean() < 0.9:
        return None
    count, labels = cv2.connectedComponents(near_white, connectivity=4)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    page = np.isin(labels, edge_labels[edge_labels > 0]) & near_white.astype(bool)
    alpha = np.where(page, 0, 255).astype(np.uint8)
    # Soften the cut by one pixel so the page's anti-aliasing does not leave a white rim.
    return cv2.erode(alpha, np.ones((3, 3), np.uint8))


def prepare_rgba(rgba: np.ndarray) -> tuple[np.ndarray, bool]:
    """The image as used for compositing: white page cut out; returns ``(rgba, white_page)``."""
    if rgba[:, :, 3].min() == 255:
        alpha = _white_page_alpha(rgba)
        if alpha is not None:
            return np.dstack([rgba[:, :, :3], alpha]), True
    return rgba, False


def premultiplied_resize(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize RGBA without dark or light fringes: float32 premultiplied RGB + alpha in 0..1.

    Returns float32 ``(h, w, 4)``: RGB already multiplied by alpha (0..255), alpha in 0..1.
    """
    width, height = size
    rgba = rgba.astype(np.float32)
    alpha = rgba[:, :, 3:4] / 255.0
    premultiplied = np.dstack([rgba[:, :, :3] * alpha, alpha])
    shrinking = width < rgba.shape[1] or height < rgba.shape[0]
    method = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    out = cv2.resize(premultiplied, (width, height), interpolation=method)
    out[:, :, 3] = np.clip(out[:, :, 3], 0.0, 1.0)
    out[:, :, :3] = np.clip(out[:, :, :3], 0.0, 255.0 * out[:, :, 3:4])
    return out


def _content_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    points = cv2.findNonZero((alpha > 16).astype(np.uint8))
    if points is None:
        return None
    return tuple(int(v) for v in cv2.boundingRect(points))


def color_statistics(rgb: np.ndarray, mask: np.ndarray) -> tuple[int, float, float]:
    """``(colors covering 90%, flat share, chromatic share)`` of the pixels under ``mask``.

    Args:
        rgb: uint8 ``(H, W, 3)``.
        mask: bool ``(H, W)``, the opaque pixels.
    """
    pixels = rgb[mask]
    if len(pixels) == 0:
        return 0, 0.0, 0.0
    quantised = (pixels >> 4).astype(np.int32)
    codes = (quantised[:, 0] << 8) | (quantised[:, 1] << 4) | quantised[:, 2]
    counts = np.sort(np.bincount(codes, minlength=4096))[::-1]
    colors = int(np.searchsorted(np.cumsum(counts), 0.9 * len(pixels)) + 1)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    flat = float(np.mean(gradient[inner] < 24)) if inner.any() else 0.0
    lab = cv2.cvtColor(pixels.reshape(-1, 1, 3).astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    chroma = np.hypot(lab[:, 0, 1], lab[:, 0, 2])
    return colors, flat, float(np.mean(chroma > 15))


def analyse(root: Path, relative: str, max_colors: int = 48, min_flat: float = 0.3) -> Asset | str:
    """Judge one source image: an ``Asset`` if usable, else the reason (``"reason: detail"``)."""
    size = header_size(root / relative)
    if size is None:
        return "unreadable"
    if size[0] * size[1] > MAX_PIXELS:
        return f"huge: {size[0]}x{size[1]}"
    rgba = load_rgba(root / relative)
    if rgba is None:
        return "unreadable"
    rgba, white_page = prepare_rgba(rgba)
    alpha = rgba[:, :, 3]
    opaque = alpha.min() == 255
    box = _content_box(alpha)
    if box is None:
        return "empty"
    x, y, w, h = box
    if min(w, h) < MIN_CONTENT:
        return f"tiny: {w}x{h}"
    if max(w, h) > 12 * min(w, h):
        return f"thin: {w}x{h}"
    crop = rgba[y : y + h, x : x + w]
    coverage = float(np.mean(crop[:, :, 3] > 128))
    if coverage < MIN_COVERAGE:
        return f"sparse: {coverage:.2f} opaque"
    scale = min(1.0, ANALYSIS_SIZE / max(w, h))
    small = premultiplied_resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))))
    small_alpha = small[:, :, 3]
    rgb = np.clip(small[:, :, :3] / np.maximum(small_alpha[:, :, None], 1e-6) + 0.5, 0, 255)
    colors, flat, chromatic = color_statistics(rgb.astype(np.uint8), small_alpha > 0.8)
    if chromatic < MIN_CHROMATIC:
        return f"monochrome: {chromatic:.2f} chromatic"
    if colors > max_colors or flat < min_flat:
        return f"not cartoon: {colors} colors, {flat:.2f} flat"
    kind = "object"
    if (opaque or coverage > 0.99) and _looks_like_scenery(crop, colors, relative):
        kind = "scene"
    elif opaque:
        return f"opaque and not a background: {w}x{h}"
    return Asset(relative, kind, w, h, box, colors, round(flat, 4), white_page)


def _looks_like_scenery(crop: np.ndarray, colors: int, relative: str) -> bool:
    """A picture that can be a background: big, landscape, many colors, no frame around it.

    Clip art that fills its box is mostly icons, signs and flags; those have a uniform frame or
    border, few colors or square proportions, so they are kept out.
    """
    height, width = crop.shape[:2]
    if width < SCENE_MIN_SIZE[0] or height < SCENE_MIN_SIZE[1] or not 1.2 <= width / height <= 3.5:
        return False
    if colors < 8 or "flag" in relative.lower():
        return False
    border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])[:, :3]
    return float(border.astype(np.float32).std(axis=0).mean()) > 12.0


def in_validation_split(relative: str, val_fraction: float) -> bool:
    """The fixed, seed-independent train/val assignment of a source image."""
    digest = hashlib.sha1(relative.encode("utf-8")).hexdigest()
    return int(digest[:12], 16) / float(1 << 48) < val_fraction


def read_exclude_list(path: Path) -> set[str]:
    """Relative paths from a text list or from the ``sources`` of a JSON manifest."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        entries = data.get("sources", [])
        return {entry["path"] if isinstance(entry, dict) else str(entry) for entry in entries}
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {line for line in lines if line}


# ---------------------------------------------------------------------------------------------
# Composing frames
# ---------------------------------------------------------------------------------------------


def _hsv(rng: np.random.Generator, hue, sat, val) -> np.ndarray:
    """A float32 RGB color (0..255) from hue in degrees, saturation and value ranges."""
    h = rng.uniform(*hue) / 360.0 % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b], np.float32) * 255.0


def _vertical_gradient(height: int, width: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    column = top[None, None, :] * (1 - t) + bottom[None, None, :] * t
    return np.repeat(column, width, axis=1)


def _fill_polygon(canvas: np.ndarray, points: np.ndarray, color: np.ndarray) -> None:
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillPoly(mask, [points.astype(np.int32)], 255, lineType=cv2.LINE_AA)
    weight = mask.astype(np.float32)[:, :, None] / 255.0
    canvas *= 1.0 - weight
    canvas += weight * color


def _fill_ellipse(canvas, center, axes, color) -> None:
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.ellipse(mask, center, axes, 0, 0, 360, 255, -1, lineType=cv2.LINE_AA)
    weight = mask.astype(np.float32)[:, :, None] / 255.0
    canvas *= 1.0 - weight
    canvas += weight * color


LUMA = np.array([0.299, 0.587, 0.114], np.float32)
SKIES = {  # hue, saturation, value ranges of the top and bottom of a painted sky
    "day": (((195, 215), (0.35, 0.6), (0.75, 0.92)), ((190, 205), (0.12, 0.3), (0.88, 0.98))),
    "dusk": (((230, 270), (0.25, 0.45), (0.55, 0.75)), ((20, 40), (0.3, 0.5), (0.85, 0.97))),
    "overcast": (((200, 220), (0.05, 0.15), (0.7, 0.85)), ((200, 220), (0.03, 0.1), (0.85, 0.95))),
}
GROUNDS = {
    "grass": ((80, 130), (0.3, 0.55), (0.45, 0.72)),
    "sand": ((30, 45), (0.25, 0.45), (0.65, 0.85)),
    "road": ((0, 360), (0.0, 0.08), (0.4, 0.62)),
    "snow": ((190, 220), (0.02, 0.08), (0.86, 0.96)),
    "earth": ((20, 35), (0.3, 0.5), (0.35, 0.55)),
}


def paint_outdoor(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, dict]:
    sky_name = str(rng.choice(list(SKIES), p=[0.6, 0.2, 0.2]))
    top, bottom = SKIES[sky_name]
    canvas = _vertical_gradient(height, width, _hsv(rng, *top), _hsv(rng, *bottom))
    ground_name = str(rng.choice(list(GROUNDS), p=[0.45, 0.15, 0.15, 0.1, 0.15]))
    ground = _hsv(rng, *GROUNDS[ground_name])
    horizon = rng.uniform(0.45, 0.75) * height
    if sky_name != "overcast" and rng.random() < 0.7:  # clouds: clusters of soft white ellipses
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0, width), rng.uniform(0.05, 0.4) * height
            tint = np.float32(rng.uniform(235, 252))
            for _ in range(rng.integers(3, 6)):
                center = (int(cx + rng.normal(0, width * 0.05)), int(cy + rng.normal(0, 4)))
                axes = (int(rng.uniform(0.04, 0.09) * width), int(rng.uniform(0.03, 0.06) * height))
                _fill_ellipse(canvas, center, axes, np.array([tint, tint, tint + 3]).clip(0, 255))
    if rng.random() < 0.75:  # distant hills, paler than the ground (aerial perspective)
        sky_at_horizon = canvas[int(horizon) - 1, 0]
        hill_color = ground * 0.55 + sky_at_horizon * 0.45
        # A hill barely distinct from the sky would give a broken, dashed line: make it clear.
        if abs(float((hill_color - sky_at_horizon) @ LUMA)) < 30:
            hill_color = hill_color * 0.8
        xs = np.linspace(-0.1 * width, 1.1 * width, 9)
        ys = horizon - rng.uniform(0.05, 0.25, len(xs)) * height
        ys = cv2.GaussianBlur(ys.reshape(1, -1).astype(np.float32), (0, 0), 1.0).ravel()
        points = np.concatenate([np.stack([xs, ys], 1), [[1.1 * width, horizon + 2]]])
        points = np.concatenate([points, [[-0.1 * width, horizon + 2]]])
        _fill_polygon(canvas, points, hill_color)
    ground_points = np.array(
        [
            [-1, horizon + rng.uniform(-6, 6)],
            [width, horizon + rng.uniform(-6, 6)],
            [width, height + 1],
            [-1, height + 1],
        ]
    )
    _fill_polygon(canvas, ground_points, ground)
    # The ground darkens slightly towards the viewer, like a painted cel background.
    shade = np.linspace(1.0, rng.uniform(0.82, 0.95), height, dtype=np.float32)[:, None, None]
    below = (np.arange(height) > horizon)[:, None, None]
    canvas = np.where(below, canvas * shade, canvas)
    return canvas, {"type": "outdoor", "sky": sky_name, "ground": ground_name}


def paint_indoor(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, dict]:
    wall = _hsv(rng, (0, 360), (0.08, 0.35), (0.62, 0.9))
    canvas = _vertical_gradient(height, width, wall * 0.92, wall)
    floor_line = rng.uniform(0.6, 0.8) * height
    if rng.random() < 0.6:
        floor = _hsv(rng, (18, 38), (0.3, 0.55), (0.35, 0.6))  # wood
    else:
        floor = _hsv(rng, (0, 360), (0.0, 0.12), (0.45, 0.75))  # tiles, carpet
    if rng.random() < 0.5:  # a window or a picture frame on the wall
        w, h = rng.uniform(0.15, 0.3) * width, rng.uniform(0.2, 0.35) * height
        x, y = rng.uniform(0.05, 0.95) * width - w / 2, rng.uniform(0.1, 0.3) * height
        frame = wall * rng.uniform(0.55, 0.75)
        box = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
        _fill_polygon(canvas, box, frame)
        inset = 0.12 * min(w, h)
        pane = _hsv(rng, (195, 215), (0.2, 0.45), (0.8, 0.95))
        inner = box + np.array([[inset, inset], [-inset, inset], [-inset, -inset], [inset, -inset]])
        _fill_polygon(canvas, inner, pane)
    baseboard = wall * rng.uniform(0.6, 0.8)
    band = max(2.0, 0.025 * height)
    board_points = [[-1, floor_line - band], [width, floor_line - band]]
    board_points += [[width, floor_line], [-1, floor_line]]
    _fill_polygon(canvas, np.array(board_points), baseboard)
    _fill_polygon(
        canvas, np.array([[-1, floor_line], [width, floor_line], [width, height], [-1, height]]),
        floor,
    )  # fmt: skip
    return canvas, {"type": "indoor"}


def paint_plain(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, dict]:
    color = _hsv(rng, (0, 360), (0.05, 0.35), (0.6, 0.95))
    other = color * rng.uniform(0.85, 1.0)
    return _vertical_gradient(height, width, color, other), {"type": "plain"}


def scene_background(
    rng: np.random.Generator, root: Path, scene: Asset, width: int, height: int
) -> np.ndarray:
    """A clip-art scene scaled to cover the frame and cropped at a random place."""
    rgba = load_rgba(root / scene.path)
    x, y, w, h = scene.box
    rgb = rgba[y : y + h, x : x + w, :3]
    scale = max(width / w, height / h) * rng.uniform(1.0, 1.3)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=method).astype(np.float32)
    left = int(rng.integers(0, new_w - width + 1))
    top = int(rng.integers(0, new_h - height + 1))
    canvas = resized[top : top + height, left : left + width]
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    return np.ascontiguousarray(canvas)


def composite(canvas: np.ndarray, sprite: np.ndarray, left: int, top: int) -> None:
    """Alpha-composite premultiplied float32 RGBA ``sprite`` onto ``canvas`` in place, clipped."""
    height, width = canvas.shape[:2]
    h, w = sprite.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + w, width), min(top + h, height)
    if x0 >= x1 or y0 >= y1:
        return
    part = sprite[y0 - top : y1 - top, x0 - left : x1 - left]
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - part[:, :, 3:4]
    region += part[:, :, :3]


def category(relative: str) -> str:
    """The sampling group of a source path: its top-level folder; flags and playing cards (800
    near-identical images between them) are groups of their own."""
    lowered = f"/{relative.lower()}"
    for group in ("flags", "cards"):
        if f"/{group}/" in lowered:
            return group
    return relative.split("/", 1)[0] if "/" in relative else ""


def sampling_weights(objects: list[Asset]) -> np.ndarray:
    """Probability of drawing each object (see the module docstring), summing to 1.

    A top-level group is drawn with probability proportional to its ``CATEGORY_WEIGHTS`` entry
    times the square root of its size, a folder within it proportional to the square root of
    its size, then an image uniformly: big folders (hundreds of playing cards, icon themes)
    are drawn more often than small ones, but far less than in proportion.
    """
    if not objects:
        return np.zeros(0)
    groups = [category(a.path) for a in objects]
    folders = [a.path.rsplit("/", 1)[0] if "/" in a.path else "" for a in objects]
    group_size = Counter(groups)
    folder_size = Counter(zip(groups, folders, strict=True))
    folder_mass = Counter()
    for group, folder in folder_size:
        folder_mass[group] += np.sqrt(folder_size[group, folder])
    weights = np.array(
        [
            CATEGORY_WEIGHTS.get(group, 1.0) * np.sqrt(group_size[group])
            * np.sqrt(folder_size[group, folder]) / folder_mass[group]
            / folder_size[group, folder]
            for group, folder in zip(groups, folders, strict=True)
        ],
        np.float64,
    )  # fmt: skip
    return weights / weights.sum()


@dataclass
class Pools:
    """Usable objects and scenes, with the sampling probability of each object."""

    objects: list[Asset]
    scenes: list[Asset]
    min_scenes: int = MIN_SCENES
    weights: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.weights = sampling_weights(self.objects)


@dataclass
class FrameRecord:
    name: str
    background: dict
    objects: list[dict] = field(default_factory=list)


def place_objects(
    rng: np.random.Generator,
    root: Path,
    objects: list[Asset],
    canvas: np.ndarray,
    ground_line: float,
    count: int,
    load=None,
    weights: np.ndarray | None = None,
) -> list[dict]:
    """Composite ``count`` random objects onto ``canvas``; returns what was placed where."""
    height, width = canvas.shape[:2]
    load = load or (lambda asset: prepare_rgba(load_rgba(root / asset.path))[0])
    picks = rng.choice(len(objects), size=count, replace=False, p=weights)
    chosen = [objects[int(i)] for i in picks]
    placements = []
    # Each object gets its own stretch of the frame width (in random order), so they overlap
    # some but rarely hide each other completely.
    slots = rng.permutation(len(chosen))
    for order, asset in enumerate(chosen):
        # The first object or two are the "characters": large; the rest are props or extras.
        # Sizes are set on the geometric mean of width and height so that wide things (signs,
        # vehicles) do not fill the frame.
        relative = rng.uniform(0.3, 0.6) if order < 2 else rng.uniform(0.12, 0.35)
        scale = relative * height / np.sqrt(asset.width * asset.height)
        scale = min(scale, 0.8 * width / asset.width, 0.95 * height / asset.height, MAX_UPSCALE)
        w, h = max(2, round(asset.width * scale)), max(2, round(asset.height * scale))
        center = (slots[order] + rng.uniform(0.1, 0.9)) / len(chosen) * width
        # Mostly inside the frame, sometimes cut by its edge as in a real shot.
        left = int(np.clip(center - w / 2, -0.25 * w, width - 0.75 * w))
        bottom = ground_line + rng.uniform(-0.15, 0.2) * height
        top = int(min(bottom - h, height - 0.75 * h))
        top = max(top, int(-0.2 * h))
        flip = bool(rng.random() < 0.5)
        placements.append(dict(asset=asset, size=(w, h), left=left, top=top, flip=flip))
    # Smaller objects are farther away: draw them first.
    placements.sort(key=lambda p: p["size"][1])
    for placement in placements:
        asset = placement["asset"]
        x, y, bw, bh = asset.box
        rgba = load(asset)[y : y + bh, x : x + bw]
        if placement["flip"]:
            rgba = rgba[:, ::-1]
        sprite = premultiplied_resize(np.ascontiguousarray(rgba), placement["size"])
        composite(canvas, sprite, placement["left"], placement["top"])
    return [
        {
            "path": p["asset"].path,
            "box": [p["left"], p["top"], p["size"][0], p["size"][1]],
            "flip": p["flip"],
        }
        for p in placements
    ]


def compose_frame(
    seed: int, index: int, root: Path, pools: Pools, width: int, height: int
) -> tuple[np.ndarray, FrameRecord]:
    """One color frame (uint8 RGB ``(height, width, 3)``) and the record of what is in it."""
    rng = np.random.default_rng([seed, index])
    choice = rng.random()
    ground_line = rng.uniform(0.7, 0.95) * height
    if len(pools.scenes) >= pools.min_scenes and choice < 0.3:
        scene = pools.scenes[int(rng.integers(len(pools.scenes)))]
        canvas = scene_background(rng, root, scene, width, height)
        background = {"type": "scene", "path": scene.path}
    elif choice < 0.7:
        canvas, background = paint_outdoor(rng, width, height)
    elif choice < 0.88:
        canvas, background = paint_indoor(rng, width, height)
    else:
        canvas, background = paint_plain(rng, width, height)
    canvas = np.ascontiguousarray(canvas, dtype=np.float32)
    count = int(rng.choice([2, 3, 3, 4, 4, 5, 6]))
    count = min(count, len(pools.objects))
    objects = place_objects(
        rng, root, pools.objects, canvas, ground_line, count, weights=pools.weights
    )
    frame = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return frame, FrameRecord(f"{index:06d}", background, objects)


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------


def scan(
    roots: list[Path],
    base: Path,
    max_colors: int,
    min_flat: float,
    cache_path: Path | None,
    workers: int,
    log,
) -> tuple[list[Asset], Counter]:
    """Analyse every image under ``roots``; paths are made relative to ``base``."""
    relatives = []
    for root in roots:
        prefix = root.relative_to(base)
        relatives += [(prefix / rel).as_posix() for rel in find_images(root)]
    relatives = sorted(set(relatives))
    key = f"v{SCAN_VERSION}:{max_colors}:{min_flat}"
    cache: dict = {}
    if cache_path is not None and cache_path.is_file():
        stored = json.loads(cache_path.read_text())
        if stored.get("key") == key:
            cache = stored["entries"]
    todo = [rel for rel in relatives if rel not in cache]
    log(f"{len(relatives)} images found, {len(todo)} to analyse")
    started = time.time()
    if workers > 1 and todo:
        from multiprocessing import Pool

        with Pool(workers) as pool:
            results = pool.starmap(
                analyse, [(base, rel, max_colors, min_flat) for rel in todo], chunksize=16
            )
    else:
        results = []
        for number, rel in enumerate(todo, 1):
            results.append(analyse(base, rel, max_colors, min_flat))
            if number % 500 == 0:
                log(f"  analysed {number}/{len(todo)} ({time.time() - started:.0f} s)")
    for rel, result in zip(todo, results, strict=True):
        cache[rel] = asdict(result) if isinstance(result, Asset) else result
    if cache_path is not None and todo:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_text(cache_path, json.dumps({"key": key, "entries": cache}))
    assets, skipped = [], Counter()
    for rel in relatives:
        entry = cache[rel]
        if isinstance(entry, dict):
            entry = dict(entry, box=tuple(entry["box"]))
            assets.append(Asset(**entry))
        else:
            skipped[entry.split(":", 1)[0]] += 1
    return assets, skipped


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 256x256") from None
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError("size must be at least 32x32")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source",
        type=Path,
        action="append",
        required=True,
        help="folder of color images, searched recursively (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--count", type=int, default=1000, help="number of pairs")
    parser.add_argument("--size", type=parse_size, default=(256, 256), help="WxH, e.g. 320x192")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split",
        choices=["all", "train", "val"],
        default="all",
        help="use only the train or val share of the sources (see --val-fraction)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="share of source images held out for validation",
    )
    parser.add_argument(
        "--exclude-list",
        type=Path,
        action="append",
        default=[],
        help="text list or JSON manifest of source paths never to use",
    )
    parser.add_argument(
        "--evaluation-only",
        action="store_true",
        help="mark the set as held-out evaluation data in the manifest (implied by --split val)",
    )
    parser.add_argument("--license", default=None, help="license note for the manifest")
    parser.add_argument(
        "--max-colors",
        type=int,
        default=48,
        help="cartoon test: most quantised colors covering 90%% of an image",
    )
    parser.add_argument(
        "--min-flat",
        type=float,
        default=0.3,
        help="cartoon test: least share of pixels in flat areas",
    )
    parser.add_argument(
        "--min-scenes",
        type=int,
        default=MIN_SCENES,
        help="use scene images as backgrounds only when there are at least this many",
    )
    parser.add_argument(
        "--sigma", type=float, default=DEFAULT_PARAMS.sigma, help="line-art blur (line width)"
    )
    parser.add_argument(
        "--line-variety",
        action="store_true",
        help="vary the line art per frame (width, crispness, thresholded, thickened, broken "
        "lines, scan grain; see varied_line_art) instead of one XDoG setting",
    )
    parser.add_argument(
        "--scan-cache",
        type=Path,
        default=None,
        help="JSON file caching the per-image analysis between builds",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true")
    return parser  # fmt: skip


def varied_line_art(frame: np.ndarray, params: LineArtParams, rng: np.random.Generator):
    """Line art of ``frame`` as different tools and hands draw it: XDoG with a random line
    width, crispness and (sometimes) a hard threshold, then perhaps thickened, broken in places,
    or given a scan's paper grain and softness. Returns the uint8 ``(H, W)`` line art and the
    choices made (for the manifest)."""
    choice: dict = {
        "sigma": round(float(rng.uniform(0.5, 1.6)), 2),
        "phi": round(float(rng.uniform(60, 220)), 1),
    }
    if rng.random() < 0.3:
        choice["threshold"] = round(float(rng.uniform(0.45, 0.8)), 2)
    lines = xdog(frame, params, **choice)
    if rng.random() < 0.25:
        choice["thicken"] = 1
        lines = cv2.erode(lines, np.ones((2, 2), np.uint8))
    if rng.random() < 0.35:
        # Gaps in the lines, as in quick pencil work or a lossy extractor: small disks of
        # paper over a few percent of the line pixels.
        ys, xs = np.nonzero(lines < 128)
        gaps = int(len(ys) * rng.uniform(0.002, 0.01))
        choice["gaps"] = gaps
        for i in rng.choice(len(ys), size=min(gaps, len(ys)), replace=False):
            cv2.circle(lines, (int(xs[i]), int(ys[i])), int(rng.integers(1, 3)), 255, -1)
    if rng.random() < 0.2:
        choice["scan"] = True
        grain = rng.normal(0, rng.uniform(2, 8), lines.shape)
        paper = cv2.GaussianBlur(lines.astype(np.float32), (3, 3), rng.uniform(0.3, 0.9))
        lines = np.clip(paper * rng.uniform(0.9, 1.0) + grain, 0, 255).astype(np.uint8)
    return lines, choice


def _render(task) -> tuple[str, dict]:
    seed, index, root, pools, width, height, params, out, variety = task
    frame, record = compose_frame(seed, index, root, pools, width, height)
    write_image(out / "color" / f"{record.name}.png", frame)
    result = {"background": record.background, "objects": record.objects}
    if variety:
        rng = np.random.default_rng([seed, index, 7])
        lines, result["line_art"] = varied_line_art(frame, params, rng)
    else:
        lines = xdog(frame, params)
    write_image(out / "sketch" / f"{record.name}.png", lines)
    return record.name, result


def build(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run a build described by parsed ``args``; returns the manifest it wrote."""

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.time()
    roots = [root.resolve() for root in args.source]
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"error: --source {root} is not a folder")
    base = Path(os.path.commonpath(roots)) if len(roots) > 1 else roots[0]
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise SystemExit(f"error: {out} is not empty; pass --overwrite to replace it")
        for sub in ("color", "sketch"):
            for old in (out / sub).glob("*.png") if (out / sub).is_dir() else []:
                old.unlink()
    if not 0 <= args.val_fraction < 1:
        raise SystemExit("error: --val-fraction must be in [0, 1)")
    params = LineArtParams(sigma=args.sigma)
    width, height = args.size

    assets, skipped = scan(
        roots, base, args.max_colors, args.min_flat, args.scan_cache, args.workers, log
    )
    excluded: set[str] = set()
    for path in args.exclude_list:
        excluded |= read_exclude_list(path)
    usable = []
    for asset in assets:
        if asset.path in excluded:
            skipped["excluded by list"] += 1
        elif args.split == "train" and in_validation_split(asset.path, args.val_fraction):
            skipped["held out for validation"] += 1
        elif args.split == "val" and not in_validation_split(asset.path, args.val_fraction):
            skipped["kept for training"] += 1
        else:
            usable.append(asset)
    pools = Pools(
        objects=[a for a in usable if a.kind == "object"],
        scenes=[a for a in usable if a.kind == "scene"],
        min_scenes=args.min_scenes,
    )
    log(
        f"{len(pools.objects)} objects and {len(pools.scenes)} scenes usable; skipped: "
        + ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
    )
    if len(pools.objects) < 2:
        raise SystemExit("error: fewer than 2 usable objects in the sources")

    (out / "color").mkdir(parents=True, exist_ok=True)
    (out / "sketch").mkdir(parents=True, exist_ok=True)
    tasks = [
        (args.seed, index, base, pools, width, height, params, out, args.line_variety)
        for index in range(args.count)
    ]
    frames: dict[str, dict] = {}
    if args.workers > 1:
        from multiprocessing import Pool

        with Pool(args.workers) as pool:
            for number, (name, record) in enumerate(pool.imap(_render, tasks, chunksize=8), 1):
                frames[name] = record
                if number % 200 == 0:
                    log(f"  {number}/{args.count} frames ({time.time() - started:.0f} s)")
    else:
        for number, task in enumerate(tasks, 1):
            name, record = _render(task)
            frames[name] = record
            if number % 200 == 0:
                log(f"  {number}/{args.count} frames ({time.time() - started:.0f} s)")

    uses = Counter()
    for record in frames.values():
        if record["background"].get("path"):
            uses[record["background"]["path"]] += 1
        for placed in record["objects"]:
            uses[placed["path"]] += 1
    kinds = {a.path: a.kind for a in usable}
    is_openclipart = all("openclipart" in str(root) for root in roots)
    evaluation_only = bool(args.evaluation_only or args.split == "val")
    license_note = args.license or (
        OPENCLIPART_LICENSE if is_openclipart else "not recorded (pass --license)"
    )
    manifest = {
        "format": "celpaint paired line-art dataset, version 1",
        "purpose": "evaluation only (held out, never for training)"
        if evaluation_only
        else "training",
        "evaluation_only": evaluation_only,
        "layout": {"color": "color/NNNNNN.png (RGB)", "sketch": "sketch/NNNNNN.png (gray lines)"},
        "count": len(frames),
        "size": [width, height],
        "seed": args.seed,
        "command": shlex.join(["python", *argv]),
        "source_root": str(base),
        "license": license_note,
        "split": {
            "name": args.split,
            "val_fraction": args.val_fraction,
            "rule": "validation if int(sha1(relative path)[:12], 16) / 2**48 < val_fraction",
        },
        "exclude_lists": [str(p) for p in args.exclude_list],
        "excluded_paths": sorted(excluded),
        "cartoon_test": {"max_colors": args.max_colors, "min_flat": args.min_flat},
        "line_art": params.to_dict(),
        "pool": {
            "objects": len(pools.objects),
            "scenes": len(pools.scenes),
            "scene_backgrounds": len(pools.scenes) >= pools.min_scenes,
        },
        "skipped": dict(sorted(skipped.items())),
        "seconds": round(time.time() - started, 1),
        "sources": [
            {"path": path, "kind": kinds[path], "uses": uses[path]} for path in sorted(uses)
        ],
        "frames": {name: frames[name] for name in sorted(frames)},
    }
    write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    log(f"wrote {len(frames)} pairs to {out} in {time.time() - started:.0f} s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    build(args, ["scripts/build_dataset.py", *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
