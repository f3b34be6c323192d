"""Make the README's before/after picture from the sample clip.

Colorizes `samples/clip_lineart.mp4` with the ``lineart`` model and `samples/clip_gray.mp4`
with the ``gray`` model, exactly as `celpaint colorize` does by default, and lays out a few
frames as rows of: line art | colorized from line art | grayscale | colorized from grayscale |
ground truth.

    python scripts/make_before_after.py -o docs/before_after.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from celpaint.io.video import VideoReader

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
LABELS = ["line art", "lineart model", "grayscale", "gray model", "ground truth"]


def read_frames(clip: Path, indices: list[int]) -> list[np.ndarray]:
    """Frames ``indices`` of ``clip`` as uint8 BGR (for OpenCV's drawing and PNG writing)."""
    wanted = {}
    for index, frame in enumerate(VideoReader(clip)):
        if index in indices:
            wanted[index] = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    missing = sorted(set(indices) - set(wanted))
    if missing:
        raise SystemExit(f"{clip} has no frame {missing[0]}")
    return [wanted[i] for i in indices]


def label(image: np.ndarray, text: str) -> np.ndarray:
    band = np.full((22, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "before_after.png")
    parser.add_argument("--frames", default="10,50,90", help="frame indices, comma-separated")
    parser.add_argument("--lineart-model", default="lineart")
    parser.add_argument("--gray-model", default="gray")
    args = parser.parse_args(argv)
    indices = [int(v) for v in args.frames.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        for kind, model in (("lineart", args.lineart_model), ("gray", args.gray_model)):
            outputs[kind] = Path(tmp) / f"{kind}.mp4"
            command = [sys.executable, "-m", "celpaint", "colorize",
                       str(SAMPLES / f"clip_{kind}.mp4"), "-o", str(outputs[kind]),
                       "--model", model, "--lossless", "--quiet"]  # fmt: skip
            subprocess.run(command, check=True)
        columns = [
            read_frames(SAMPLES / "clip_lineart.mp4", indices),
            read_frames(outputs["lineart"], indices),
            read_frames(SAMPLES / "clip_gray.mp4", indices),
            read_frames(outputs["gray"], indices),
            read_frames(SAMPLES / "clip_color.mp4", indices),
        ]
    gap = 4
    rows = []
    for row in range(len(indices)):
        cells = []
        for column, frames in enumerate(columns):
            # Only the first row carries the column names.
            cell = frames[row] if row else label(frames[row], LABELS[column])
            cells.append(cell)
            cells.append(np.full((cell.shape[0], gap, 3), 255, np.uint8))
        rows.append(np.concatenate(cells[:-1], axis=1))
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    picture = np.concatenate(rows[:-1], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"could not write {args.out}")
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
