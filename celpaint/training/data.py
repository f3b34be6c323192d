"""Paired training data: line art (or L*) with the colored frame it should become.

Three layouts are read:

* **folder pairs** (``sketch_dir`` + ``color_dir``): files matched by stem, or by natural-order
  position with ``match="order"``;
* **aligned** (``aligned_dir``): each image holds the line art and the colored frame side by side
  (``A|B``, the pix2pix dataset format; ``aligned_order`` says which half is which);
* **color only** (a folder of frames or a video clip): the line art is made on the fly by
  ``celpaint.ops.lineart.xdog`` (the extractor of ``celpaint lineart``). Video clips are
  decoded once, frame by frame.

Frames keep their aspect ratio and may have any size: frames whose long side exceeds
``work_size`` are scaled down to it first (the ``Colorizer`` scales frames the same way before
the network sees them, so lines have the same thickness in training and in use). Line art made
from color frames is extracted at the native size and then scaled like a drawn one would be.

Every image is decoded once while the dataset is built, which checks that it is readable and
that the two halves of each pair have one size; with ``cache=True`` (default) the decoded,
scaled pairs stay in memory, so an epoch costs no decoding at all.

A sample is a dict of uint8 tensors:

* ``"rgb"``: ``(3, h, w)`` the colored frame, 0..255;
* ``"line_art"``: ``(1, h, w)`` dark lines on white, 0..255 (only when ``Task.takes_line_art``).

Training samples are random ``crop x crop`` windows (frames smaller than the crop are padded by
mirroring first), flipped left-right half of the time; validation samples are whole frames.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from celpaint.color.array import to_gray
from celpaint.errors import InputError
from celpaint.io.frames import list_images, read_image
from celpaint.io.sources import open_source
from celpaint.ops.geometry import resize_to_work
from celpaint.ops.lineart import xdog
from celpaint.training.config import AlignedOrder, MatchMode, OnError

log = logging.getLogger("celpaint")

LoadProgress = Callable[[int, int], None]

_LIST_LIMIT = 5


@dataclass
class DataSpec:
    """Where the training data is and how to read it.

    Exactly one of: ``sketch`` with ``color`` (folder pairs), ``aligned``, or ``color`` alone.

    Attributes:
        val: held-out data in the same layout as the training data (for folder pairs, the
            color folder; ``val_sketch`` is then its line-art folder). None: hold out the last
            ``val_fraction`` of the frames instead.
        val_fraction: share of frames held out when ``val`` is None (0 for none). Taken from the
            end in order, not at random: neighbouring frames of a clip are near duplicates, so a
            random split would leak training frames into validation.
        match: pair folder files by stem (``"name"``) or by natural-order position.
        aligned_order: which half of an aligned image is the line art.
        frame_step: keep every N-th frame of a video clip (neighbours are near duplicates).
        on_error: an unreadable image is skipped with a warning (``"skip"``) or stops
            everything (``"stop"``).
        cache: keep the decoded, scaled frames in memory.
    """

    sketch: Path | None = None
    color: Path | None = None
    aligned: Path | None = None
    val: Path | None = None
    val_sketch: Path | None = None
    val_fraction: float = 0.05
    match: MatchMode = "name"
    aligned_order: AlignedOrder = "sketch-color"
    frame_step: int = 1
    on_error: OnError = "skip"
    cache: bool = True

    def __post_init__(self) -> None:
        for name in ("sketch", "color", "aligned", "val", "val_sketch"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))

    def describe(self) -> str:
        if self.aligned is not None:
            return f"aligned pairs from {self.aligned}"
        if self.sketch is not None:
            return f"line art {self.sketch} with colors {self.color}"
        return f"colors from {self.color} with extracted line art"


@dataclass
class Example:
    """One training pair before decoding.

    Attributes:
        name: a label for messages and sample grids.
        color: the colored image file (or the aligned ``A|B`` file).
        sketch: the line-art file; None when the line art is extracted from the color frame
            (or not needed) or comes from an aligned image.
        aligned: ``color`` holds both halves.
        pair: the decoded, scaled ``(line_art, rgb)`` when already in memory.
    """

    name: str
    color: Path | None = None
    sketch: Path | None = None
    aligned: bool = False
    pair: tuple[np.ndarray | None, np.ndarray] | None = None


@dataclass
class DataReport:
    """What was found while building the datasets."""

    train_count: int = 0
    val_count: int = 0
    skipped: list[str] = field(default_factory=list)


class UnreadableImage(InputError):
    """An image file that cannot be decoded (skipped or fatal, by ``DataSpec.on_error``)."""


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path, report_alpha=False)
    except InputError as error:
        raise UnreadableImage(str(error)) from None


def _extract_line_art(rgb: np.ndarray) -> np.ndarray:
    return xdog(rgb)


def fit_to_work_size(image: np.ndarray, work_size: int | None) -> np.ndarray:
    """Scale ``image`` down to ``work_size`` as the Colorizer does (``geometry.resize_to_work``);
    no ``work_size`` keeps it as it is."""
    return resize_to_work(image, work_size) if work_size else image


def load_pair(
    example: Example,
    needs_line_art: bool,
    work_size: int | None,
    aligned_order: AlignedOrder = "sketch-color",
    line_art_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Decode one example.

    Returns:
        ``(line_art, rgb)``: uint8 ``(h, w)`` (None when not needed) and uint8 ``(h, w, 3)``,
        both scaled to ``work_size``.

    Raises:
        InputError: an unreadable file, halves of different sizes, an odd-width aligned image.
    """
    if example.pair is not None:
        return example.pair
    image = _read(example.color)
    line_art = None
    if example.aligned:
        height, width = image.shape[:2]
        if width % 2:
            raise InputError(
                f"{example.color} is {width} pixels wide; an aligned image holds two halves of "
                "equal width side by side (line art | color)"
            )
        left, right = image[:, : width // 2], image[:, width // 2 :]
        sketch_half, rgb = (left, right) if aligned_order == "sketch-color" else (right, left)
        rgb = np.ascontiguousarray(rgb)
        if needs_line_art:
            line_art = to_gray(np.ascontiguousarray(sketch_half))
    else:
        rgb = image
        if needs_line_art and example.sketch is not None:
            sketch = _read(example.sketch)
            if sketch.shape != rgb.shape:
                raise InputError(
                    f"{example.sketch.name} is {sketch.shape[1]}x{sketch.shape[0]} but its color "
                    f"frame {example.color.name} is {rgb.shape[1]}x{rgb.shape[0]}; a pair must "
                    "have one size"
                )
            line_art = to_gray(sketch)
        elif needs_line_art:
            line_art = (line_art_fn or _extract_line_art)(rgb)
    rgb = fit_to_work_size(rgb, work_size)
    if line_art is not None:
        line_art = fit_to_work_size(line_art, work_size)
    return line_art, rgb


def _check_folder(path: Path, option: str) -> None:
    if not path.exists():
        raise InputError(f"{option} {path} does not exist")
    if not path.is_dir():
        raise InputError(f"{option} {path} must be a folder of images")


def _shorten(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f" and {len(names) - _LIST_LIMIT} more" if len(names) > _LIST_LIMIT else "")


def folder_pairs(sketch_dir: Path, color_dir: Path, match: MatchMode = "name") -> list[Example]:
    """Pair the images of two folders by stem or by natural-order position.

    Raises:
        InputError: a missing or empty folder, unmatched names, different counts.
    """
    _check_folder(sketch_dir, "--sketch")
    _check_folder(color_dir, "--color")
    sketches, colors = list_images(sketch_dir), list_images(color_dir)
    for folder, files in ((sketch_dir, sketches), (color_dir, colors)):
        if not files:
            raise InputError(f"{folder} holds no images")
    if match == "order":
        if len(sketches) != len(colors):
            raise InputError(
                f"{sketch_dir} holds {len(sketches)} images but {color_dir} holds {len(colors)}; "
                "--match order pairs them by position, so the counts must be equal"
            )
        return [Example(c.stem, color=c, sketch=s) for s, c in zip(sketches, colors, strict=True)]
    if match != "name":
        raise InputError(f"--match must be 'name' or 'order', got {match!r}")
    by_stem = {p.stem: p for p in sketches}
    color_stems = {p.stem for p in colors}
    missing_sketch = [p.name for p in colors if p.stem not in by_stem]
    missing_color = [p.name for p in sketches if p.stem not in color_stems]
    if missing_sketch or missing_color:
        parts = []
        if missing_sketch:
            parts.append(
                f"{len(missing_sketch)} color frames have no line art of the same name in "
                f"{sketch_dir} ({_shorten(missing_sketch)})"
            )
        if missing_color:
            parts.append(
                f"{len(missing_color)} line-art images have no color frame in {color_dir} "
                f"({_shorten(missing_color)})"
            )
        raise InputError(
            "; ".join(parts) + ". Rename them so the names match, or pass --match order to "
            "pair the files by their sorted position"
        )
    return [Example(c.stem, color=c, sketch=by_stem[c.stem]) for c in colors]


def aligned_examples(folder: Path) -> list[Example]:
    """One example per image of an aligned ``A|B`` folder."""
    _check_folder(folder, "--aligned")
    files = list_images(folder)
    if not files:
        raise InputError(f"{folder} holds no images")
    return [Example(p.stem, color=p, aligned=True) for p in files]


def color_examples(
    path: Path,
    needs_line_art: bool,
    work_size: int | None,
    frame_step: int = 1,
    ffmpeg: str | None = None,
    line_art_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: LoadProgress | None = None,
) -> list[Example]:
    """Examples from color frames alone: a folder of images or a video clip.

    A clip is decoded here, frame by frame (every ``frame_step``-th frame kept), and its frames
    are kept in memory already scaled, with their line art.
    """
    if not path.exists():
        raise InputError(f"--color {path} does not exist")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise InputError(f"{path} holds no images")
        return [Example(p.stem, color=p) for p in files]
    if frame_step < 1:
        raise InputError(f"--frame-step must be at least 1, got {frame_step}")
    examples = []
    with open_source(path, ffmpeg) as source:
        total = source.info.frame_count
        for index, rgb in enumerate(source.frames()):
            if index % frame_step == 0:
                line_art = None
                if needs_line_art:
                    line_art = fit_to_work_size((line_art_fn or _extract_line_art)(rgb), work_size)
                # A copy: decoded frames can be read-only views of the decoder's buffer.
                pair = (line_art, np.array(fit_to_work_size(rgb, work_size)))
                name = source.info.name(index)
                examples.append(Example(name, pair=pair))
            if progress is not None:
                progress(index + 1, max(total, index + 1))
    if not examples:
        raise InputError(f"{path} holds no frames")
    return examples


def collect_examples(
    spec: DataSpec,
    needs_line_art: bool,
    work_size: int | None,
    ffmpeg: str | None = None,
    progress: LoadProgress | None = None,
    validation: bool = False,
) -> list[Example]:
    """The examples of the training data described by ``spec`` (or of ``spec.val``)."""
    if validation:
        if spec.aligned is not None:
            return aligned_examples(spec.val)
        if spec.sketch is not None:
            if spec.val_sketch is None:
                raise InputError(
                    "--val with --sketch/--color needs --val-sketch, the line art of the "
                    "validation frames"
                )
            return folder_pairs(spec.val_sketch, spec.val, spec.match)
        return color_examples(
            spec.val, needs_line_art, work_size, spec.frame_step, ffmpeg, progress=progress
        )
    if spec.aligned is not None:
        return aligned_examples(spec.aligned)
    if spec.sketch is not None:
        return folder_pairs(spec.sketch, spec.color, spec.match)
    return color_examples(
        spec.color, needs_line_art, work_size, spec.frame_step, ffmpeg, progress=progress
    )


def check_spec(spec: DataSpec, needs_line_art: bool) -> None:
    """Reject contradictory data options before anything is read."""
    layouts = [spec.aligned is not None, spec.sketch is not None]
    if spec.aligned is not None and (spec.sketch is not None or spec.color is not None):
        raise InputError("--aligned is one layout and --sketch/--color another; pass one of them")
    if spec.sketch is not None and spec.color is None:
        raise InputError("--sketch needs --color, the colored frames of the same names")
    if not any(layouts) and spec.color is None:
        raise InputError(
            "no training data: pass --sketch DIR --color DIR, --aligned DIR, or --color DIR|CLIP"
        )
    if spec.sketch is not None and not needs_line_art:
        raise InputError(
            "--model lab takes L* from the color frames and ignores line art; drop --sketch "
            "(pass --color alone) or train --model pix2pix"
        )
    if spec.val_sketch is not None and spec.val is None:
        raise InputError("--val-sketch needs --val, the colored validation frames")
    if not 0 <= spec.val_fraction < 1:
        raise InputError(f"--val-fraction must be in [0, 1), got {spec.val_fraction}")
    if spec.on_error not in get_args(OnError):
        raise InputError(f"--on-error must be 'skip' or 'stop', got {spec.on_error!r}")
    if spec.aligned_order not in get_args(AlignedOrder):
        raise InputError(
            f"--aligned-order must be 'sketch-color' or 'color-sketch', got {spec.aligned_order!r}"
        )


def decode_all(
    examples: list[Example],
    needs_line_art: bool,
    work_size: int | None,
    spec: DataSpec,
    report: DataReport,
    progress: LoadProgress | None = None,
) -> list[Example]:
    """Decode every example once: drop (or stop on) unreadable ones, keep pairs if caching."""
    kept = []
    for index, example in enumerate(examples):
        try:
            pair = load_pair(example, needs_line_art, work_size, spec.aligned_order)
        except UnreadableImage as error:
            if spec.on_error == "stop":
                raise UnreadableImage(
                    f"{error} (pass --on-error skip to train without it)"
                ) from None
            log.warning("skipping %s: %s", example.name, error)
            report.skipped.append(example.name)
            continue
        if spec.cache:
            example.pair = pair
        kept.append(example)
        if progress is not None:
            progress(index + 1, len(examples))
    return kept


def build_datasets(
    spec: DataSpec,
    needs_line_art: bool,
    crop: int,
    work_size: int | None,
    min_train: int = 1,
    ffmpeg: str | None = None,
    progress: LoadProgress | None = None,
) -> tuple[PairDataset, PairDataset, DataReport]:
    """Read the training data and split off the validation set.

    Args:
        needs_line_art: produce ``"line_art"`` (pix2pix); the L*a*b* model needs only RGB.
        crop: side of the square training crops.
        min_train: fewest training pairs accepted (the global batch size).

    Returns:
        ``(train, val, report)``; ``val`` may be empty (``val_fraction=0`` and no ``val``).

    Raises:
        InputError: bad options, unmatched names, pairs of different sizes, an unreadable image
            with ``on_error="stop"``, or fewer than ``min_train`` training pairs.
    """
    check_spec(spec, needs_line_art)
    report = DataReport()
    examples = collect_examples(spec, needs_line_art, work_size, ffmpeg, progress)
    examples = decode_all(examples, needs_line_art, work_size, spec, report, progress)
    if spec.val is not None:
        val_examples = collect_examples(
            spec, needs_line_art, work_size, ffmpeg, progress, validation=True
        )
        val_examples = decode_all(val_examples, needs_line_art, work_size, spec, report, progress)
        train_examples = examples
    else:
        held_out = 0
        if spec.val_fraction > 0 and len(examples) > 1:
            held_out = max(1, math.floor(len(examples) * spec.val_fraction + 0.5))
        train_examples = examples[: len(examples) - held_out]
        val_examples = examples[len(examples) - held_out :]
    if len(train_examples) < min_train:
        held = f" after holding out {len(val_examples)} for validation" if val_examples else ""
        raise InputError(
            f"only {len(train_examples)} training pairs{held}, fewer than one batch "
            f"({min_train}); lower --batch-size, add images, or pass --val-fraction 0"
        )
    report.train_count, report.val_count = len(train_examples), len(val_examples)
    train = PairDataset(train_examples, needs_line_art, crop, work_size, spec.aligned_order)
    val = PairDataset(val_examples, needs_line_art, None, work_size, spec.aligned_order)
    return train, val, report


def random_crop(
    images: list[np.ndarray], crop: int, rng: np.random.Generator, flip: bool = True
) -> list[np.ndarray]:
    """The same random ``crop x crop`` window (and flip) of same-sized images.

    Images smaller than the crop are first padded by mirroring their borders (evenly on both
    sides), so frames of any size give full crops.
    """
    height, width = images[0].shape[:2]
    pad_h, pad_w = max(0, crop - height), max(0, crop - width)
    if pad_h or pad_w:
        padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        # "symmetric" mirrors including the edge pixel, which works even for 1-pixel sides.
        images = [
            np.pad(im, padding + ((0, 0),) * (im.ndim - 2), mode="symmetric") for im in images
        ]
        height, width = images[0].shape[:2]
    top = int(rng.integers(0, height - crop + 1))
    left = int(rng.integers(0, width - crop + 1))
    mirrored = flip and bool(rng.integers(0, 2))
    out = []
    for image in images:
        window = image[top : top + crop, left : left + crop]
        out.append(np.ascontiguousarray(window[:, ::-1] if mirrored else window))
    return out


class PairDataset(Dataset):
    """Decoded pairs as uint8 tensors (see the module docstring for the sample layout).

    Args:
        examples: the pairs (decoded already when cached).
        needs_line_art: include ``"line_art"`` in samples.
        crop: side of the random training crops; None returns whole frames (validation).
        work_size: long side frames are scaled to (for examples not cached).

    Indexing with an int gives a sample with a crop drawn from a generator seeded by the
    index; ``EpochSampler`` passes ``(index, seed, epoch, position)`` keys instead, which makes
    every crop a function of the run's seed and its place in the schedule (so a resumed run
    sees the same crops as an uninterrupted one, whatever the number of loader workers).
    """

    def __init__(
        self,
        examples: list[Example],
        needs_line_art: bool,
        crop: int | None,
        work_size: int | None,
        aligned_order: AlignedOrder = "sketch-color",
        flip: bool = True,
    ):
        self.examples = examples
        self.needs_line_art = needs_line_art
        self.crop = crop
        self.work_size = work_size
        self.aligned_order = aligned_order
        self.flip = flip

    def __len__(self) -> int:
        return len(self.examples)

    def name(self, index: int) -> str:
        return self.examples[index].name

    def pair(self, index: int) -> tuple[np.ndarray | None, np.ndarray]:
        """The whole decoded ``(line_art, rgb)`` of example ``index`` (uint8, work size)."""
        return load_pair(
            self.examples[index], self.needs_line_art, self.work_size, self.aligned_order
        )

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        if isinstance(key, tuple):
            index, seed, epoch, position = key
            rng = np.random.default_rng([seed, epoch, position])
        else:
            index = int(key)
            rng = np.random.default_rng([index])
        line_art, rgb = self.pair(index)
        images = [rgb] if line_art is None else [rgb, line_art]
        if self.crop is not None:
            images = random_crop(images, self.crop, rng, self.flip)
        # The channel move is done by numpy, single-threaded: torch's parallel copy of a small
        # permuted tensor costs far more when the cores are busy with training.
        sample = {"rgb": torch.from_numpy(np.ascontiguousarray(images[0].transpose(2, 0, 1)))}
        if self.needs_line_art:
            sample["line_art"] = torch.from_numpy(images[1])[None]
        return sample


class EpochSampler(Sampler):
    """A distributed sampler whose order is a function of (seed, epoch) and that can start
    part-way into an epoch.

    Each epoch is one permutation of the dataset (seeded with ``seed`` and the epoch), cut to a
    whole number of global batches (``batch_size * world_size``, the remainder dropped so every
    process runs the same number of steps), and dealt out to the processes in turn. Each item is
    the key ``(index, seed, epoch, position)`` that ``PairDataset`` turns into a crop.

    Args:
        length: the dataset's length.
        batch_size: samples per process per step.
        seed: the run's seed.
        rank, world_size: this process and the number of processes.
    """

    def __init__(
        self, length: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        if length < batch_size * world_size:
            raise ValueError(
                f"{length} samples are fewer than one global batch ({batch_size} x {world_size})"
            )
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.length // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and skip its first ``start_batch`` batches (to resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        usable = self.batches_per_epoch * self.batch_size * self.world_size
        start = self.start_batch * self.batch_size
        mine = order[:usable][self.rank :: self.world_size]
        for position in range(start, len(mine)):
            global_position = position * self.world_size + self.rank
            yield mine[position], self.seed, self.epoch, global_position
