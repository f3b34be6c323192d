"""Keyframe reference colorization: a colored keyframe per shot, its colors carried through it.

A clip with references is colorized in two passes over its frames:

1. *analysis*: the generator colors every frame at the work size (the fallback colors), the
   gray input frames are kept, and scene cuts are found; then each shot that holds a keyframe
   gets its colors carried from its keyframes, forward and backward (``ops.carry.carry_shot``),
   and every shot is smoothed over time as any clip is (unless ``--no-temporal``), except the
   regions the keyframes' colors settled. Shots without a keyframe keep the generator's colors.
2. *rendering*: the frames are decoded again and brought to the native size as usual (lines of
   the native input drawn over line art, the input's L* exactly for grayscale); a keyframe's own
   frame is its reference, with the input's lines (line art) or the input's L* (grayscale).

Memory: the analysis keeps every frame's gray and L*a*b* at the work size (about 2 MB a frame
at 512x288), not the native frames.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from celpaint.color import array as color_array
from celpaint.device import usable_cores
from celpaint.errors import InputError
from celpaint.io.frames import MAX_PIXELS, check_pixels, image_size, list_images, read_image
from celpaint.io.sources import SourceInfo
from celpaint.ops.carry import CarryParams, carry_shot, lightness_palette, palette_fill
from celpaint.ops.geometry import resize_to_work
from celpaint.ops.temporal import TemporalParams, TemporalSmoother
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer
from celpaint.pipeline.engine import NamedStage

log = logging.getLogger("celpaint")

# A reference carries color when its mean chroma (sqrt(a*^2 + b*^2)) reaches this.
MIN_REFERENCE_CHROMA = 3.0
# A reference of another resolution is scaled when its aspect ratio is within this of the
# frames'.
_ASPECT_TOLERANCE = 0.01
# Frames smoothed per call when a shot is smoothed after the carry.
_SMOOTH_FRAMES = 64
_NUMBERED = re.compile(r"^(\d+)=(.+)$")
_LISTED = 5


def resolve_references(
    specs: Sequence[str | Path], info: SourceInfo, max_pixels: int = MAX_PIXELS
) -> dict[int, np.ndarray]:
    """Read the keyframes given for one input.

    Args:
        specs: each an image named like the input frame it colors (a frame folder's file
            stem; ``frame_000001`` ... for a video's frames, as ``celpaint extract`` names
            them), a folder of such images, or ``N=IMAGE`` with N the 1-based frame number.
        info: the input's ``SourceInfo``.
        max_pixels: the largest reference read (``io.frames.MAX_PIXELS``).

    Returns:
        0-based frame index -> uint8 RGB ``(H, W, 3)`` at the frames' size.

    Raises:
        InputError: a reference that matches no frame (the message lists the first frame
            names), is unreadable, has another aspect ratio, or carries no color.
    """
    names = [info.name(index) for index in range(info.frame_count)]
    index_of = {name: index for index, name in enumerate(names)}
    references: dict[int, np.ndarray] = {}
    for spec in specs:
        for index, path in _reference_files(str(spec), index_of, info):
            references[index] = _read_reference(path, info, max_pixels)
    return references


def _reference_files(spec: str, index_of: dict[str, int], info: SourceInfo):
    numbered = _NUMBERED.match(spec)
    if numbered and not Path(spec).exists():
        number, path = int(numbered.group(1)), Path(numbered.group(2))
        if not 1 <= number <= info.frame_count:
            raise InputError(
                f"--reference {spec}: {info.path} has frames 1..{info.frame_count}, not {number}"
            )
        return [(number - 1, path)]
    path = Path(spec)
    if not path.exists():
        raise InputError(f"--reference {spec} does not exist")
    files = list_images(path) if path.is_dir() else [path]
    if not files:
        raise InputError(f"--reference {spec} holds no images")
    found = []
    for file in files:
        if file.stem not in index_of and info.kind == "image":
            raise InputError(
                f"the reference {file.name} is not the single image {info.path.name}'s own: "
                f"name it {info.path.stem}.png (or pass 1={file})"
            )
        if file.stem not in index_of:
            listed = ", ".join(list(index_of)[:_LISTED])
            more = ", ..." if len(index_of) > _LISTED else ""
            raise InputError(
                f"the reference {file.name} is named like no frame of {info.path} (its frames "
                f"are {listed}{more}); name it like the frame it colors or pass N={file}"
            )
        found.append((index_of[file.stem], file))
    return found


def _read_reference(path: Path, info: SourceInfo, max_pixels: int) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"the reference {path} is not an image file")
    check_pixels(path, *image_size(path), max_pixels)
    rgb = read_image(path)
    height, width = rgb.shape[:2]
    if (height, width) != (info.height, info.width):
        if abs(width / height - info.width / info.height) > _ASPECT_TOLERANCE * (
            info.width / info.height
        ):
            raise InputError(
                f"the reference {path} is {width}x{height} but the frames of {info.path} are "
                f"{info.width}x{info.height}, another shape; crop it to the frames' shape"
            )
        log.info("%s is %dx%d: scaled to the frames' %dx%d", path.name, width, height,
                 info.width, info.height)  # fmt: skip
        shrink = width > info.width
        rgb = cv2.resize(rgb, (info.width, info.height),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)  # fmt: skip
    chroma = np.hypot(*np.moveaxis(color_array.rgb_to_lab(rgb)[..., 1:], -1, 0)).mean()
    if chroma < MIN_REFERENCE_CHROMA:
        raise InputError(
            f"the reference {path} carries no color (it is line art or grayscale); give the "
            "colored keyframe"
        )
    return rgb


class KeyframeColorizer:
    """Colorizes one clip from its keyframes, in the two passes of the module docstring.

    Run ``analysis_stages()`` over every frame of the clip in order (the engine's stages, with
    a sink that discards), then ``carry()``, then ``render_stage()`` over the frames again (all
    of them, or those a resumed output still lacks).

    Args:
        colorizer: the model.
        options: smoothing (of the fallback colors) and flat fill.
        references: 0-based frame index -> uint8 RGB ``(H, W, 3)`` at the frames' size
            (``resolve_references``).
        params: how colors are carried (``ops.carry.CarryParams``).
    """

    def __init__(
        self,
        colorizer: Colorizer,
        options: ColorizeOptions,
        references: dict[int, np.ndarray],
        params: CarryParams | None = None,
    ):
        self.stream = colorizer.stream(options)
        self.task = colorizer.task
        self.work_size = colorizer.work_size
        self.references = references
        self.params = params or CarryParams()
        self.index_of: dict[str, int] = {}
        self.grays: list[np.ndarray] = []
        self.labs: list[np.ndarray] = []
        self.carried: set[int] = set()
        self.scaled = False

    def analysis_stages(self) -> list:
        """The generator, then recording its (smoothed) colors; the frames pass through."""
        return [self.stream.predict, NamedStage(self._record)]

    def _record(self, names: list[str], predicted) -> np.ndarray:
        frames, grays, labs = predicted
        for name, gray, lab in zip(names, grays, labs, strict=True):
            self.index_of[name] = len(self.grays)
            self.grays.append(gray)
            self.labs.append(lab)
        self.scaled = grays.shape[1:3] != frames.shape[1:3]
        return frames

    def carry(self) -> None:
        """Carry the keyframes' colors through their shots (after the analysis)."""
        missing = [index for index in self.references if index >= len(self.grays)]
        if missing:
            raise InputError(
                f"frame {missing[0] + 1} has a reference but the clip has {len(self.grays)} frames"
            )
        for start, end in self._shots():
            keys = {i - start: self._work_lab(self.references[i]) for i in self.references
                    if start <= i < end}  # fmt: skip
            settled = None
            if keys:
                if self.task.keeps_input_lightness:
                    palette = lightness_palette(list(keys.values()))
                    for index in range(start, end):
                        self.labs[index] = palette_fill(self.labs[index], palette)
                self.labs[start:end], settled = carry_shot(
                    self.grays[start:end], self.labs[start:end], keys,
                    not self.task.keeps_input_lightness, self.params,
                )  # fmt: skip
                self.carried.update(range(start, end))
            self._smooth(start, end, settled)

    def _smooth(self, start: int, end: int, settled: list | None) -> None:
        """Smooth a shot's colors over time in place, as any clip's (unless
        ``--no-temporal``), a few frames at a time (the smoother carries its state from one
        call to the next).

        In a shot with keyframes, the settled colors (regions the keyframes' colors reached)
        stay exact; the rest (colors along lines and edges, filled in from a neighbour, the
        fallback) would flicker and are smoothed.
        """
        smoother = self.stream.smoother
        if smoother is None:
            return
        smoother.reset()
        for first in range(start, end, _SMOOTH_FRAMES):
            last = min(end, first + _SMOOTH_FRAMES)
            smoothed = smoother.process_batch(
                np.stack(self.grays[first:last]), np.stack(self.labs[first:last]),
                usable_cores(),
            )  # fmt: skip
            for index, lab in zip(range(first, last), smoothed, strict=True):
                if settled is not None:
                    np.copyto(lab, self.labs[index], where=settled[index - start][..., None])
                self.labs[index] = lab

    def _work_lab(self, rgb: np.ndarray) -> np.ndarray:
        small = resize_to_work(rgb, self.work_size)
        return color_array.rgb_to_lab(np.ascontiguousarray(small))

    def _shots(self) -> list[tuple[int, int]]:
        """``(start, end)`` of every shot, cut where the smoothing would cut
        (``TemporalSmoother.scene_cuts``; its default settings with ``--no-temporal``)."""
        smoother = self.stream.smoother or TemporalSmoother(TemporalParams())
        cuts = [0, *smoother.scene_cuts(np.stack(self.grays), usable_cores()), len(self.grays)]
        return list(zip(cuts[:-1], cuts[1:], strict=True))

    def render_stage(self) -> NamedStage:
        """The rendering pass: uint8 RGB ``(B, H, W, 3)`` frames and their names in,
        colored frames out."""
        return NamedStage(self._render)

    def _render(self, names: list[str], frames: np.ndarray) -> np.ndarray:
        out = np.empty_like(frames)
        for slot, (name, frame) in enumerate(zip(names, frames, strict=True)):
            index = self.index_of[name]
            if index in self.references:
                out[slot] = self._render_keyframe(frame, self.references[index])
                continue
            line_art_lines = not self.task.keeps_input_lightness and (
                index in self.carried or self.scaled
            )
            out[slot] = self.stream.render(frame, self.labs[index], line_art_lines)
        return out

    def _render_keyframe(self, frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The reference itself, with the input's lines (line art) or L* (grayscale)."""
        lab = color_array.rgb_to_lab(reference)
        native_l = color_array.lightness(frame)
        if self.task.keeps_input_lightness:
            lab[..., 0] = native_l
            return color_array.lab_to_rgb(lab, fit_gamut=True)
        np.minimum(lab[..., 0], native_l, out=lab[..., 0])
        return color_array.lab_to_rgb(lab, fit_gamut=False)


def adapt(
    colorizer: Colorizer,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    steps: int,
    seed: int = 0,
    learning_rate: float = 1e-4,
    crop: int = 256,
) -> list[float]:
    """Fine-tune the colorizer's generator on a shot's keyframes (in place).

    Each step takes one keyframe pair, a random crop (the largest multiple of the model's size
    multiple up to ``crop`` px that fits the frame at the work size) and a random horizontal
    flip, and lowers the L1 distance between the generator's output and the keyframe's colors
    (``Task.target``) with Adam. Batch norm statistics stay as trained (eval mode).

    Args:
        colorizer: float32 on its device.
        pairs: (input frame, keyframe), both uint8 RGB ``(H, W, 3)`` at the clip's size.
        steps: optimizer steps (0: nothing).

    Returns:
        The loss of every step.

    Raises:
        InputError: a colorizer not in float32, or a compiled one.
    """
    if steps <= 0 or not pairs:
        return []
    if colorizer.dtype != torch.float32 or colorizer.compiled:
        raise InputError("--adapt-steps needs --precision fp32 and no --compile")
    model, task, multiple = colorizer.model, colorizer.task, colorizer.config.size_multiple
    rng = np.random.default_rng(seed)
    data = [
        (resize_to_work(frame, colorizer.work_size), resize_to_work(key, colorizer.work_size))
        for frame, key in pairs
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(0.5, 0.999))
    losses = []
    for _ in range(steps):
        frame, key = data[rng.integers(len(data))]
        height, width = frame.shape[:2]
        size_h = max(multiple, min(crop, height) // multiple * multiple)
        size_w = max(multiple, min(crop, width) // multiple * multiple)
        top = int(rng.integers(max(1, height - size_h + 1)))
        left = int(rng.integers(max(1, width - size_w + 1)))
        window = (slice(top, top + size_h), slice(left, left + size_w))
        pair = [_padded(image[window], size_h, size_w) for image in (frame, key)]
        if rng.random() < 0.5:
            pair = [image[:, ::-1] for image in pair]
        source, target = (colorizer.to_tensor(image[None].copy()) for image in pair)
        with torch.enable_grad():
            output = model(task.to_network(source).contiguous(memory_format=torch.channels_last))
            loss = torch.nn.functional.l1_loss(output, task.target(target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    colorizer.weights_changed()
    return losses


def _padded(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` padded by edge replication to ``height x width`` (frames smaller than the
    size multiple)."""
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h <= 0 and pad_w <= 0:
        return image
    return np.pad(image, ((0, max(0, pad_h)), (0, max(0, pad_w)), (0, 0)), mode="edge")


def colorize_clip(
    colorizer: Colorizer,
    frames: np.ndarray,
    references: dict[int, np.ndarray],
    options: ColorizeOptions | None = None,
    params: CarryParams | None = None,
) -> np.ndarray:
    """Colorize a clip in memory from its keyframes.

    Args:
        colorizer: the model.
        frames: uint8 RGB ``(T, H, W, 3)``, one clip in order.
        references: 0-based frame index -> uint8 RGB ``(H, W, 3)`` keyframe.
        options: smoothing of the fallback colors and flat fill (defaults when None).
        params: how colors are carried.

    Returns:
        uint8 RGB ``(T, H, W, 3)``.

    Raises:
        ValueError: frames not uint8 ``(T, H, W, 3)``, or a reference of another size or
            outside the clip.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    for index, rgb in references.items():
        if not 0 <= index < len(frames) or rgb.shape != frames.shape[1:]:
            raise ValueError(f"reference {index}: {rgb.shape} does not fit the clip")
    keyframes = KeyframeColorizer(colorizer, options or ColorizeOptions(), references, params)
    names = [str(index) for index in range(len(frames))]
    predict, record = keyframes.analysis_stages()
    step = colorizer.batch_size
    for start in range(0, len(frames), step):
        batch = frames[start : start + step]
        record(names[start : start + step], predict(batch))
    keyframes.carry()
    render = keyframes.render_stage()
    return np.concatenate(
        [render(names[s : s + step], frames[s : s + step]) for s in range(0, len(frames), step)]
    )
