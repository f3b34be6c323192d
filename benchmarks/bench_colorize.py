"""Throughput and memory of `celpaint colorize` (a benchmark, not a test).

Prints a table and writes JSON with, for each input size:
  * model-only throughput: the generator's forward on random batches at the work size (the
    ceiling), the faster of one pass on all cores and the arrangement colorize uses (on the
    CPU, two single-threaded passes on different batches at once);
  * IO-only throughput: the same streaming pipeline with no model (decode -> encode, audio on),
    the other ceiling; with the CPU time per frame of the smoothing and upsampling stage it
    tells where the bottleneck is;
  * end-to-end throughput of colorize on a generated clip (decode -> infer -> encode, audio on)
    and its ratio to the model-only ceiling; and the time colorize takes for a clip of a
    single batch, the fixed cost of an input (probing, starting ffmpeg, filling the pipeline);
  * the frames-on-disk route popular tools take (extract PNGs with ffmpeg, colorize each file,
    assemble with ffmpeg) with the same model and batch size, and our speed-up over it;
and the peak resident memory of colorize on a clip and on one ten times longer.

Each measurement is repeated ``--repeats`` times, interleaved (model, IO, ours, disk, model, ...),
and the medians are reported, so that a machine whose load changes during the run still gives
fair ratios; the load average before and after is recorded with the results. Each route's CPU
time per frame (all threads and ffmpeg processes) is recorded too: on a machine shared with
other work it is steadier than wall time, and its ratios are what the throughput ratios would
be with every core busy.

    python benchmarks/bench_colorize.py [--device cpu|cuda] [--model NAME|DIR]
        [--sizes 256x144 512x288 1920x1080:48] [--frames 240] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from celpaint.io.frames import list_images, read_image, write_image
from celpaint.io.media import find_ffmpeg
from celpaint.io.sinks import EncodeOptions
from celpaint.io.video import VideoReader
from celpaint.models import zoo
from celpaint.models.checkpoint import ModelConfig
from celpaint.models.registry import build
from celpaint.pipeline.api import colorize, convert
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer, generator_workers

# The shipped default's architecture, used when no shipped model is installed.
FALLBACK_ARGS = dict(in_channels=1, out_channels=3, depth=6, base_channels=32, max_channels=256)


def make_colorizer(model: str | None, device: str, batch_size: int | None) -> Colorizer:
    if model or zoo.shipped_models():
        return Colorizer.from_pretrained(model or zoo.DEFAULT_MODEL, device=device,
                                         batch_size=batch_size)  # fmt: skip
    generator = build("unet", **FALLBACK_ARGS)
    config = ModelConfig("unet", FALLBACK_ARGS, "lineart", "rgb", size_multiple=64, work_size=512)
    return Colorizer(generator, config, device=device, batch_size=batch_size)


def make_clip(path: Path, ffmpeg: str, size: str, frames: int, kind: str = "lineart") -> Path:
    """A moving test pattern with a sine audio track, drawn as the model's input looks: dark
    lines on white for a line-art model, grayscale footage for a grayscale one."""
    look = "edgedetect=low=0.1:high=0.3,negate" if kind == "lineart" else "format=gray"
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=24,{look}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18",
         "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall time and CPU time (this process's threads plus finished child processes, i.e.
    ffmpeg) over a block; per frame once ``rate`` is called."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = _cpu_seconds() - self.cpu

    def rate(self, frames: int) -> tuple[float, float]:
        """(frames per second of wall time, CPU milliseconds per frame)."""
        return frames / self.wall, self.cpu / frames * 1000


def _cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def model_only_fps(
    colorizer: Colorizer,
    width: int,
    height: int,
    frames: int,
    workers: int = 1,
    threads: int | None = None,
) -> tuple[float, float]:
    """The generator's forward on random batches: ``workers`` threads at once (each on its
    own batches) with ``threads`` torch threads each, as ``colorize`` runs it."""
    geometry = colorizer.geometry(height, width)
    batch = torch.rand(
        colorizer.batch_size, 1, geometry.padded_height, geometry.padded_width,
        device=colorizer.device,
    ) * 2 - 1  # fmt: skip
    counts = [0] * workers

    @torch.inference_mode()
    def forward(worker: int) -> None:
        while sum(counts) < frames:
            colorizer.run_generator(batch)
            counts[worker] += len(batch)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        with torch.inference_mode():
            colorizer.run_generator(batch)  # warm-up
        synchronize(colorizer.device)
        with Clock() as clock:
            pool = [threading.Thread(target=forward, args=(n,)) for n in range(workers)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            synchronize(colorizer.device)
    finally:
        torch.set_num_threads(previous)
    return clock.rate(sum(counts))


def end_to_end_fps(
    colorizer: Colorizer, clip: Path, out: Path, frames: int, temporal: bool = True
) -> tuple[float, float]:
    with Clock() as clock:
        options = ColorizeOptions() if temporal else ColorizeOptions(temporal=None)
        colorize([clip], out, colorizer, options, encode=EncodeOptions(overwrite=True))
    return clock.rate(frames)


def io_only_fps(clip: Path, out: Path, frames: int) -> tuple[float, float]:
    """The streaming pipeline with no model: decode -> encode (audio on), the IO ceiling."""
    with Clock() as clock:
        convert(clip, out, EncodeOptions(overwrite=True))
    return clock.rate(frames)


def stage_cpu_ms(colorizer: Colorizer, clip: Path, ffmpeg: str, rounds: int = 3) -> dict:
    """CPU milliseconds per frame (all threads) of the two halves of colorizing a clip: the
    generator with its pre- and post-processing, and smoothing plus the native-size rendering.
    On a busy machine CPU time, unlike wall time, says where the work goes."""
    frames = []
    for frame in VideoReader(clip, ffmpeg):
        frames.append(frame)
        if len(frames) == colorizer.batch_size:
            break
    batch = np.stack(frames)
    stream = colorizer.stream(ColorizeOptions())
    stream(batch)  # warm-up, and a previous frame for the smoothing
    predict = finish = 0.0
    for _ in range(rounds):
        started = time.process_time()
        predicted = stream.predict(batch)
        middle = time.process_time()
        stream.finish(predicted)
        predict += middle - started
        finish += time.process_time() - middle
    count = rounds * len(batch)
    return {
        "generator": round(predict / count * 1000, 1),
        "finish": round(finish / count * 1000, 1),
    }


def disk_route_fps(
    colorizer: Colorizer, clip: Path, work: Path, ffmpeg: str, frames: int
) -> tuple[float, float]:
    """Extract PNGs with ffmpeg, colorize file by file, assemble with ffmpeg."""
    extracted, colored = work / "extracted", work / "colored"
    extracted.mkdir()
    colored.mkdir()
    with Clock() as clock:
        _disk_route(colorizer, clip, extracted, colored, work, ffmpeg)
    return clock.rate(frames)


def _disk_route(
    colorizer: Colorizer, clip: Path, extracted: Path, colored: Path, work: Path, ffmpeg: str
) -> None:
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


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def measure_size(
    colorizer: Colorizer, size: str, scratch: Path, ffmpeg: str, frames: int, repeats: int
) -> dict:
    """Interleaved repeats of every route on one generated clip; medians of each."""
    width, height = map(int, size.split("x"))
    clip = make_clip(scratch / f"clip_{size}.mp4", ffmpeg, size, frames, colorizer.input_kind)
    samples: dict[str, list[tuple[float, float]]] = {
        "model": [], "io": [], "ours": [], "ours_no_temporal": [], "disk": [],
        "model_one_pass": [], "model_as_colorize": [],
    }  # fmt: skip
    out = scratch / f"out_{size}.mp4"
    frames_in_batch = colorizer.batch_size
    short = make_clip(
        scratch / f"batch_{size}.mp4", ffmpeg, size, frames_in_batch, colorizer.input_kind
    )
    fixed: list[float] = []
    workers, threads = generator_workers(colorizer)
    for repeat in range(repeats):
        # The ceiling is the faster of one forward pass on all cores and the arrangement
        # colorize uses (several single-threaded passes at once on the CPU).
        one_pass = model_only_fps(colorizer, width, height, frames)
        samples["model_one_pass"].append(one_pass)
        as_colorize = one_pass
        if workers > 1:
            as_colorize = model_only_fps(colorizer, width, height, frames, workers, threads)
        samples["model_as_colorize"].append(as_colorize)
        samples["model"].append(max(one_pass, as_colorize))
        samples["io"].append(io_only_fps(clip, scratch / f"io_{size}.mp4", frames))
        samples["ours"].append(end_to_end_fps(colorizer, clip, out, frames))
        samples["ours_no_temporal"].append(end_to_end_fps(colorizer, clip, out, frames, False))
        fixed.append(frames_in_batch / end_to_end_fps(colorizer, short, out, frames_in_batch)[0])
        work = scratch / f"disk_{size}_{repeat}"
        work.mkdir()
        samples["disk"].append(disk_route_fps(colorizer, clip, work, ffmpeg, frames))
    median = {key: statistics.median(fps for fps, _ in values) for key, values in samples.items()}
    model, io, ours = median["model"], median["io"], median["ours"]
    ours_plain, disk = median["ours_no_temporal"], median["disk"]
    cpu = {
        key: round(statistics.median(ms for _, ms in values), 1) for key, values in samples.items()
    }
    stage_ms = stage_cpu_ms(colorizer, clip, ffmpeg)
    # What each stage alone could sustain. Smoothing and upsampling run on one pipeline thread
    # (cv2 spreads some of it over more cores), so its CPU time per frame bounds it roughly.
    ceilings = {
        "model": model,
        "decode+encode": io,
        "smoothing+upsampling": 1000 / stage_ms["finish"],
    }
    geometry = colorizer.geometry(height, width)
    return {
        "input": size,
        "network_input": f"{geometry.padded_width}x{geometry.padded_height}",
        "model_only_fps": round(model, 2),
        "model_only_one_pass_fps": round(median["model_one_pass"], 2),
        "model_only_as_colorize_fps": round(median["model_as_colorize"], 2),
        "generator_workers": [workers, threads],
        "io_only_fps": round(io, 2),
        "end_to_end_fps": round(ours, 2),
        "end_to_end_over_model_only": round(ours / model, 3),
        "one_batch_clip_seconds": round(statistics.median(fixed), 3),
        "end_to_end_over_ceiling": round(ours / min(ceilings.values()), 3),
        "bottleneck": min(ceilings, key=ceilings.get),
        "ceilings_fps": {key: round(value, 2) for key, value in ceilings.items()},
        "end_to_end_no_temporal_fps": round(ours_plain, 2),
        "end_to_end_no_temporal_over_model_only": round(ours_plain / model, 3),
        "disk_route_fps": round(disk, 2),
        "speedup_over_disk_route": round(ours / disk, 2),
        "speedup_no_temporal_over_disk_route": round(ours_plain / disk, 2),
        "cpu_ms_per_frame": cpu,
        "end_to_end_over_model_only_by_cpu": round(cpu["model"] / cpu["ours"], 3),
        "no_temporal_over_model_only_by_cpu": round(cpu["model"] / cpu["ours_no_temporal"], 3),
        "stage_cpu_ms_per_frame": stage_ms,
        "samples_fps": {
            key: [round(fps, 2) for fps, _ in values] for key, values in samples.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="model name or directory")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--frames", type=int, default=240, help="frames per measured clip")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument(
        "--sizes", nargs="+", default=["256x144", "512x288", "1920x1080:48"],
        help="WxH, or WxH:FRAMES to measure that size on a clip of its own length",
    )  # fmt: skip
    parser.add_argument("--memory-size", default=None, help="clip size for peak memory")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"))
    args = parser.parse_args()

    ffmpeg = find_ffmpeg()
    colorizer = make_colorizer(args.model, args.device, args.batch_size)
    load_before = _load()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for item in args.sizes:
            size, _, frames = item.partition(":")
            frames = int(frames) if frames else args.frames
            rows.append(measure_size(colorizer, size, scratch, ffmpeg, frames, args.repeats))
            rows[-1]["frames"] = frames
            print(rows[-1], flush=True)

        model_args = ["--model", args.model] if args.model else []
        if not (args.model or zoo.shipped_models()):
            directory = scratch / "model"
            from celpaint.models.checkpoint import save_model

            save_model(colorizer.model, directory, colorizer.config)
            model_args = ["--model", str(directory)]
        if args.batch_size:
            model_args += ["--batch-size", str(args.batch_size)]
        mem_size = args.memory_size or args.sizes[min(1, len(args.sizes) - 1)].partition(":")[0]
        kind = colorizer.input_kind
        short = make_clip(scratch / "short.mp4", ffmpeg, mem_size, args.frames, kind)
        long = make_clip(scratch / "long.mp4", ffmpeg, mem_size, args.frames * 10, kind)
        peak_short = peak_memory_mib(short, scratch / "short_out.mp4", model_args, args.device)
        peak_long = peak_memory_mib(long, scratch / "long_out.mp4", model_args, args.device)

    result = {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(colorizer.device),
            "gpu": torch.cuda.get_device_name(0) if colorizer.device.type == "cuda" else None,
            "torch": torch.__version__,
            "load_average_before": load_before,
            "load_average_after": _load(),
            "minutes": round((time.time() - started) / 60, 1),
        },
        "model": {
            "source": args.model or ("default" if zoo.shipped_models() else "random fallback"),
            "work_size": colorizer.work_size,
            "batch_size": colorizer.batch_size,
            "precision": str(colorizer.dtype).removeprefix("torch."),
            "arch_args": colorizer.config.arch_args,
        },
        "frames_per_clip": args.frames,
        "repeats": args.repeats,
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
    print_table(result)
    print(f"written {args.json}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(result: dict) -> None:
    header = [
        "input", "net input", "model-only fps", "IO-only fps", "end-to-end fps (÷ model-only)",
        "no-temporal fps (÷ model-only)", "disk-route fps", "speed-up over disk (no-temporal)",
        "CPU ms/frame: model-only, end-to-end, no-temporal, disk",
    ]  # fmt: skip
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in result["rows"]:
        cells = [
            row["input"], row["network_input"], row["model_only_fps"], row["io_only_fps"],
            f"{row['end_to_end_fps']} ({row['end_to_end_over_model_only']})",
            f"{row['end_to_end_no_temporal_fps']} "
            f"({row['end_to_end_no_temporal_over_model_only']})",
            row["disk_route_fps"],
            f"{row['speedup_over_disk_route']}x ({row['speedup_no_temporal_over_disk_route']}x)",
            ", ".join(str(row["cpu_ms_per_frame"][key])
                      for key in ("model", "ours", "ours_no_temporal", "disk")),
        ]  # fmt: skip
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    for row in result["rows"]:
        print(f"{row['input']}: {row['frames']} frames per clip; model-only one pass "
              f"{row['model_only_one_pass_fps']} fps, as colorize runs it "
              f"{row['model_only_as_colorize_fps']} fps (workers x threads "
              f"{row['generator_workers']}); a one-batch clip takes "
              f"{row['one_batch_clip_seconds']} s")  # fmt: skip
    memory, machine = result["peak_memory"], result["machine"]
    print(f"\npeak RSS at {memory['size']}: {memory['short_mib']} MiB for {memory['short_frames']} "
          f"frames, {memory['long_mib']} MiB for {memory['long_frames']} frames "
          f"(x{memory['long_over_short']})")  # fmt: skip
    print(
        f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), device {machine['device']}; load average "
        f"{machine['load_average_before']} before, {machine['load_average_after']} after"
    )


if __name__ == "__main__":
    main()
