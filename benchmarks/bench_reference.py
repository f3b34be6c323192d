"""Keyframe reference colorization on the sample clip (a benchmark, not a test).

For the line-art and the grayscale version of ``samples/clip_*.mp4`` (truth:
``samples/clip_color.mp4``), with the true frame 1 as the keyframe, and with the true first and
last frames as two keyframes, scored on the other frames:

- celpaint with ``--reference`` (``colorize(..., references=...)``, frame-folder output, so no
  codec stands between the colors and the scores);
- *repeat*: the keyframe's colors on every frame (line art: the nearest keyframe with the
  frame's own lines drawn over it; grayscale: the nearest keyframe's a*b* under the frame's own
  L*);
- *default*: plain ``celpaint colorize`` without a reference.

Reported: mean CIEDE2000 against the truth and the ratios to both baselines, the colorfulness
ratio (Hasler and Suesstrunk), the a*b* warping error against the truth's (Lai et al., flow on
the input clip), and the time per frame of ``colorize`` with and without references on the
same clip (median of ``--repeats``, interleaved).

    python benchmarks/bench_reference.py [--model-lineart lineart] [--model-gray gray]
        [--repeats 3] [--json benchmarks/results-reference-cpu-2core.json]

``--memory N`` instead measures peak memory (RSS) on a generated line-art pan of N frames at
512x288, with one keyframe and without, each in a process of its own, and adds it to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from celpaint.color.array import lab_to_rgb, lightness, rgb_to_lab
from celpaint.evaluation.compare import evaluate
from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.media import find_ffmpeg
from celpaint.io.sources import open_source
from celpaint.ops.metrics import ciede2000, colorfulness
from celpaint.pipeline.api import colorize
from celpaint.pipeline.colorizer import Colorizer
from celpaint.pipeline.reference import adapt

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def read_frames(path: Path) -> list[np.ndarray]:
    with open_source(path) as source:
        return list(source.frames())


def repeat_keyframes(inputs, truth, keys, keeps_lightness: bool) -> list[np.ndarray]:
    out = []
    for index, frame in enumerate(inputs):
        key = min(keys, key=lambda k: abs(k - index))
        lab = rgb_to_lab(truth[key])
        native_l = lightness(frame)
        lab[..., 0] = native_l if keeps_lightness else np.minimum(lab[..., 0], native_l)
        out.append(lab_to_rgb(lab, fit_gamut=keeps_lightness))
    return out


def mean_delta(frames, truth, keys) -> float:
    scored = [i for i in range(len(truth)) if i not in keys]
    return float(np.mean([ciede2000(frames[i], truth[i]) for i in scored]))


def colorfulness_ratio(frames, truth, keys) -> float:
    scored = [i for i in range(len(truth)) if i not in keys]
    ours = np.mean([colorfulness(frames[i]) for i in scored])
    return float(ours / np.mean([colorfulness(truth[i]) for i in scored]))


def run_case(name, clip, model, truth, truth_folder, keys, work, repeats) -> dict:
    inputs = read_frames(clip)
    keeps_lightness = Colorizer.from_pretrained(model, device="cpu").task.keeps_input_lightness
    references = [f"{k + 1}={truth_folder / f'frame_{k + 1:06d}.png'}" for k in keys]
    times = {"reference": [], "default": []}
    for attempt in range(repeats):
        for route in ("reference", "default"):
            out = work / f"{name}_{len(keys)}_{route}_{attempt}"
            colorizer = Colorizer.from_pretrained(model, device="cpu")
            started = time.perf_counter()
            colorize([clip], out, colorizer, references=references if route == "reference" else ())
            times[route].append((time.perf_counter() - started) / len(inputs))
    ours = [read_image(p) for p in list_images(work / f"{name}_{len(keys)}_reference_0")]
    default = [read_image(p) for p in list_images(work / f"{name}_{len(keys)}_default_0")]
    repeated = repeat_keyframes(inputs, truth, keys, keeps_lightness)
    scores = {
        "celpaint": mean_delta(ours, truth, keys),
        "repeat_keyframe": mean_delta(repeated, truth, keys),
        "default_no_reference": mean_delta(default, truth, keys),
    }
    evaluation = evaluate(work / f"{name}_{len(keys)}_reference_0", truth_folder, input=clip)
    ab = evaluation.warping_error_ab
    return {
        "model": str(model),
        "keyframes": [k + 1 for k in keys],
        "ciede2000": scores,
        "ratio_to_repeat": scores["celpaint"] / scores["repeat_keyframe"],
        "ratio_to_default": scores["celpaint"] / scores["default_no_reference"],
        "colorfulness_ratio": {
            "celpaint": colorfulness_ratio(ours, truth, keys),
            "repeat_keyframe": colorfulness_ratio(repeated, truth, keys),
            "default_no_reference": colorfulness_ratio(default, truth, keys),
        },
        "warping_error_ab": ab,
        "warping_error_ab_ratio_to_truth": ab["prediction"] / ab["ground_truth"],
        "seconds_per_frame": {route: statistics.median(v) for route, v in times.items()},
        "time_ratio": statistics.median(times["reference"]) / statistics.median(times["default"]),
    }


def adapt_case(clip, model, truth, truth_folder, work, steps) -> dict:
    """Line art, keyframe 1, with ``--adapt-steps``: quality and the adaptation's seconds."""
    inputs = read_frames(clip)
    key = [f"1={truth_folder / 'frame_000001.png'}"]
    colorizer = Colorizer.from_pretrained(model, device="cpu")
    started = time.perf_counter()
    adapt(colorizer, [(inputs[0], truth[0])], steps)
    adapt_seconds = time.perf_counter() - started
    out = work / f"adapt_{steps}"
    started = time.perf_counter()
    colorize([clip], out, colorizer, references=key)
    seconds = time.perf_counter() - started
    frames = [read_image(p) for p in list_images(out)]
    return {
        "adapt_steps": steps,
        "adapt_seconds": adapt_seconds,
        "colorize_seconds": seconds,
        "ciede2000": mean_delta(frames, truth, [0]),
        "colorfulness_ratio": colorfulness_ratio(frames, truth, [0]),
    }


def memory_child(mode: str, frames: int) -> None:
    """One measurement of ``--memory`` (run in a child process): prints a JSON line."""
    import resource

    import cv2

    from celpaint.pipeline.colorizer import ColorizeOptions
    from celpaint.pipeline.reference import KeyframeColorizer

    rng = np.random.default_rng(0)
    scene = np.full((576, 1024, 3), 255, np.uint8)
    for _ in range(60):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        center = (int(rng.integers(0, 1024)), int(rng.integers(0, 576)))
        cv2.circle(scene, center, int(rng.integers(10, 60)), color, -1)

    def frame(t: int) -> tuple[np.ndarray, np.ndarray]:
        color = scene[100:388, t % 400 : t % 400 + 512].copy()
        lines = 255 - cv2.Canny(color, 50, 150)
        return np.repeat(lines[..., None], 3, axis=2), color

    colorizer = Colorizer.from_pretrained("lineart", device="cpu")
    references = {0: frame(0)[1]} if mode == "reference" else {}
    keyframes = KeyframeColorizer(colorizer, ColorizeOptions(), references)
    predict, record = keyframes.analysis_stages()
    for start in range(0, frames, 8):
        batch = np.stack([frame(t)[0] for t in range(start, min(frames, start + 8))])
        record([str(t) for t in range(start, start + len(batch))], predict(batch))
    analysis = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    keyframes.carry()
    carried = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb_after_analysis": analysis, "peak_mb_after_carry": carried}))


def memory_case(frames: int) -> dict:
    import subprocess
    import sys

    out = {"frames": frames, "size": "512x288", "model": "lineart"}
    for mode in ("reference", "none"):
        command = [sys.executable, __file__, "--memory-child", mode, "--memory", str(frames)]
        text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        out[mode] = json.loads(text.strip().splitlines()[-1])
    extra = out["reference"]["peak_mb_after_carry"] - out["reference"]["peak_mb_after_analysis"]
    out["carry_mb_per_frame"] = extra / frames
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-lineart", default="lineart")
    parser.add_argument("--model-gray", default="gray")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--adapt-steps", type=int, default=50)
    parser.add_argument(
        "--adapt-only", action="store_true", help="only the adaptation case, added to --json"
    )
    parser.add_argument("--memory", type=int, help="only peak memory on N generated frames")
    parser.add_argument("--memory-child", choices=("reference", "none"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory)
        return
    if args.memory:
        results = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
        results["memory"] = memory_case(args.memory)
        print(f"memory {results['memory']}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return
    torch.manual_seed(0)
    truth = read_frames(SAMPLES / "clip_color.mp4")
    last = len(truth) - 1
    results = {
        "machine": {
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "load_before": os.getloadavg()[0],
        },
        "clip": "samples/clip_*.mp4 (96 frames, 384x216); truth samples/clip_color.mp4",
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        truth_folder = work / "truth"
        truth_folder.mkdir()
        for index, frame in enumerate(truth):
            write_image(truth_folder / f"frame_{index + 1:06d}.png", frame)
        if args.adapt_only:
            results = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
            case = adapt_case(SAMPLES / "clip_lineart.mp4", args.model_lineart, truth,
                              truth_folder, work, args.adapt_steps)  # fmt: skip
            results["lineart_1_keyframe_adapted"] = case
            print(f"adapt {case}", flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
            return
        for name, clip, model in (
            ("lineart", SAMPLES / "clip_lineart.mp4", args.model_lineart),
            ("gray", SAMPLES / "clip_gray.mp4", args.model_gray),
        ):
            for keys in ([0], [0, last]):
                case = run_case(name, clip, model, truth, truth_folder, keys, work, args.repeats)
                results["cases"][f"{name}_{len(keys)}_keyframes"] = case
                print(
                    f"{name:8s} keyframes {case['keyframes']}: "
                    f"dE {case['ciede2000']['celpaint']:.2f}"
                    f" (repeat {case['ciede2000']['repeat_keyframe']:.2f}: x"
                    f"{case['ratio_to_repeat']:.2f}; default "
                    f"{case['ciede2000']['default_no_reference']:.2f}: x"
                    f"{case['ratio_to_default']:.2f}), colorfulness "
                    f"{case['colorfulness_ratio']['celpaint']:.2f}, a*b* warping error x"
                    f"{case['warping_error_ab_ratio_to_truth']:.2f} of the truth's, time x"
                    f"{case['time_ratio']:.2f} of plain colorize",
                    flush=True,
                )
    results["machine"]["load_after"] = os.getloadavg()[0]
    results["ffmpeg"] = find_ffmpeg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
