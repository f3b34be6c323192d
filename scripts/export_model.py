"""Export a trained generator as a shipped model, with its chroma scale calibrated.

Copies ``RUN/generator`` into ``celpaint/models/weights/NAME/`` in the checkpoint format with
half-precision storage (it loads back as float32), records what it was trained on, and, with
``--calibrate DIR``, picks the model's ``chroma_scale``: the most muted factor on the predicted
a*b* whose mean CIEDE2000 on the held-out pairs in ``DIR`` (``DIR/sketch``, ``DIR/color``) is
within ``--tolerance`` (1 %) of the lowest. A network trained with a pixel loss already
averages its colors; the scale corrects what is left of its over-confidence on data it has not
seen, because a wrong saturated color costs more than a muted one.

    python scripts/export_model.py runs/lineart --name lineart \\
        --calibrate /data/val_openclipart --trained-on "openclipart-png composites, 4900 pairs"

Prints the mean CIEDE2000 for every scale tried and writes the chosen one into config.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from celpaint.color.array import to_gray
from celpaint.io.frames import list_images, read_image
from celpaint.models import zoo
from celpaint.models.checkpoint import load_model, save_model
from celpaint.ops.metrics import ciede2000
from celpaint.pipeline.colorizer import Colorizer

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "celpaint" / "models" / "weights"
SCALES = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2)


def load_pairs(folder: Path, kind: str, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(input, truth)`` uint8 RGB pairs: line art or grayscale made from the truth."""
    files = list_images(folder / "color")
    step = max(1, len(files) // limit) if limit else 1
    pairs = []
    for path in files[::step][: limit or None]:
        truth = read_image(path)
        if kind == "lineart":
            source = read_image(folder / "sketch" / path.name)
        else:
            source = np.repeat(to_gray(truth)[..., None], 3, axis=2)
        pairs.append((source, truth))
    return pairs


def calibrate(colorizer: Colorizer, pairs, scales=SCALES) -> dict[float, float]:
    """Mean CIEDE2000 over ``pairs`` for each chroma scale, exactly as colorize renders it."""
    results = {}
    for scale in scales:
        colorizer.config.chroma_scale = scale
        errors = [ciede2000(colorizer.colorize(source[None])[0], truth) for source, truth in pairs]
        results[scale] = float(np.mean(errors))
    return results


def choose_scale(results: dict[float, float], tolerance: float) -> float:
    """The most muted scale whose error is within ``tolerance`` (a share) of the lowest.

    The calibration data is clip art like the training data; on art unlike it the network is
    wrong more often, and there a muted color costs less. So where a stronger color gains less
    than ``tolerance`` on the calibration data, the muted one is kept.
    """
    best = min(results.values())
    return min(scale for scale, error in results.items() if error <= best * (1 + tolerance))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="training run directory (or checkpoint directory)")
    parser.add_argument("--name", required=True, help="shipped model name (lineart, gray)")
    parser.add_argument("--out", type=Path, help="default: celpaint/models/weights/NAME")
    parser.add_argument("--trained-on", default="", help="training data, for config.json")
    parser.add_argument("--work-size", type=int, help="working long side to record")
    parser.add_argument("--calibrate", type=Path, help="held-out pairs folder")
    parser.add_argument("--limit", type=int, default=100, help="pairs used to calibrate")
    parser.add_argument(
        "--tolerance", type=float, default=0.01,
        help="take the most muted scale within this share of the lowest error",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    source = zoo.generator_directory(args.run)
    model, config = load_model(source)
    if args.trained_on:
        config.trained_on = args.trained_on
    if args.work_size:
        config.work_size = args.work_size
    report: dict = {"source": str(source)}
    if args.calibrate:
        colorizer = Colorizer(model, config, device="cpu")
        kind = "lineart" if config.input_kind == "lineart" else "grayscale"
        pairs = load_pairs(args.calibrate, kind, args.limit)
        results = calibrate(colorizer, pairs)
        for scale, error in results.items():
            print(f"chroma_scale {scale:.2f}: mean dE2000 {error:.3f}")
        config.chroma_scale = choose_scale(results, args.tolerance)
        report["calibration"] = {
            "data": str(args.calibrate),
            "pairs": len(pairs),
            "mean_ciede2000": {str(k): v for k, v in results.items()},
        }
        print(f"chose chroma_scale {config.chroma_scale}")
    out = args.out or WEIGHTS / args.name
    save_model(model, out, config, half=True)
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
