"""Temporal smoothing and full-resolution targets of issue 5 on the sample clip (a benchmark,
not a test).

Measures, with one model:
  1. the temporal warping error (Lai et al. 2018, ``celpaint evaluate --input``) of the sample
     clip colorized with and without smoothing, and of the ground truth (the floor); the
     target is at least 30% lower with smoothing;
  2. mean CIEDE2000 against the ground truth both ways; the target is at most 0.5 worse with
     smoothing;
  3. a hard cut: the first half of the clip followed by the mirrored second half (another
     picture, moving); the colorized frames after the cut must be identical to colorizing
     them as a clip of their own;
  4. time per frame of ``colorize`` (decode -> model -> smoothing -> native size -> encode) on
     the clip scaled to 1920x1080 and to 512x288; the output must stay 1920x1080 and the
     target is a ratio within 1.5. Also timed apart: the colorizer alone on frames in memory,
     and decoding + encoding alone, which shows where the extra time of 1080p goes.

Prints the numbers and the equivalent commands, and writes them as JSON.

    python benchmarks/bench_temporal.py [--model lineart|DIR] [--device auto|cpu|cuda]
        [--clip samples/clip_lineart.mp4] [--truth samples/clip_color.mp4]
        [--timing-frames 24] [--repeats 2] [--json bench_temporal.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from celpaint.evaluation.compare import evaluate
from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.media import find_ffmpeg, probe
from celpaint.io.sinks import EncodeOptions
from celpaint.io.sources import open_source
from celpaint.pipeline.api import colorize, convert
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer

ROOT = Path(__file__).resolve().parent.parent


def read_frames(path: Path, ffmpeg: str) -> list[np.ndarray]:
    with open_source(path, ffmpeg) as source:
        return list(source.frames())


def write_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        write_image(folder / f"frame_{index + 1:06d}.png", frame)
    return folder


def quality(colorizer: Colorizer, clip: Path, truth: Path, work: Path, ffmpeg: str) -> dict:
    """Warping error and CIEDE2000 with and without smoothing (frame-folder outputs: no codec
    between the colorizer and the metrics)."""
    results = {}
    for name, temporal in (("temporal", True), ("no_temporal", False)):
        out = work / name
        started = time.perf_counter()
        options = ColorizeOptions() if temporal else ColorizeOptions(temporal=None)
        colorize([clip], out, colorizer, options, encode=EncodeOptions(ffmpeg=ffmpeg))
        seconds = time.perf_counter() - started
        evaluation = evaluate(out, truth, ffmpeg=ffmpeg, input=clip)
        results[name] = {
            "warping_error": evaluation.warping_error["prediction"],
            "ciede2000": evaluation.mean["ciede2000"],
            "psnr": evaluation.mean["psnr"],
            "seconds": seconds,
        }
        results["ground_truth_warping_error"] = evaluation.warping_error["ground_truth"]
    with_, without = results["temporal"], results["no_temporal"]
    results["warping_error_reduction"] = 1 - with_["warping_error"] / without["warping_error"]
    results["ciede2000_change"] = with_["ciede2000"] - without["ciede2000"]
    return results


def hard_cut(colorizer: Colorizer, clip: Path, work: Path, ffmpeg: str, batch: int) -> dict:
    """Colorize [first half | mirrored second half] and the mirrored half alone; compare."""
    frames = read_frames(clip, ffmpeg)
    # The cut falls on a batch boundary, so the generator sees the same batches both times
    # and any difference could only come from state crossing the cut. Batches of at most a
    # quarter of the clip keep the cut inside it (a large GPU batch would put it at frame 0,
    # where there is nothing to cross).
    batch = max(1, min(batch, len(frames) // 4))
    cut = len(frames) // 2 // batch * batch
    after = [np.ascontiguousarray(frame[:, ::-1]) for frame in frames[cut:]]
    both = write_folder(work / "cut_input", frames[:cut] + after)
    alone = write_folder(work / "after_cut_input", after)
    colorizer = copy.copy(colorizer)
    colorizer.batch_size = batch
    encode = EncodeOptions(ffmpeg=ffmpeg)
    colorize([both], work / "cut_output", colorizer, encode=encode)
    colorize([alone], work / "after_cut_output", colorizer, encode=encode)
    joined = [read_image(p) for p in list_images(work / "cut_output")][cut:]
    separate = [read_image(p) for p in list_images(work / "after_cut_output")]
    differences = [
        int(np.abs(a.astype(int) - b).max()) for a, b in zip(joined, separate, strict=True)
    ]
    return {
        "cut_at_frame": cut + 1,
        "frames_after_cut": len(separate),
        "max_abs_difference": max(differences),
        "identical": max(differences) == 0,
    }


def scaled_clip(clip: Path, out: Path, ffmpeg: str, width: int, height: int, frames: int) -> Path:
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip),
         "-vf", f"scale={width}:{height}:flags=lanczos", "-frames:v", str(frames),
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-c:a", "copy", str(out)],
        check=True,
    )  # fmt: skip
    return out


def timing(
    colorizer: Colorizer, clip: Path, work: Path, ffmpeg: str, frames: int, repeats: int
) -> dict:
    """Seconds per frame at 1920x1080 and at 512x288 of: the whole colorize run (decode ->
    model -> smoothing -> native size -> encode, into H.264), the colorizer alone on frames in
    memory (model, smoothing, native size), and decoding + encoding alone (no model)."""
    sizes = {"1920x1080": (1920, 1080), "512x288": (512, 288)}
    clips = {
        name: scaled_clip(clip, work / f"clip_{name}.mp4", ffmpeg, w, h, frames)
        for name, (w, h) in sizes.items()
    }
    in_memory = {name: np.stack(read_frames(path, ffmpeg)) for name, path in clips.items()}
    warm = scaled_clip(clip, work / "warm.mp4", ffmpeg, 512, 288, 4)
    colorize([warm], work / "warm_out.mp4", colorizer, encode=EncodeOptions(ffmpeg=ffmpeg))
    parts = ("end_to_end", "colorizer_only", "io_only")
    seconds = {part: {name: [] for name in sizes} for part in parts}
    batch = colorizer.batch_size
    for _ in range(repeats):  # interleaved, so a change of machine load hits both sizes
        for name, path in clips.items():
            out = work / f"out_{name}.mp4"
            started = time.perf_counter()
            colorize([path], out, colorizer, encode=EncodeOptions(overwrite=True, ffmpeg=ffmpeg))
            seconds["end_to_end"][name].append((time.perf_counter() - started) / frames)
            stream = colorizer.stream(ColorizeOptions())
            started = time.perf_counter()
            for start in range(0, frames, batch):
                stream(in_memory[name][start : start + batch])
            seconds["colorizer_only"][name].append((time.perf_counter() - started) / frames)
            started = time.perf_counter()
            convert(path, work / f"io_{name}.mp4", EncodeOptions(overwrite=True, ffmpeg=ffmpeg))
            seconds["io_only"][name].append((time.perf_counter() - started) / frames)
    info = probe(work / "out_1920x1080.mp4", ffmpeg)
    result: dict = {"frames": frames, "repeats": repeats, "all_seconds_per_frame": seconds}
    for part in parts:
        per_frame = {name: statistics.median(values) for name, values in seconds[part].items()}
        result[part] = {
            "seconds_per_frame": per_frame,
            "ratio_1080p_to_512": per_frame["1920x1080"] / per_frame["512x288"],
        }
    result["output_size_1080p"] = [info.width, info.height]
    result["output_frames_1080p"] = info.frame_count
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lineart", help="shipped model or checkpoint dir")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip", type=Path, default=ROOT / "samples" / "clip_lineart.mp4")
    parser.add_argument("--truth", type=Path, default=ROOT / "samples" / "clip_color.mp4")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--timing-frames", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("bench_temporal.json"))
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()

    ffmpeg = find_ffmpeg()
    colorizer = Colorizer.from_pretrained(args.model, device=args.device,
                                          batch_size=args.batch_size)  # fmt: skip
    load = os.getloadavg()
    report: dict = {
        "model": str(args.model),
        "device": str(colorizer.device),
        "precision": str(colorizer.dtype),
        "work_size": colorizer.work_size,
        "batch_size": colorizer.batch_size,
        "clip": str(args.clip),
        "truth": str(args.truth),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "load_average_before": load,
        "commands": [
            f"celpaint colorize {args.clip} -o temporal/ -m {args.model}",
            f"celpaint colorize {args.clip} -o no_temporal/ -m {args.model} --no-temporal",
            f"celpaint evaluate temporal/ {args.truth} --input {args.clip}",
            f"celpaint evaluate no_temporal/ {args.truth} --input {args.clip}",
        ],
    }
    with tempfile.TemporaryDirectory(prefix="celpaint-bench-temporal-") as scratch:
        work = Path(scratch)
        report["quality"] = quality(colorizer, args.clip, args.truth, work, ffmpeg)
        report["hard_cut"] = hard_cut(colorizer, args.clip, work, ffmpeg, colorizer.batch_size)
        if not args.skip_timing:
            report["timing"] = timing(
                colorizer, args.clip, work, ffmpeg, args.timing_frames, args.repeats
            )
    report["load_average_after"] = os.getloadavg()

    q = report["quality"]
    print(f"model {args.model} on {report['device']}, clip {args.clip}")
    print("warping error (flow on the input clip; lower is steadier):")
    print(f"  with smoothing     {q['temporal']['warping_error']:.4e}")
    print(f"  --no-temporal      {q['no_temporal']['warping_error']:.4e}")
    print(f"  ground truth       {q['ground_truth_warping_error']:.4e}  (the floor)")
    print(f"  reduction          {q['warping_error_reduction'] * 100:.1f}%  (target >= 30%)")
    print("mean CIEDE2000 against the ground truth:")
    print(f"  with smoothing     {q['temporal']['ciede2000']:.3f}")
    print(f"  --no-temporal      {q['no_temporal']['ciede2000']:.3f}")
    print(f"  change             {q['ciede2000_change']:+.3f}  (target <= +0.5)")
    cut = report["hard_cut"]
    print(f"hard cut at frame {cut['cut_at_frame']}: the {cut['frames_after_cut']} frames after "
          f"it {'are identical' if cut['identical'] else 'DIFFER'} to a separate run "
          f"(max difference {cut['max_abs_difference']})")  # fmt: skip
    if "timing" in report:
        t = report["timing"]
        width, height = t["output_size_1080p"]
        print(f"time per frame ({t['frames']} frames, median of {t['repeats']}; 1080p output "
              f"is {width}x{height}):")  # fmt: skip
        print("                    1920x1080   512x288   ratio (target <= 1.5 end to end)")
        for part in ("end_to_end", "colorizer_only", "io_only"):
            per_frame = t[part]["seconds_per_frame"]
            print(f"  {part:16s}  {per_frame['1920x1080']:8.3f} s  {per_frame['512x288']:6.3f} s"
                  f"   {t[part]['ratio_1080p_to_512']:.2f}")  # fmt: skip
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
