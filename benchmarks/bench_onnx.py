"""The ONNX Runtime backend against the PyTorch backend on the CPU (a benchmark, not a test).

For each case (a model and a clip) it measures, with both backends built once beforehand (the
ONNX export happens then, into the cache, and is not timed):
  * end-to-end frames/s of ``celpaint.colorize`` on the clip (decode -> generator -> smoothing
    and native size -> H.264 encode, audio on, default settings), and the ratio;
  * model-only frames/s: the generator alone on random batches at the padded work size, in the
    arrangement colorize uses (``generator_workers``: on 2 cores, two single-threaded passes
    on different batches at once);
  * how far apart the two backends' outputs are: CIEDE2000 per frame (mean over the frame;
    ``ops.metrics.ciede2000``) of the frames colorized in memory with smoothing, then the
    mean and the max over the frames (target: <= 0.1).

The cases: a generated line-art clip (``--size``, default 512x288, ``--frames``), the sample
clip ``samples/clip_lineart.mp4`` with the line-art model and ``samples/clip_gray.mp4`` with
the grayscale model. Repeats are interleaved (torch, onnxruntime, torch, ...) and medians
reported; the load average before and after is recorded, since other work on the machine
skews wall times.

    python benchmarks/bench_onnx.py [--frames 240] [--size 512x288] [--repeats 3]
        [--json benchmarks/results-onnx-cpu-2core.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from celpaint.io.media import find_ffmpeg
from celpaint.io.sinks import EncodeOptions
from celpaint.io.video import VideoReader
from celpaint.models.checkpoint import celpaint_version
from celpaint.ops.metrics import ciede2000
from celpaint.pipeline.api import colorize
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer, generator_workers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_colorize import Clock, _cpu_name, _load, make_clip  # noqa: E402
from bench_colorize import model_only_fps as generator_fps  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("torch", "onnxruntime")


def model_only_fps(colorizer: Colorizer, height: int, width: int, frames: int) -> float:
    """The generator alone on random batches at the padded work size, in colorize's
    arrangement of concurrent passes and threads (``bench_colorize.model_only_fps``)."""
    workers, threads = generator_workers(colorizer)
    return generator_fps(colorizer, width, height, frames, workers, threads)[0]


def end_to_end_fps(colorizer: Colorizer, clip: Path, out: Path, frames: int) -> float:
    with Clock() as clock:
        colorize([clip], out, colorizer, ColorizeOptions(), encode=EncodeOptions(overwrite=True))
    return frames / clock.wall


def colorized_frames(colorizer: Colorizer, clip: Path) -> np.ndarray:
    """The clip colorized in memory (smoothing on), uint8 RGB ``(T, H, W, 3)``."""
    with VideoReader(clip) as reader:
        frames = np.stack(list(reader))
    stream = colorizer.stream(ColorizeOptions())
    step = colorizer.batch_size
    return np.concatenate([stream(frames[s : s + step]) for s in range(0, len(frames), step)])


def difference(first: np.ndarray, second: np.ndarray) -> dict:
    """CIEDE2000 between two colorizations of a clip: per frame (mean over the frame), then
    the mean and max over frames; and the largest difference of any 8-bit channel value."""
    per_frame = [ciede2000(a, b) for a, b in zip(first, second, strict=True)]
    return {
        "delta_e2000_mean": round(float(np.mean(per_frame)), 4),
        "delta_e2000_max_frame": round(float(np.max(per_frame)), 4),
        "max_abs_8bit": int(np.abs(first.astype(int) - second.astype(int)).max()),
    }


def measure_case(name: str, model: str, clip: Path, repeats: int, scratch: Path) -> dict:
    colorizers = {b: Colorizer.from_pretrained(model, device="cpu", backend=b) for b in BACKENDS}
    with VideoReader(clip) as reader:
        info = reader.info
    frames = info.frame_count
    height, width = info.height, info.width
    end_to_end = {b: [] for b in BACKENDS}
    model_only = {b: [] for b in BACKENDS}
    for _ in range(repeats):
        for backend, colorizer in colorizers.items():
            out = scratch / f"{name}-{backend}.mp4"
            end_to_end[backend].append(end_to_end_fps(colorizer, clip, out, frames))
            model_only[backend].append(
                model_only_fps(colorizer, height, width, 8 * colorizer.batch_size)
            )
        print(name, {b: [round(v, 2) for v in end_to_end[b]] for b in BACKENDS}, flush=True)
    outputs = {b: colorized_frames(c, clip) for b, c in colorizers.items()}
    torch_fps = statistics.median(end_to_end["torch"])
    ort_fps = statistics.median(end_to_end["onnxruntime"])
    geometry = colorizers["torch"].geometry(height, width)
    return {
        "case": name,
        "model": model,
        "clip": f"{width}x{height}, {frames} frames",
        "network_input": f"{geometry.padded_width}x{geometry.padded_height}",
        "batch_size": colorizers["torch"].batch_size,
        "end_to_end_fps": {b: round(statistics.median(end_to_end[b]), 2) for b in BACKENDS},
        "end_to_end_ratio": round(ort_fps / torch_fps, 3),
        "end_to_end_fps_each_repeat": {b: [round(v, 2) for v in end_to_end[b]] for b in BACKENDS},
        "model_only_fps": {b: round(statistics.median(model_only[b]), 2) for b in BACKENDS},
        "model_only_ratio": round(
            statistics.median(model_only["onnxruntime"]) / statistics.median(model_only["torch"]),
            3,
        ),
        "outputs_torch_vs_onnxruntime": difference(outputs["torch"], outputs["onnxruntime"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240, help="frames of the generated clip")
    parser.add_argument("--size", default="512x288", help="WxH of the generated clip")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks/results-onnx-cpu-2core.json"
    )
    args = parser.parse_args()

    ffmpeg = find_ffmpeg()
    load_before = _load()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        generated = make_clip(scratch / "generated.mp4", ffmpeg, args.size, args.frames)
        cases = [
            (f"generated line art {args.size}", "lineart", generated),
            ("samples/clip_lineart.mp4", "lineart", ROOT / "samples/clip_lineart.mp4"),
            ("samples/clip_gray.mp4", "gray", ROOT / "samples/clip_gray.mp4"),
        ]
        for name, model, clip in cases:
            rows.append(measure_case(name, model, clip, args.repeats, scratch))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "celpaint": celpaint_version(),
            "load_average_before": load_before,
            "load_average_after": _load(),
            "minutes": round((time.time() - started) / 60, 1),
        },
        "repeats": args.repeats,
        "targets": {"end_to_end_ratio": 1.25, "delta_e2000_mean": 0.1},
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{row['case']:<32} end to end {row['end_to_end_fps']} x{row['end_to_end_ratio']}"
              f"  model only {row['model_only_fps']} x{row['model_only_ratio']}"
              f"  dE {row['outputs_torch_vs_onnxruntime']}")  # fmt: skip
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
