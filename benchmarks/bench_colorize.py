"""Throughput and memory of `celpaint colorize` (a benchmark, not a test).

Prints a table and writes JSON with, for each input size:
  * model-only throughput: the generator's forward on random batches at the work size (the ceiling);
  * end-to-end throughput of colorize on a generated clip (decode -> infer -> encode, audio on)
    and its ratio to the ceiling;
  * the frames-on-disk route popular tools take (extract PNGs with ffmpeg, colorize each file,
    assemble with ffmpeg) with the same model and batch size, and our speed-up over it;
and the peak resident memory of colorize on a clip and on one ten times longer.

    python benchmarks/bench_colorize.py [--device cpu|cuda] [--sizes 256x144 512x288 1920x1080]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from celpaint.models import ModelConfig, build, zoo
from celpaint.pipeline.colorizer import Colorizer
from celpaint.pipeline.frames import list_images, read_image, write_image
from celpaint.pipeline.media import find_ffmpeg
from celpaint.pipeline.run import ColorizeOptions, colorize

# The shipped default's architecture, used when no shipped model is installed.
FALLBACK_ARGS = dict(in_channels=1, out_channels=3, depth=6, base_channels=32, max_channels=256)


def make_colorizer(model: str | None, device: str, batch_size: int | None) -> Colorizer:
    if model or zoo.shipped_models():
        return Colorizer.from_pretrained(model or zoo.DEFAULT_MODEL, device=device,
                                         batch_size=batch_size)  # fmt: skip
    generator = build("unet", **FALLBACK_ARGS)
    config = ModelConfig("unet", FALLBACK_ARGS, "lineart", "rgb", size_multiple=64, work_size=512)
    return Colorizer(generator, config, device=device, batch_size=batch_size)


def make_clip(path: Path, ffmpeg: str, size: str, frames: int, rate: int = 24) -> Path:
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18",
         "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only_fps(colorizer: Colorizer, width: int, height: int, frames: int) -> float:
    geometry = colorizer.geometry(height, width)
    batch = torch.rand(
        colorizer.batch_size, 1, geometry.padded_height, geometry.padded_width,
        device=colorizer.device,
    ) * 2 - 1  # fmt: skip
    with torch.inference_mode():
        colorizer.run_generator(batch)  # warm-up
        synchronize(colorizer.device)
        done, started = 0, time.perf_counter()
        while done < frames:
            colorizer.run_generator(batch)
            done += len(batch)
        synchronize(colorizer.device)
    return done / (time.perf_counter() - started)


def end_to_end_fps(colorizer: Colorizer, clip: Path, out: Path, frames: int) -> float:
    started = time.perf_counter()
    colorize([clip], out, colorizer, ColorizeOptions(overwrite=True))
    return frames / (time.perf_counter() - started)


def disk_route_fps(colorizer: Colorizer, clip: Path, work: Path, ffmpeg: str, frames: int) -> float:
    """Extract PNGs with ffmpeg, colorize file by file, assemble with ffmpeg."""
    extracted, colored = work / "extracted", work / "colored"
    extracted.mkdir()
    colored.mkdir()
    started = time.perf_counter()
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(clip), str(extracted / "%06d.png")],
                   check=True)  # fmt: skip
    paths = list_images(extracted)
    for start in range(0, len(paths), colorizer.batch_size):
        chunk = paths[start : start + colorizer.batch_size]
        outputs = colorizer.colorize(np.stack([read_image(p) for p in chunk]))
        for path, rgb in zip(chunk, outputs, strict=True):
            write_image(colored / path.name, rgb)
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-y", "-framerate", "24", "-i", str(colored / "%06d.png"),
         "-i", str(clip), "-map", "0:v", "-map", "1:a", "-c:a", "copy", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", "-crf", "18", str(work / "disk_route.mp4")],
        check=True,
    )  # fmt: skip
    return frames / (time.perf_counter() - started)


_PEAK_SCRIPT = """
import resource, sys
from celpaint.cli.app import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
raise SystemExit(code)
"""


def peak_memory_mib(clip: Path, out: Path, model_args: list[str], device: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, "colorize", str(clip), "-o", str(out),
         "--overwrite", "-q", "--device", device, *model_args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="model name or directory")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--frames", type=int, default=48, help="frames per measured clip")
    parser.add_argument("--sizes", nargs="+", default=["256x144", "512x288", "1920x1080"])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"))
    args = parser.parse_args()

    ffmpeg = find_ffmpeg()
    colorizer = make_colorizer(args.model, args.device, args.batch_size)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            clip = make_clip(scratch / f"clip_{size}.mp4", ffmpeg, size, args.frames)
            ceiling = model_only_fps(colorizer, width, height, args.frames)
            ours = end_to_end_fps(colorizer, clip, scratch / f"out_{size}.mp4", args.frames)
            work = scratch / f"disk_{size}"
            work.mkdir()
            disk = disk_route_fps(colorizer, clip, work, ffmpeg, args.frames)
            geometry = colorizer.geometry(height, width)
            rows.append({
                "input": size,
                "network_input": f"{geometry.padded_width}x{geometry.padded_height}",
                "model_only_fps": round(ceiling, 2),
                "end_to_end_fps": round(ours, 2),
                "end_to_end_over_model_only": round(ours / ceiling, 3),
                "disk_route_fps": round(disk, 2),
                "speedup_over_disk_route": round(ours / disk, 2),
            })  # fmt: skip
            print(rows[-1], flush=True)

        model_args = ["--model", args.model] if args.model else []
        if not (args.model or zoo.shipped_models()):
            directory = scratch / "model"
            from celpaint.models import save_model

            save_model(colorizer.model, directory, colorizer.config)
            model_args = ["--model", str(directory)]
        mem_size = args.sizes[min(1, len(args.sizes) - 1)]
        short = make_clip(scratch / "short.mp4", ffmpeg, mem_size, args.frames)
        long = make_clip(scratch / "long.mp4", ffmpeg, mem_size, args.frames * 10)
        peak_short = peak_memory_mib(short, scratch / "short_out.mp4", model_args, args.device)
        peak_long = peak_memory_mib(long, scratch / "long_out.mp4", model_args, args.device)

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(colorizer.device),
            "gpu": torch.cuda.get_device_name(0) if colorizer.device.type == "cuda" else None,
            "torch": torch.__version__,
        },
        "model": {
            "work_size": colorizer.work_size,
            "batch_size": colorizer.batch_size,
            "arch_args": colorizer.config.arch_args,
        },  # fmt: skip
        "frames_per_clip": args.frames,
        "rows": rows,
        "peak_memory": {
            "size": mem_size,
            "short_frames": args.frames,
            "short_mib": round(peak_short, 1),
            "long_frames": args.frames * 10,
            "long_mib": round(peak_long, 1),
            "long_over_short": round(peak_long / peak_short, 3),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    header = ["input", "net input", "model-only fps", "end-to-end fps", "ratio", "disk-route fps",
              "speed-up"]  # fmt: skip
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print(f"| {row['input']} | {row['network_input']} | {row['model_only_fps']} | "
              f"{row['end_to_end_fps']} | {row['end_to_end_over_model_only']} | "
              f"{row['disk_route_fps']} | {row['speedup_over_disk_route']}x |")  # fmt: skip
    memory = result["peak_memory"]
    print(f"\npeak RSS at {memory['size']}: {memory['short_mib']} MiB for {memory['short_frames']} "
          f"frames, {memory['long_mib']} MiB for {memory['long_frames']} frames "
          f"(x{memory['long_over_short']})")  # fmt: skip
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
