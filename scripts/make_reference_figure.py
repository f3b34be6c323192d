#!/usr/bin/env python
"""Make docs/reference.png: keyframe | line art of a later frame | celpaint's result | truth.

The sample clip's true frame 1 is the keyframe; the later frame is colored from it with
``colorize(..., references=...)`` and the shipped ``lineart`` model (grayscale row: ``gray``).

    python scripts/make_reference_figure.py [--frame 60] [--out docs/reference.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.sources import open_source
from celpaint.pipeline.api import colorize
from celpaint.pipeline.colorizer import Colorizer

ROOT = Path(__file__).resolve().parent.parent


def frames(path: Path) -> list[np.ndarray]:
    with open_source(path) as source:
        return list(source.frames())


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", type=int, default=60, help="1-based frame to show")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reference.png")
    args = parser.parse_args()
    truth = frames(ROOT / "samples" / "clip_color.mp4")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        key = Path(scratch) / "frame_000001.png"
        write_image(key, truth[0])
        for clip, model in (("clip_lineart.mp4", "lineart"), ("clip_gray.mp4", "gray")):
            out = Path(scratch) / model
            colorizer = Colorizer.from_pretrained(model, device="cpu")
            colorize([ROOT / "samples" / clip], out, colorizer, references=[key])
            result = read_image(list_images(out)[args.frame - 1])
            source = frames(ROOT / "samples" / clip)[args.frame - 1]
            rows.append(
                np.concatenate(
                    [
                        label(truth[0], "keyframe (frame 1)"),
                        label(source, f"input, frame {args.frame}"),
                        label(result, f"celpaint --reference ({model})"),
                        label(truth[args.frame - 1], "truth"),
                    ],
                    axis=1,
                )
            )
    write_image(args.out, np.concatenate(rows, axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
