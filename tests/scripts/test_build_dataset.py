"""scripts/build_dataset.py on a tiny generated folder of clip-art-like images."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from celpaint.io.frames import read_image
from celpaint.ops.lineart import xdog
from tests.helpers import load_script


@pytest.fixture(scope="module")
def build_dataset():
    yield load_script("build_dataset")
    sys.modules.pop("build_dataset", None)


def write_rgba(path: Path, rgba: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))


def clip_art(kind: int, size: int = 120) -> np.ndarray:
    """A flat-colored, outlined shape on a transparent page."""
    rgba = np.zeros((size, size, 4), np.uint8)
    color = [(220, 60, 50), (60, 150, 70), (240, 200, 40), (70, 90, 200), (200, 120, 200)][kind]
    c = size // 2
    if kind % 2 == 0:
        cv2.circle(rgba, (c, c), c - 10, (*color, 255), -1, cv2.LINE_AA)
        cv2.circle(rgba, (c, c), c - 10, (20, 20, 20, 255), 3, cv2.LINE_AA)
    else:
        cv2.rectangle(rgba, (12, 20), (size - 12, size - 15), (*color, 255), -1)
        cv2.rectangle(rgba, (12, 20), (size - 12, size - 15), (20, 20, 20, 255), 3)
    cv2.circle(rgba, (c - 12, c - 8), 6, (255, 255, 255, 255), -1)
    return rgba


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clipart")
    for index in range(5):
        write_rgba(root / "animals" / f"shape_{index}.png", clip_art(index))
    # An opaque drawing on a white page: the page must be cut out, the drawing kept.
    page = np.full((150, 150, 4), 255, np.uint8)
    cv2.ellipse(page, (75, 75), (50, 30), 0, 0, 360, (90, 60, 160, 255), -1)
    cv2.ellipse(page, (75, 75), (50, 30), 0, 0, 360, (0, 0, 0, 255), 2)
    write_rgba(root / "people" / "page.png", page)
    # Things the builder must skip.
    write_rgba(root / "tiny" / "icon.png", clip_art(0, size=24))
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (200, 200, 4), dtype=np.uint8)
    photo[:, :, 3] = 255
    photo[:, :, :3] = cv2.GaussianBlur(photo[:, :, :3], (0, 0), 1.5)
    write_rgba(root / "photos" / "noise.png", photo)
    gray = np.zeros((120, 120, 4), np.uint8)
    cv2.circle(gray, (60, 60), 45, (128, 128, 128, 255), -1)
    write_rgba(root / "gray" / "disc.png", gray)
    (root / "broken.png").write_bytes(b"not a png at all")
    (root / "link.png").symlink_to(root / "animals" / "shape_0.png")
    return root


def run(build_dataset, source: Path, out: Path, *extra: str) -> dict:
    argv = ["--source", str(source), "--out", str(out), "--count", "4", "--seed", "3", "--quiet"]
    assert build_dataset.main([*argv, *extra]) == 0
    return json.loads((out / "manifest.json").read_text())


def test_builds_pairs_with_manifest(build_dataset, source, tmp_path):
    manifest = run(build_dataset, source, tmp_path / "set", "--size", "96x64")
    for sub in ("color", "sketch"):
        names = sorted(p.name for p in (tmp_path / "set" / sub).iterdir())
        assert names == [f"00000{i}.png" for i in range(4)]
    color = read_image(tmp_path / "set" / "color" / "000002.png")
    sketch = cv2.imread(str(tmp_path / "set" / "sketch" / "000002.png"), cv2.IMREAD_UNCHANGED)
    assert color.shape == (64, 96, 3) and sketch.shape == (64, 96) and sketch.dtype == np.uint8
    # The sketch is the XDoG line art of the color frame, with the recorded parameters.
    np.testing.assert_array_equal(sketch, xdog(color, sigma=manifest["line_art"]["sigma"]))
    assert manifest["count"] == 4 and manifest["size"] == [96, 64] and manifest["seed"] == 3
    assert manifest["line_art"]["method"] == "xdog"
    used = {entry["path"] for entry in manifest["sources"]}
    assert used and used <= {f"animals/shape_{i}.png" for i in range(5)} | {"people/page.png"}
    for record in manifest["frames"].values():
        assert 2 <= len(record["objects"]) <= 6
    skipped = manifest["skipped"]
    assert skipped["tiny"] == 1 and skipped["unreadable"] == 1
    assert skipped["not cartoon"] == 1 and skipped["monochrome"] == 1
    assert "--count 4" in manifest["command"]


def test_same_seed_same_bytes_other_seed_differs(build_dataset, source, tmp_path):
    run(build_dataset, source, tmp_path / "a")
    run(build_dataset, source, tmp_path / "b")
    run(build_dataset, source, tmp_path / "c", "--seed", "4")
    for sub in ("color", "sketch"):
        for name in ("000000.png", "000003.png"):
            a = (tmp_path / "a" / sub / name).read_bytes()
            assert a == (tmp_path / "b" / sub / name).read_bytes()
    assert (tmp_path / "a" / "color" / "000000.png").read_bytes() != (
        tmp_path / "c" / "color" / "000000.png"
    ).read_bytes()


def test_white_page_is_cut_out(build_dataset, source):
    asset = build_dataset.analyse(source, "people/page.png")
    assert isinstance(asset, build_dataset.Asset) and asset.kind == "object" and asset.white_page
    rgba, white_page = build_dataset.prepare_rgba(build_dataset.load_rgba(source / asset.path))
    assert white_page and rgba[0, 0, 3] == 0 and rgba[75, 75, 3] == 255


def test_exclude_list_and_split_keep_sets_apart(build_dataset, source, tmp_path):
    excluded = tmp_path / "exclude.txt"
    excluded.write_text("# samples art\nanimals/shape_0.png\nanimals/shape_1.png\n")
    args = ["--exclude-list", str(excluded), "--val-fraction", "0.5"]
    train = run(build_dataset, source, tmp_path / "train", *args, "--split", "train")
    val = run(build_dataset, source, tmp_path / "val", *args, "--split", "val")
    train_sources = {e["path"] for e in train["sources"]}
    val_sources = {e["path"] for e in val["sources"]}
    assert not train_sources & val_sources
    assert not (train_sources | val_sources) & {"animals/shape_0.png", "animals/shape_1.png"}
    assert train["evaluation_only"] is False and val["evaluation_only"] is True
    # A manifest works as an exclude list too: nothing of the train set is left to use.
    with pytest.raises(SystemExit):
        run(
            build_dataset, source, tmp_path / "none",
            "--exclude-list", str(tmp_path / "train" / "manifest.json"),
            "--exclude-list", str(tmp_path / "val" / "manifest.json"),
            "--exclude-list", str(excluded),
        )  # fmt: skip


def test_refuses_existing_output_without_overwrite(build_dataset, source, tmp_path):
    run(build_dataset, source, tmp_path / "set")
    with pytest.raises(SystemExit, match="--overwrite"):
        run(build_dataset, source, tmp_path / "set")
    run(build_dataset, source, tmp_path / "set", "--overwrite")
