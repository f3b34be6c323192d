"""Measure the model card's numbers: each model and its baselines, scored by `celpaint evaluate`.

For every evaluation set the script makes the model's input, colorizes it with
`celpaint colorize`, builds the baselines the model card compares against and scores all of
them against the true colors with `celpaint evaluate`:

* ``lineart`` model: input = the set's line art; baselines = the line art itself as the output,
  and a flat fill of the mean color of the training frames;
* ``gray`` model: input = the set's grayscale (BT.601 luma, as `samples/clip_gray.mp4`);
  baseline = that grayscale itself (a*b* = 0).

Sets: a folder of pairs (``NAME=DIR`` with ``DIR/sketch`` and ``DIR/color``), and the sample
clip (``samples/clip_{lineart,gray,color}.mp4``). Frames of a folder set are unrelated
pictures, so they are colorized without temporal smoothing; the sample clip is colorized the
way `celpaint colorize` does it by default.

    python scripts/evaluate_models.py --set openclipart=/data/val_openclipart \\
        --set games=/data/val_games --train-color /data/train_lineart/color \\
        --json docs/model_card.json

Everything is written under ``--work`` (a temporary folder by default); the JSON holds the
mean PSNR, SSIM, CIEDE2000, pixel accuracy and colorfulness (the output's, the truth's and
their ratio: CIEDE2000 alone rewards gray output) of every (model, set, method), and for the
model on the sample clip the temporal warping errors on RGB and on a*b*, its own and the
truth's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from celpaint.color.array import to_gray
from celpaint.io.frames import image_size, list_images, read_image, write_image
from celpaint.io.media import probe

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def celpaint(*args: str) -> None:
    command = [sys.executable, "-m", "celpaint", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr}")


def evaluate(
    prediction: Path, truth: Path, json_path: Path, source: Path | None = None
) -> dict[str, float]:
    """`celpaint evaluate`'s means; with ``source`` (the colorized clip) also the warping
    errors ``warping_error[_ab][_truth]``."""
    extra = ["--input", str(source)] if source is not None else []
    celpaint("evaluate", str(prediction), str(truth), "--json", str(json_path), "--quiet", *extra)
    data = json.loads(json_path.read_text())
    scores = data["mean"]
    for key in ("warping_error", "warping_error_ab") if source is not None else ():
        scores[key] = data[key]["prediction"]
        scores[f"{key}_truth"] = data[key]["ground_truth"]
    return scores


def mean_color(folder: Path, limit: int = 1000) -> list[int]:
    """Mean sRGB color of evenly spaced training frames (every ``len // limit``-th, so between
    ``limit`` and ``2 * limit - 1`` of them), 0-255."""
    files = list_images(folder)
    files = files[:: max(1, len(files) // limit)]
    total = sum(read_image(path).reshape(-1, 3).mean(axis=0) for path in files)
    return [int(round(v)) for v in total / len(files)]


def write_gray_folder(color: Path, out: Path) -> None:
    """BT.601 luma of every frame of ``color``, as `samples/clip_gray.mp4` was made."""
    out.mkdir(parents=True, exist_ok=True)
    for path in list_images(color):
        write_image(out / f"{path.stem}.png", to_gray(read_image(path)))


def write_flat_folder(truth: Path, out: Path, rgb: list[int]) -> None:
    """One frame of flat color ``rgb`` per frame of ``truth`` (a folder or a clip), same size."""
    out.mkdir(parents=True, exist_ok=True)
    if truth.is_dir():
        sizes = [(p.stem, image_size(p)) for p in list_images(truth)]
    else:
        info = probe(truth)
        sizes = [(f"{i:04d}", (info.width, info.height)) for i in range(info.frame_count)]
    for stem, (width, height) in sizes:
        flat = np.empty((height, width, 3), np.uint8)
        flat[:] = rgb
        write_image(out / f"{stem}.png", flat)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=DIR",
                        help="folder with sketch/ and color/ (repeatable)")  # fmt: skip
    parser.add_argument("--train-color", type=Path, help="training color frames (flat baseline)")
    parser.add_argument("--mean-color", help="R,G,B of the flat baseline instead of computing it")
    parser.add_argument("--models", default="lineart,gray")
    parser.add_argument("--lineart-model", default="lineart", help="name or checkpoint")
    parser.add_argument("--gray-model", default="gray", help="name or checkpoint")
    parser.add_argument("--no-sample", action="store_true", help="skip the sample clip")
    parser.add_argument("--work", type=Path, help="keep intermediate outputs here")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    if args.mean_color:
        flat_rgb = [int(v) for v in args.mean_color.split(",")]
    elif args.train_color:
        flat_rgb = mean_color(args.train_color)
    else:
        flat_rgb = None
    work = args.work or Path(tempfile.mkdtemp(prefix="celpaint-card-"))
    work.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    results: dict = {"flat_color_rgb": flat_rgb, "models": {}}
    sets = [tuple(item.split("=", 1)) for item in args.set]

    for model in models:
        checkpoint = args.lineart_model if model == "lineart" else args.gray_model
        model_results: dict = {"checkpoint": checkpoint}
        results["models"][model] = model_results
        cases: list[tuple[str, Path, Path, bool]] = []  # name, input, truth, is_clip
        for name, folder in sets:
            folder = Path(folder)
            if model == "lineart":
                source = folder / "sketch"
            else:
                source = work / name / "gray"
                if not source.exists():
                    write_gray_folder(folder / "color", source)
            cases.append((name, source, folder / "color", False))
        if not args.no_sample:
            kind = "lineart" if model == "lineart" else "gray"
            cases.append(("sample", SAMPLES / f"clip_{kind}.mp4", SAMPLES / "clip_color.mp4", True))
        for name, source, truth, is_clip in cases:
            out_dir = work / name / model
            out_dir.mkdir(parents=True, exist_ok=True)
            output = out_dir / ("colorized.mp4" if is_clip else "colorized")
            command = ["colorize", str(source), "-o", str(output), "--model", checkpoint]
            command += ["--overwrite", "--quiet"]
            # Still frames are scored one by one: no smoothing across unrelated frames.
            command += ["--lossless"] if is_clip else ["--no-temporal"]
            started = time.perf_counter()
            celpaint(*command)
            seconds = time.perf_counter() - started
            # In the clip, the temporal stability too.
            scores = {
                "model": evaluate(
                    output, truth, out_dir / "model.json", source if is_clip else None
                )
            }
            scores["input"] = evaluate(source, truth, out_dir / "input.json")
            if model == "lineart" and flat_rgb is not None:
                flat = out_dir / "flat"
                write_flat_folder(truth, flat, flat_rgb)
                scores["flat"] = evaluate(flat, truth, out_dir / "flat.json")
            scores["colorize_seconds"] = round(seconds, 1)
            model_results[name] = scores
            print(f"{model:8s} {name:12s} " + "  ".join(
                f"{method}: dE {values['ciede2000']:.2f} PSNR {values['psnr']:.2f} "
                f"SSIM {values['ssim']:.3f} colorfulness x{values['colorfulness_ratio'] or 0:.2f}"
                for method, values in scores.items() if isinstance(values, dict)
            ), flush=True)  # fmt: skip

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
