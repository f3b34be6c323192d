"""16:9 frames at their own shape instead of padded (issue 14; a benchmark, not a test).

At work size 512 a 16:9 frame is 512x288 for the network. A U-Net of depth 7 used to need
multiples of 128, so the frame was padded to 512x384: a quarter of the generator's work was
padding. The U-Net now takes any size (it pads its deep, small levels by one row or column
where they are odd), and a model trained with ``celpaint train --size-multiple 16`` has seen
those borders. This script measures, for one model, in one run:

  1. model-only time per 16:9 frame at the work size: the generator's forward on a batch
     padded to ``2 ** depth`` (the old way) and at the frames' own shape rounded to the
     model's ``size_multiple``, interleaved, median of ``--repeats``; target >= 1.25x;
  2. quality both ways: mean CIEDE2000 and colorfulness ratio of the model's colors on 16:9
     pairs (``--pairs DIR`` with ``sketch/`` and ``color/``, e.g. held-out frames from
     ``scripts/build_dataset.py --split val --size 512x288``) and on the sample clip (each
     frame on its own, no smoothing); target: ΔE no worse than 0.1 unpadded.

    python benchmarks/bench_unpadded.py [--model lineart|gray|DIR] --pairs data/val_16x9 \\
        [--repeats 5] [--json benchmarks/results-unpadded-cpu-2core.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from celpaint.color.array import to_gray
from celpaint.device import usable_cores
from celpaint.io.frames import list_images, read_image
from celpaint.io.media import find_ffmpeg
from celpaint.io.sources import open_source
from celpaint.models import zoo
from celpaint.models.checkpoint import load_model
from celpaint.ops.metrics import ciede2000, colorfulness
from celpaint.pipeline.colorizer import Colorizer

ROOT = Path(__file__).resolve().parent.parent


def forward_seconds(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    x = torch.rand(shape).mul_(2).sub_(1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        started = time.perf_counter()
        model(x)
        return time.perf_counter() - started


def model_only(model, config, batch: int, repeats: int) -> dict:
    height, width = 288, 512  # 16:9 at work size 512
    exact = 2 ** config.arch_args["depth"]
    padded = (-(-height // exact) * exact, -(-width // exact) * exact)
    multiple = config.size_multiple
    own = (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
    channels = config.task.in_channels
    shapes = {"padded": (batch, channels, *padded), "own shape": (batch, channels, *own)}
    model = model.to(memory_format=torch.channels_last)
    for shape in shapes.values():  # warm-up
        forward_seconds(model, shape)
    times: dict[str, list[float]] = {name: [] for name in shapes}
    for _ in range(repeats):
        for name, shape in shapes.items():
            times[name].append(forward_seconds(model, shape) / batch)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "network_input": {name: f"{s[3]}x{s[2]}" for name, s in shapes.items()},
        "seconds_per_frame": medians,
        "all_seconds_per_frame": times,
        "speedup": medians["padded"] / medians["own shape"],
    }


def read_pairs(folder: Path, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for sketch in list_images(folder / "sketch")[:limit]:
        pairs.append((read_image(sketch), read_image(folder / "color" / sketch.name)))
    return pairs


def read_clip(path: Path) -> list[np.ndarray]:
    with open_source(path, find_ffmpeg()) as source:
        return list(source.frames())


def quality(colorizer: Colorizer, inputs: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    delta, colors, true_colors = [], [], []
    for start in range(0, len(inputs), 8):
        batch = np.stack(inputs[start : start + 8])
        for output, truth in zip(colorizer.colorize(batch), truths[start : start + 8], strict=True):
            delta.append(ciede2000(output, truth))
            colors.append(colorfulness(output))
            true_colors.append(colorfulness(truth))
    return {
        "frames": len(delta),
        "ciede2000": float(np.mean(delta)),
        "colorfulness_ratio": float(np.mean(colors) / max(np.mean(true_colors), 1e-9)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lineart")
    parser.add_argument("--pairs", type=Path, help="folder of 16:9 pairs (sketch/, color/)")
    parser.add_argument("--limit", type=int, default=100, help="most pairs scored")
    parser.add_argument(
        "--size-multiple", type=int,
        help="the multiple for 'own shape' (default: the model's; e.g. 16 for a model trained "
        "on whole 2**depth crops, to see what it does without border training)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    torch.set_num_threads(usable_cores())
    model, config = load_model(zoo.generator_directory(args.model))
    if args.size_multiple:
        config = dataclasses.replace(config, size_multiple=args.size_multiple)
    exact = 2 ** config.arch_args["depth"]
    load = os.getloadavg()[0]
    results: dict = {
        "model": args.model,
        "size_multiple": config.size_multiple,
        "exact_multiple": exact,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "load_average_before": load,
        "model_only": model_only(model, config, args.batch, args.repeats),
    }
    padded = Colorizer(model, dataclasses.replace(config, size_multiple=exact), batch_size=8)
    own = Colorizer(model, config, batch_size=8)
    sets = {}
    task = config.task
    if args.pairs:
        pairs = read_pairs(args.pairs, args.limit)
        inputs = [s if task.takes_line_art else np.repeat(to_gray(c)[..., None], 3, 2)
                  for s, c in pairs]  # fmt: skip
        sets["16:9 pairs"] = (inputs, [c for _, c in pairs])
    truth = read_clip(ROOT / "samples" / "clip_color.mp4")
    clip = "clip_lineart.mp4" if task.takes_line_art else "clip_gray.mp4"
    sets["sample clip"] = (read_clip(ROOT / "samples" / clip), truth)
    results["quality"] = {}
    for name, (inputs, truths) in sets.items():
        scores = {
            "padded": quality(padded, inputs, truths),
            "own shape": quality(own, inputs, truths),
        }
        scores["ciede2000_change"] = (
            scores["own shape"]["ciede2000"] - scores["padded"]["ciede2000"]
        )
        results["quality"][name] = scores
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
