#!/usr/bin/env python
"""Make the bundled samples: a short animated clip and paired frames from public-domain clip art.

The "show": a painted landscape wider than the frame with a house, trees and tulips on it; a car
driving along the road, a dog running towards the camera and a butterfly flapping across the
sky. The camera pans over the landscape and gently zooms in.

Writes into ``--out`` (default ``samples/``):

    clip_color.mp4     4 s, 24 fps, 384x216, H.264 crf 12 yuv420p, with a sine-tone audio track
    clip_lineart.mp4   the XDoG line art of every frame (``celpaint.ops.lineart``)
    clip_gray.mp4      the same frames in grayscale (BT.601 luma)
    pairs/color/NNN.png, pairs/sketch/NNN.png
                       32 frames of the same show at other camera positions and poses, for a
                       fine-tuning demo (never frames of the clip itself)
    MANIFEST.json      the clip-art files used, seed, line-art parameters, command

The clip art comes from openclipart (public domain); the files are listed in ``SAMPLE_ART`` and in
MANIFEST.json, which ``scripts/build_dataset.py --exclude-list samples/MANIFEST.json`` reads to
keep them out of training and validation sets.

Usage::

    python scripts/make_samples.py --clipart /usr/share/openclipart/png [--out samples]
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_dataset as bd  # noqa: E402  (a sibling script, not a package)

from celpaint.io.frames import write_image, write_text  # noqa: E402
from celpaint.io.media import find_ffmpeg  # noqa: E402
from celpaint.io.video import VideoWriter  # noqa: E402
from celpaint.ops.lineart import DEFAULT_PARAMS, xdog  # noqa: E402

WIDTH, HEIGHT = 384, 216
FPS = 24
SECONDS = 4
PAIRS = 32
# The world is measured in screen pixels at zoom 1; the landscape is wider and a bit taller
# than the frame so the camera has room to pan and zoom.
WORLD_WIDTH, WORLD_HEIGHT = 2 * WIDTH, round(1.12 * HEIGHT)
GROUND = 0.72 * WORLD_HEIGHT  # y of the road the car drives on

SAMPLE_ART = {
    "car": "transportation/vehicles/car.png",
    "dog": "animals/mammals/dog_06_drawn_with_strai_01.png",
    "butterfly": "animals/bugs/farfalla_stilizzata_arch_01.png",
    "house": "buildings/perspectival_house_01.png",
    "tulips": "plants/flowers/tulips_ganson.png",
    "tree": "food/fruit/tree_whit_fruits_01.png",
    "pine": "plants/trees/evergreen/simple_evergreen_with_highlights_01.png",
}
ROLES = {"car": "character", "dog": "character", "butterfly": "character"}


@dataclass
class Sprite:
    """A clip-art image cropped to its content: uint8 RGBA."""

    rgba: np.ndarray

    @property
    def aspect(self) -> float:
        return self.rgba.shape[1] / self.rgba.shape[0]


def load_sprite(root: Path, relative: str) -> Sprite:
    rgba = bd.load_rgba(root / relative)
    if rgba is None:
        raise SystemExit(f"error: cannot read {root / relative}")
    rgba, _ = bd.prepare_rgba(rgba)
    x, y, w, h = cv2.boundingRect(cv2.findNonZero((rgba[:, :, 3] > 16).astype(np.uint8)))
    return Sprite(np.ascontiguousarray(rgba[y : y + h, x : x + w]))


def draw(
    canvas: np.ndarray,
    sprite: Sprite,
    center_x: float,
    bottom: float,
    height: float,
    squash: float = 1.0,
    flip: bool = False,
) -> None:
    """Composite ``sprite`` onto float32 RGB ``canvas`` at a sub-pixel position.

    Args:
        center_x, bottom: where the sprite's bottom centre goes, in canvas pixels.
        height: its height in canvas pixels; the width follows the aspect times ``squash``.
    """
    width = max(2, round(height * sprite.aspect * squash))
    size = (width, max(2, round(height)))
    rgba = sprite.rgba[:, ::-1] if flip else sprite.rgba
    scaled = bd.premultiplied_resize(np.ascontiguousarray(rgba), size)
    left, top = center_x - size[0] / 2, bottom - size[1]
    # Whole pixels by slicing, the fraction by a bilinear shift: motion stays smooth.
    whole_x, whole_y = math.floor(left), math.floor(top)
    shift = np.float32([[1, 0, left - whole_x], [0, 1, top - whole_y]])
    padded = cv2.warpAffine(
        scaled, shift, (size[0] + 1, size[1] + 1), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )  # fmt: skip
    bd.composite(canvas, padded, whole_x, whole_y)


def paint_world(root: Path, sprites: dict[str, Sprite], seed: int) -> np.ndarray:
    """The landscape the camera moves over: float32 RGB ``(WORLD_HEIGHT, WORLD_WIDTH, 3)``."""
    rng = np.random.default_rng([seed, 0])
    sky = bd._vertical_gradient(
        WORLD_HEIGHT, WORLD_WIDTH, np.float32([112, 170, 222]), np.float32([206, 228, 240])
    )
    world = np.ascontiguousarray(sky)
    for cx, cy in ((0.12, 0.12), (0.45, 0.2), (0.8, 0.1)):  # clouds
        for _ in range(5):
            x = cx * WORLD_WIDTH + rng.normal(0, 18)
            center = (int(x), int(cy * WORLD_HEIGHT + rng.normal(0, 4)))
            axes = (int(rng.uniform(18, 30)), int(rng.uniform(9, 14)))
            bd._fill_ellipse(world, center, axes, np.float32([246, 248, 252]))
    xs = np.linspace(-20, WORLD_WIDTH + 20, 12)
    ys = 0.5 * WORLD_HEIGHT - rng.uniform(0, 0.16, len(xs)) * WORLD_HEIGHT
    hills = np.concatenate([np.stack([xs, ys], 1), [[WORLD_WIDTH + 20, GROUND], [-20, GROUND]]])
    bd._fill_polygon(world, hills, np.float32([122, 160, 120]))
    meadow = [[-1, 0.56 * WORLD_HEIGHT], [WORLD_WIDTH, 0.58 * WORLD_HEIGHT]]
    meadow += [[WORLD_WIDTH, WORLD_HEIGHT], [-1, WORLD_HEIGHT]]
    bd._fill_polygon(world, np.array(meadow), np.float32([112, 176, 84]))
    road = [[-1, GROUND - 8], [WORLD_WIDTH, GROUND - 8]]
    road += [[WORLD_WIDTH, GROUND + 10], [-1, GROUND + 10]]
    bd._fill_polygon(world, np.array(road), np.float32([176, 160, 132]))
    for x, name, height in (
        (0.08, "pine", 80), (0.3, "house", 92), (0.47, "tree", 84), (0.66, "pine", 72),
        (0.9, "tree", 78),
    ):  # fmt: skip
        draw(world, sprites[name], x * WORLD_WIDTH, GROUND - 10, height)
    for x in (0.18, 0.58, 0.76):
        draw(world, sprites["tulips"], x * WORLD_WIDTH, WORLD_HEIGHT - 4, 44)
    return world


def camera_view(world: np.ndarray, left: float, top: float, zoom: float) -> np.ndarray:
    """The frame the camera sees: world pixels from ``(left, top)`` magnified by ``zoom``."""
    matrix = np.float32([[zoom, 0, -left * zoom], [0, zoom, -top * zoom]])
    return cv2.warpAffine(
        world, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def ease(t: float) -> float:
    return t * t * (3 - 2 * t)


def clip_frame(world: np.ndarray, sprites: dict[str, Sprite], index: int) -> np.ndarray:
    """Frame ``index`` of the clip: uint8 RGB ``(HEIGHT, WIDTH, 3)``."""
    t = index / (FPS * SECONDS - 1)
    zoom = 1.0 + 0.12 * ease(t)
    view_h = HEIGHT / zoom
    left = ease(t) * (WORLD_WIDTH - WIDTH)
    top = (WORLD_HEIGHT - view_h) * (0.5 + 0.5 * ease(t))  # zoom towards the road
    frame = camera_view(world, left, top, zoom)

    def to_screen(x: float, y: float) -> tuple[float, float]:
        return (x - left) * zoom, (y - top) * zoom

    # The butterfly flaps (a horizontal squash) along a wavy path across the sky.
    bx, by = to_screen(
        0.2 * WORLD_WIDTH + 0.6 * WORLD_WIDTH * t, 0.42 * WORLD_HEIGHT + 12 * math.sin(7 * t)
    )
    flap = 0.35 + 0.65 * abs(math.cos(2 * math.pi * 3 * t))
    draw(frame, sprites["butterfly"], bx, by, 40 * zoom, squash=flap)
    # The car drives right along the road, faster than the camera pans, with a little bounce.
    cx, cy = to_screen(-0.05 * WORLD_WIDTH + 0.95 * WORLD_WIDTH * t, GROUND + 6)
    cy += 1.2 * math.sin(2 * math.pi * 5 * t)
    draw(frame, sprites["car"], cx, cy, 46 * zoom)
    # The dog trots right through the foreground, slower than the pan (so on screen it drifts
    # left), growing as it comes towards the camera, bobbing with its steps.
    dx, dy = to_screen(0.3 * WORLD_WIDTH + 0.32 * WORLD_WIDTH * t, WORLD_HEIGHT - 8 + 8 * t)
    dy -= 4 * abs(math.sin(2 * math.pi * 4 * t))
    draw(frame, sprites["dog"], dx, dy, (60 + 26 * t) * zoom)
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def pair_frame(world: np.ndarray, sprites: dict[str, Sprite], rng) -> np.ndarray:
    """A frame of the same show at a random camera position and random poses."""
    zoom = rng.uniform(1.0, 1.3)
    left = rng.uniform(0, WORLD_WIDTH - WIDTH / zoom)
    top = rng.uniform(0, WORLD_HEIGHT - HEIGHT / zoom)
    frame = camera_view(world, left, top, zoom)

    def to_screen(x: float, y: float) -> tuple[float, float]:
        return (x - left) * zoom, (y - top) * zoom

    view_left, view_right = left, left + WIDTH / zoom
    view_bottom = top + HEIGHT / zoom
    for name in rng.permutation(["butterfly", "car", "dog"]):
        x = rng.uniform(view_left + 15, view_right - 15)
        squash = 1.0
        if name == "butterfly":
            y, height = rng.uniform(0.2, 0.45) * WORLD_HEIGHT, rng.uniform(28, 44)
            squash = rng.uniform(0.35, 1.0)
        elif name == "car":
            y, height = GROUND + 6, rng.uniform(40, 56)
        else:  # the dog stands in the foreground, feet inside the view
            y = rng.uniform(GROUND + 24, max(GROUND + 25, view_bottom - 4))
            height = rng.uniform(56, 90)
        sx, sy = to_screen(x, y)
        draw(frame, sprites[name], sx, sy, height * zoom, squash, flip=bool(rng.random() < 0.5))
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def tone(path: Path, ffmpeg: str) -> None:
    """A 4 s soft two-note chime, so audio passthrough can be heard and checked.

    It is written with a tiny black video stream because ``VideoWriter(audio_from=...)`` takes
    the audio of a clip and celpaint's probe refuses audio-only files.
    """
    expression = (
        "0.25*sin(2*PI*523.25*t)*exp(-2*mod(t,1))+0.15*sin(2*PI*659.25*t)*exp(-3*mod(t,0.5))"
    )
    command = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"color=black:s=16x16:r={FPS}:d={SECONDS}",
        "-f", "lavfi", "-i", f"aevalsrc=exprs='{expression}':s=44100:d={SECONDS}",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", str(path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: ffmpeg could not make the audio track: {result.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clipart", type=Path, required=True, help="openclipart png folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "samples")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ffmpeg", default=None)
    args = parser.parse_args(argv)

    ffmpeg = find_ffmpeg(args.ffmpeg)
    sprites = {name: load_sprite(args.clipart, path) for name, path in SAMPLE_ART.items()}
    world = paint_world(args.clipart, sprites, args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    params = DEFAULT_PARAMS
    fps = Fraction(FPS)

    with tempfile.TemporaryDirectory() as scratch:
        audio = Path(scratch) / "chime.mp4"
        tone(audio, ffmpeg)
        writers = {
            kind: VideoWriter(out / f"clip_{kind}.mp4", WIDTH, HEIGHT, fps, ffmpeg,
                              audio_from=audio, crf=12)
            for kind in ("color", "lineart", "gray")
        }  # fmt: skip
        try:
            for index in range(FPS * SECONDS):
                frame = clip_frame(world, sprites, index)
                lines = xdog(frame, params)
                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
                writers["color"].write(frame)
                writers["lineart"].write(np.repeat(lines[:, :, None], 3, axis=2))
                writers["gray"].write(np.repeat(gray[:, :, None], 3, axis=2))
            for writer in writers.values():
                writer.close()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise

    rng = np.random.default_rng([args.seed, 1])
    for sub in ("color", "sketch"):
        (out / "pairs" / sub).mkdir(parents=True, exist_ok=True)
    for index in range(PAIRS):
        frame = pair_frame(world, sprites, rng)
        write_image(out / "pairs" / "color" / f"{index:03d}.png", frame)
        write_image(out / "pairs" / "sketch" / f"{index:03d}.png", xdog(frame, params))

    manifest = {
        "description": "celpaint samples: a 4 s clip and 32 paired frames of one clip-art show",
        "seed": args.seed,
        "command": shlex.join(["python", "scripts/make_samples.py", *argv]),
        "source_root": str(args.clipart),
        "source_package": "Debian openclipart-png 1:0.18+dfsg-19 (/usr/share/openclipart/png)",
        "license": bd.OPENCLIPART_LICENSE + "; the audio is a synthesised chime",
        "note": "pass this file to scripts/build_dataset.py --exclude-list to keep this art "
        "out of training and validation sets",
        "sources": [
            {"path": path, "name": name, "role": ROLES.get(name, "background")}
            for name, path in SAMPLE_ART.items()
        ],
        "clip": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": FPS * SECONDS,
                 "video": "H.264 crf 12 yuv420p", "audio": "AAC 96 kb/s, 44.1 kHz"},
        "line_art": params.to_dict(),
        "pairs": PAIRS,
        "files": sorted(
            p.relative_to(out).as_posix() for p in out.rglob("*")
            if p.is_file() and p.name not in ("MANIFEST.json", "README.md")
        ),
    }  # fmt: skip
    write_text(out / "MANIFEST.json", json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
