"""Export a trained generator as a shipped model, with its chroma scale calibrated.

Copies ``RUN/generator`` into ``celpaint/models/weights/NAME/`` in the checkpoint format with
half-precision storage (it loads back as float32), records what it was trained on, and, with
``--calibrate DIR``, picks the model's ``chroma_scale``, the factor on the predicted a*b*, on
the held-out pairs in ``DIR`` (``DIR/sketch``, ``DIR/color``):

* the scale with the lowest mean CIEDE2000 among those whose output keeps a colorfulness
  (Hasler & Suesstrunk) of at least ``--min-colorfulness`` (0.6) times the truth's, mean over
  mean. CIEDE2000 alone rewards gray: a model that cannot tell an object's color scores best
  when it paints almost none, which is not what a colorizer is for;
* for grayscale (a*b*) models also: the mean CIEDE2000 must not exceed the gray input's. When
  no scale meets both, the CIEDE2000 bound wins (the most colorful scale within it) and the
  script says so; a line-art model with no scale colorful enough takes the most colorful.

    python scripts/export_model.py runs/lineart --name lineart \\
        --calibrate /data/val_lineart --trained-on "openclipart-png composites, 4900 pairs"

Prints the mean CIEDE2000 and colorfulness for every scale tried and writes the chosen one
into config.json. ``--scale-only`` calibrates an exported model (``RUN`` a shipped name or a
checkpoint) and changes nothing in ``OUT/config.json`` but its ``chroma_scale``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from celpaint.color.array import to_gray
from celpaint.io.frames import list_images, read_image
from celpaint.models import zoo
from celpaint.models.checkpoint import CONFIG_NAME, ModelConfig, load_model, save_model
from celpaint.ops.metrics import ciede2000, colorfulness
from celpaint.pipeline.colorizer import Colorizer

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "celpaint" / "models" / "weights"
# ModelConfig takes chroma scales of 0..2: steps of 0.05 up to 1, where the choice usually
# falls, then of 0.2.
SCALES = (*(round(0.05 * i, 2) for i in range(21)), 1.2, 1.4, 1.6, 1.8, 2.0)
MIN_COLORFULNESS = 0.6


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


@dataclasses.dataclass
class Calibration:
    """Mean scores over the calibration pairs.

    Attributes:
        errors: mean CIEDE2000 of the output for each chroma scale.
        colorfulness: mean colorfulness of the output for each chroma scale.
        truth_colorfulness: mean colorfulness of the true colors.
        input_error: mean CIEDE2000 of the input itself (for a gray input: a*b* = 0).
    """

    errors: dict[float, float]
    colorfulness: dict[float, float]
    truth_colorfulness: float
    input_error: float

    def ratio(self, scale: float) -> float:
        """The output's colorfulness at ``scale`` over the truth's."""
        truth = self.truth_colorfulness
        return self.colorfulness[scale] / truth if truth > 0 else math.nan


def calibrate(model, config: ModelConfig, pairs, scales=SCALES) -> Calibration:
    """Score every chroma scale on ``pairs``, each frame colorized as ``Colorizer.colorize``
    does on the CPU (``config.chroma_scale`` is what is being chosen, and is ignored).

    The generator runs once per pair at scale 1; its a*b* are then multiplied by each scale
    (what ``predict_work_lab`` does with ``chroma_scale``) and rendered.
    """
    unscaled = Colorizer(model, dataclasses.replace(config, chroma_scale=1.0), device="cpu")
    stream = unscaled.stream()
    errors: dict[float, list[float]] = {scale: [] for scale in scales}
    colors: dict[float, list[float]] = {scale: [] for scale in scales}
    truth_colors, input_errors = [], []
    for source, truth in pairs:
        frames, grays, lab = stream.predict(source[None])
        for scale in scales:
            scaled = lab.copy()
            scaled[..., 1:] *= np.float32(scale)
            output = stream.finish((frames, grays, scaled))[0]
            errors[scale].append(ciede2000(output, truth))
            colors[scale].append(colorfulness(output))
        truth_colors.append(colorfulness(truth))
        input_errors.append(ciede2000(source, truth))
    return Calibration(
        errors={scale: float(np.mean(values)) for scale, values in errors.items()},
        colorfulness={scale: float(np.mean(values)) for scale, values in colors.items()},
        truth_colorfulness=float(np.mean(truth_colors)),
        input_error=float(np.mean(input_errors)),
    )


def choose_scale(
    calibration: Calibration,
    min_colorfulness: float = MIN_COLORFULNESS,
    max_error: float = math.inf,
) -> tuple[float, str]:
    """The scale with the lowest error among those at least ``min_colorfulness`` times as
    colorful as the truth and with an error of at most ``max_error``.

    Returns:
        ``(scale, note)``: the note says which rule chose it. Where no scale meets both bounds,
        the error bound wins: the most colorful scale within it (the lowest error if none is).
    """
    errors = calibration.errors
    within = [scale for scale in errors if errors[scale] <= max_error]
    both = [scale for scale in within if calibration.ratio(scale) >= min_colorfulness]
    if both:
        scale = min(both, key=errors.__getitem__)
        return scale, f"lowest dE2000 among scales with colorfulness >= {min_colorfulness} x truth"
    if within:
        scale = max(within, key=calibration.colorfulness.__getitem__)
        return scale, (
            f"no scale reaches colorfulness {min_colorfulness} x truth within dE2000 "
            f"{max_error:.3f}: the most colorful within it"
        )
    scale = min(errors, key=errors.__getitem__)
    return scale, f"no scale has dE2000 within {max_error:.3f}: the lowest dE2000"


def write_scale(directory: Path, scale: float) -> None:
    """Set ``chroma_scale`` in ``directory/config.json``, leaving everything else as it is."""
    path = directory / CONFIG_NAME
    data = json.loads(path.read_text())
    data["chroma_scale"] = scale
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="training run directory (or checkpoint directory)")
    parser.add_argument("--name", required=True, help="shipped model name (lineart, gray)")
    parser.add_argument("--out", type=Path, help="default: celpaint/models/weights/NAME")
    parser.add_argument("--trained-on", default="", help="training data, for config.json")
    parser.add_argument("--work-size", type=int, help="working long side to record")
    parser.add_argument("--calibrate", type=Path, help="held-out pairs folder")
    parser.add_argument("--limit", type=int, default=100, help="pairs used to calibrate")
    parser.add_argument("--scales", help="comma-separated chroma scales to try (default: 0..2)")
    parser.add_argument(
        "--min-colorfulness", type=float, default=MIN_COLORFULNESS,
        help="least colorfulness of the output, as a share of the truth's",
    )  # fmt: skip
    parser.add_argument(
        "--scale-only", action="store_true",
        help="only write the calibrated chroma_scale into OUT/config.json (weights untouched)",
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
    out = args.out or WEIGHTS / args.name
    if args.scale_only and not args.calibrate:
        parser.error("--scale-only needs --calibrate")
    if args.calibrate:
        gray = config.input_kind == "grayscale"
        pairs = load_pairs(args.calibrate, "grayscale" if gray else "lineart", args.limit)
        scales = tuple(float(v) for v in args.scales.split(",")) if args.scales else SCALES
        calibration = calibrate(model, config, pairs, scales)
        print(
            f"truth: colorfulness {calibration.truth_colorfulness:.2f}; input itself: mean "
            f"dE2000 {calibration.input_error:.3f}"
        )
        for scale, error in calibration.errors.items():
            print(
                f"chroma_scale {scale:.2f}: mean dE2000 {error:.3f}, colorfulness "
                f"{calibration.colorfulness[scale]:.2f} ({calibration.ratio(scale):.3f} x truth)"
            )
        # A gray model must not do worse than leaving the frame gray.
        max_error = calibration.input_error if gray else math.inf
        config.chroma_scale, rule = choose_scale(calibration, args.min_colorfulness, max_error)
        report["calibration"] = {
            "data": str(args.calibrate),
            "pairs": len(pairs),
            "rule": rule,
            "chroma_scale": config.chroma_scale,
            "truth_colorfulness": calibration.truth_colorfulness,
            "input_ciede2000": calibration.input_error,
            "mean_ciede2000": {str(k): v for k, v in calibration.errors.items()},
            "colorfulness_ratio": {str(k): calibration.ratio(k) for k in calibration.errors},
        }
        print(f"chose chroma_scale {config.chroma_scale}: {rule}")
    if args.scale_only:
        write_scale(out, config.chroma_scale)
        print(f"wrote chroma_scale {config.chroma_scale} into {out / CONFIG_NAME}")
        print(json.dumps(report))
        return
    save_model(model, out, config, half=True)
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
