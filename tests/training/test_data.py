"""Paired training datasets: layouts, matching, sizes, crops, splits, bad input, the sampler."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from celpaint.color.array import to_gray
from celpaint.errors import InputError
from celpaint.io.frames import read_image, write_image
from celpaint.ops.lineart import xdog
from celpaint.training.data import (
    DataSpec,
    EpochSampler,
    Example,
    PairDataset,
    build_datasets,
    fit_to_work_size,
    load_pair,
    random_crop,
)
from tests.conftest import make_clip


def make_pairs(
    root: Path,
    count: int = 4,
    size: tuple[int, int] = (40, 32),
    names: list[str] | None = None,
    seed: int = 0,
) -> tuple[Path, Path]:
    """``root/sketch`` and ``root/color``: flat-colored discs on white and their outlines."""
    rng = np.random.default_rng(seed)
    sketch_dir, color_dir = root / "sketch", root / "color"
    sketch_dir.mkdir(parents=True, exist_ok=True)
    color_dir.mkdir(parents=True, exist_ok=True)
    width, height = size
    for index in range(count):
        rgb = np.full((height, width, 3), 255, np.uint8)
        lines = np.full((height, width), 255, np.uint8)
        for _ in range(2):
            fill = tuple(int(v) for v in rng.integers(0, 200, 3))
            center = (int(rng.integers(6, width - 6)), int(rng.integers(6, height - 6)))
            radius = int(rng.integers(4, max(5, min(width, height) // 3)))
            cv2.circle(rgb, center, radius, fill, -1)
            cv2.circle(lines, center, radius, 0, 1)
        name = names[index] if names else f"frame{index + 1}"
        write_image(color_dir / f"{name}.png", rgb)
        write_image(sketch_dir / f"{name}.png", lines)
    return sketch_dir, color_dir


def test_folder_pairs_match_by_name_and_give_uint8_crops(tmp_path):
    sketch, color = make_pairs(tmp_path, count=4)
    spec = DataSpec(sketch=sketch, color=color, val_fraction=0.25)
    train, val, report = build_datasets(spec, True, crop=16, work_size=None)
    assert (report.train_count, report.val_count, len(train), len(val)) == (3, 1, 3, 1)
    # Validation is held out from the end, in order.
    assert val.name(0) == "frame4"
    sample = train[0]
    assert sample["rgb"].dtype == torch.uint8 and sample["rgb"].shape == (3, 16, 16)
    assert sample["line_art"].dtype == torch.uint8 and sample["line_art"].shape == (1, 16, 16)
    # Whole frames for validation.
    assert val[0]["rgb"].shape == (3, 32, 40)


def test_crop_takes_the_same_window_of_line_art_and_color(tmp_path):
    _, color = make_pairs(tmp_path, count=1, size=(64, 48))
    rgb = read_image(next(color.iterdir()))
    gray = to_gray(rgb)
    rng = np.random.default_rng(3)
    for _ in range(20):
        rgb_crop, gray_crop = random_crop([rgb, gray], 24, rng)
        assert rgb_crop.shape == (24, 24, 3) and gray_crop.shape == (24, 24)
        np.testing.assert_array_equal(to_gray(rgb_crop), gray_crop)


def test_crops_flip_sometimes_and_pad_small_frames_by_mirroring():
    image = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5)
    rng = np.random.default_rng(0)
    windows = [image[:5], image[1:]]
    plain = flipped = 0
    for _ in range(30):
        (crop,) = random_crop([image], 5, rng)
        plain += any(np.array_equal(crop, w) for w in windows)
        flipped += any(np.array_equal(crop, w[:, ::-1]) for w in windows)
    assert plain + flipped == 30 and plain > 0 and flipped > 0
    (padded,) = random_crop([image], 9, rng, flip=False)
    assert padded.shape == (9, 9)
    # Mirrored padding repeats real pixels: no value outside the image appears.
    assert set(np.unique(padded)) <= set(np.unique(image))
    tiny = np.full((1, 1, 3), 7, np.uint8)
    assert random_crop([tiny], 4, rng)[0].shape == (4, 4, 3)


def test_frames_are_scaled_to_the_work_size_like_the_colorizer():
    image = np.zeros((300, 1000, 3), np.uint8)
    assert fit_to_work_size(image, 500).shape == (150, 500, 3)
    assert fit_to_work_size(image, 2000).shape == (300, 1000, 3)
    assert fit_to_work_size(image, None) is image


def test_unmatched_names_are_listed(tmp_path):
    sketch, color = make_pairs(tmp_path, count=3)
    (sketch / "frame2.png").rename(sketch / "other.png")
    with pytest.raises(InputError) as caught:
        build_datasets(DataSpec(sketch=sketch, color=color, val_fraction=0), True, 16, None)
    message = str(caught.value)
    assert "frame2.png" in message and "other.png" in message and "--match order" in message


def test_match_order_pairs_by_position(tmp_path):
    sketch, color = make_pairs(tmp_path, count=3)
    for index, path in enumerate(sorted(sketch.iterdir())):
        path.rename(sketch / f"lines_{index:02d}.png")
    spec = DataSpec(sketch=sketch, color=color, match="order", val_fraction=0)
    train, _, _ = build_datasets(spec, True, 16, None)
    assert [e.sketch.name for e in train.examples] == [
        "lines_00.png",
        "lines_01.png",
        "lines_02.png",
    ]
    (sketch / "lines_02.png").unlink()
    with pytest.raises(InputError, match="counts must be equal"):
        build_datasets(spec, True, 16, None)


def test_pairs_of_different_sizes_are_refused(tmp_path):
    sketch, color = make_pairs(tmp_path, count=2)
    write_image(sketch / "frame2.png", np.full((20, 20), 255, np.uint8))
    with pytest.raises(InputError, match="frame2.png is 20x20 but its color frame"):
        build_datasets(DataSpec(sketch=sketch, color=color, val_fraction=0), True, 16, None)


def test_unreadable_images_are_skipped_and_counted_or_stop(tmp_path):
    sketch, color = make_pairs(tmp_path, count=4)
    (color / "frame3.png").write_bytes(b"not a png")
    spec = DataSpec(sketch=sketch, color=color, val_fraction=0)
    train, _, report = build_datasets(spec, True, 16, None)
    assert report.skipped == ["frame3"] and len(train) == 3
    spec.on_error = "stop"
    with pytest.raises(InputError, match="frame3.png.*--on-error skip"):
        build_datasets(spec, True, 16, None)


def test_fewer_pairs_than_one_batch_is_an_error(tmp_path):
    sketch, color = make_pairs(tmp_path, count=3)
    spec = DataSpec(sketch=sketch, color=color, val_fraction=0.3)
    with pytest.raises(InputError, match="only 2 training pairs.*fewer than one batch"):
        build_datasets(spec, True, 16, None, min_train=3)


def test_aligned_images_are_split_in_halves(tmp_path):
    folder = tmp_path / "aligned"
    folder.mkdir()
    left = np.full((10, 12, 3), 30, np.uint8)
    right = np.full((10, 12, 3), 200, np.uint8)
    right[:, :, 0] = 250
    write_image(folder / "a.png", np.concatenate([left, right], axis=1))
    line_art, rgb = load_pair(Example("a", folder / "a.png", aligned=True), True, None)
    np.testing.assert_array_equal(rgb, right)
    np.testing.assert_array_equal(line_art, np.full((10, 12), 30, np.uint8))
    line_art, rgb = load_pair(
        Example("a", folder / "a.png", aligned=True), True, None, "color-sketch"
    )
    np.testing.assert_array_equal(rgb, left)
    write_image(folder / "b.png", np.zeros((10, 25, 3), np.uint8))
    with pytest.raises(InputError, match="25 pixels wide"):
        build_datasets(DataSpec(aligned=folder, val_fraction=0), True, 8, None)


def test_color_only_folder_uses_the_lineart_extractor(tmp_path):
    _, color = make_pairs(tmp_path, count=2, size=(48, 40))
    train, _, _ = build_datasets(DataSpec(color=color, val_fraction=0), True, 16, None)
    line_art, rgb = train.pair(0)
    frame = read_image(color / "frame1.png")
    # The pair is the frame itself and its line art, drawn by the shipped extractor.
    np.testing.assert_array_equal(rgb, frame)
    np.testing.assert_array_equal(line_art, xdog(frame))


def test_lab_model_needs_no_line_art_and_refuses_sketches(tmp_path):
    sketch, color = make_pairs(tmp_path, count=2)
    train, _, _ = build_datasets(DataSpec(color=color, val_fraction=0), False, 16, None)
    assert set(train[0]) == {"rgb"}
    with pytest.raises(InputError, match="--model lab takes L"):
        build_datasets(DataSpec(sketch=sketch, color=color), False, 16, None)


def test_color_clip_is_read_frame_by_frame(tmp_path, ffmpeg):
    clip = make_clip(tmp_path / "clip.mp4", ffmpeg, frames=6, size=(64, 48), audio=False)
    spec = DataSpec(color=clip, val_fraction=0, frame_step=2)
    train, _, report = build_datasets(spec, True, 32, work_size=32)
    assert report.train_count == 3
    line_art, rgb = train.pair(0)
    assert rgb.shape == (24, 32, 3) and line_art.shape == (24, 32)
    assert [e.name for e in train.examples] == ["frame_000001", "frame_000003", "frame_000005"]


def test_separate_validation_folder(tmp_path):
    sketch, color = make_pairs(tmp_path / "train", count=3)
    val_sketch, val_color = make_pairs(tmp_path / "val", count=2, seed=1)
    spec = DataSpec(sketch=sketch, color=color, val=val_color, val_sketch=val_sketch)
    train, val, report = build_datasets(spec, True, 16, None)
    assert (len(train), len(val)) == (3, 2)
    spec.val_sketch = None
    with pytest.raises(InputError, match="--val-sketch"):
        build_datasets(spec, True, 16, None)


def test_contradictory_layouts_are_refused(tmp_path):
    sketch, color = make_pairs(tmp_path, count=2)
    with pytest.raises(InputError, match="one of them"):
        build_datasets(DataSpec(aligned=color, color=color), True, 16, None)
    with pytest.raises(InputError, match="no training data"):
        build_datasets(DataSpec(), True, 16, None)
    with pytest.raises(InputError, match="does not exist"):
        build_datasets(DataSpec(sketch=tmp_path / "nope", color=color), True, 16, None)


def test_samples_are_a_function_of_seed_epoch_and_position(tmp_path):
    sketch, color = make_pairs(tmp_path, count=2, size=(64, 48))
    train, _, _ = build_datasets(
        DataSpec(sketch=sketch, color=color, val_fraction=0), True, 16, None
    )
    a = train[(0, 5, 1, 3)]
    b = train[(0, 5, 1, 3)]
    c = train[(0, 5, 2, 3)]
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["line_art"], b["line_art"])
    assert not torch.equal(a["rgb"], c["rgb"])


def test_epoch_sampler_partitions_and_resumes():
    sampler = EpochSampler(10, batch_size=2, seed=1, rank=0, world_size=2)
    other = EpochSampler(10, batch_size=2, seed=1, rank=1, world_size=2)
    assert sampler.batches_per_epoch == 2
    sampler.set_epoch(3)
    other.set_epoch(3)
    mine, theirs = list(sampler), list(other)
    assert len(mine) == len(theirs) == 4
    assert not {k[0] for k in mine} & {k[0] for k in theirs}
    assert list(sampler) == mine  # same epoch, same order
    sampler.set_epoch(4)
    assert list(sampler) != mine
    sampler.set_epoch(3, start_batch=1)
    assert list(sampler) == mine[2:]
    assert len(sampler) == 2
    with pytest.raises(ValueError):
        EpochSampler(3, batch_size=2, world_size=2)


def test_uncached_dataset_decodes_on_demand(tmp_path):
    sketch, color = make_pairs(tmp_path, count=2)
    spec = DataSpec(sketch=sketch, color=color, val_fraction=0, cache=False)
    train, _, _ = build_datasets(spec, True, 16, None)
    assert all(e.pair is None for e in train.examples)
    assert train[0]["rgb"].shape == (3, 16, 16)
    assert isinstance(train, PairDataset)
