"""Sharded colorize under torchrun against one process (a benchmark, not a test).

On a generated line-art clip with audio (default 240 frames of 512x288), runs
``celpaint colorize`` once in one process and once as ``--ranks`` gloo processes on the CPU
(``torchrun --nproc-per-node N -m celpaint colorize``), both lossless so that the videos hold
the colorized frames exactly, and reports:
  * the frames: identical in the first part, CIEDE2000 (mean over each frame) against the one
    process on every later frame, most of all at the seams; frame count, frame rate and audio;
  * the wall-time ratio (whole commands, and the runs as the commands report them);
  * what a rank spends its time on, measured stage by stage on the last rank's part with the
    rank's share of the cores (decode from the part's warm-up on, generator, smoothing,
    rendering at the native size, encoding, and rank 0's join);
  * what a multi-GPU run would do per rank: with the generator on a GPU, a rank's CPU stages
    bound its rate; with the warm-up's overhead for a few rank counts, for this clip and a
    24-minute episode. ``--gpu-model-fps`` (the generator's rate on one GPU, e.g. from
    bench_colorize.py --device cuda) adds that bound.

    python benchmarks/bench_shard.py [--frames 240] [--size 512x288] [--ranks 2]
        [--warm-up 32] [--model NAME|DIR] [--gpu-model-fps FPS] [--json PATH]

Timings on a machine shared with other work are noisy; rerun on a quiet one for figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from celpaint.device import usable_cores
from celpaint.io.media import find_ffmpeg, probe
from celpaint.io.segments import ClipIdentity, PartTag, join_parts
from celpaint.io.sources import open_source
from celpaint.io.video import VideoWriter
from celpaint.ops.metrics import ciede2000
from celpaint.pipeline.colorizer import ColorizeOptions, Colorizer
from celpaint.pipeline.shard import DEFAULT_WARMUP, FrameRange, split_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_colorize import make_clip, make_colorizer  # noqa: E402

EPISODE_FRAMES = 24 * 60 * 24  # 24 minutes at 24 fps
_SUMMARY = re.compile(r"colored (\d+) frames in ([\d.]+) s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--size", default="512x288")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--warm-up", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--model", default=None)
    parser.add_argument("--gpu-model-fps", type=float, default=None)
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results-shard-cpu-2core.json")
    )
    args = parser.parse_args()
    ffmpeg = find_ffmpeg()
    load_before = os.getloadavg()
    started = time.perf_counter()
    colorizer = make_colorizer(args.model, "cpu", None)
    model_args = ["-m", args.model] if args.model else []
    with tempfile.TemporaryDirectory(prefix="celpaint-bench-shard-") as scratch:
        folder = Path(scratch)
        clip = make_clip(folder / "clip.mp4", ffmpeg, args.size, args.frames)
        common = [str(clip), *model_args, "--lossless", "--device", "cpu",
                  "--warm-up", str(args.warm_up)]  # fmt: skip
        one = _timed([sys.executable, "-m", "celpaint", "colorize", *common,
                      "-o", str(folder / "one.mp4")])  # fmt: skip
        sharded = _timed(_torchrun(args.ranks) + ["colorize", *common,
                                                  "-o", str(folder / "sharded.mp4")])  # fmt: skip
        parts = split_frames(probe(clip, ffmpeg).frame_count, args.ranks, args.warm_up)
        frames = _compare(folder / "one.mp4", folder / "sharded.mp4", clip, parts, ffmpeg)
        breakdown = _rank_breakdown(clip, colorizer, parts, folder, ffmpeg)
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "minutes": round((time.perf_counter() - started) / 60, 1),
        },
        "model": {
            "source": args.model or "lineart",
            "work_size": colorizer.work_size,
            "batch_size": colorizer.batch_size,
        },  # fmt: skip
        "clip": {"size": args.size, "frames": args.frames, "audio": "aac"},
        "ranks": args.ranks,
        "warm_up": args.warm_up,
        "parts": [[part.start, part.stop, part.warmup] for part in parts],
        "one_process": one,
        "sharded": sharded,
        "wall_time_ratio": round(one["wall_seconds"] / sharded["wall_seconds"], 3),
        "run_time_ratio": round(one["run_seconds"] / sharded["run_seconds"], 3),
        "frames": frames,
        "rank_breakdown": breakdown,
        "multi_gpu_estimate": _multi_gpu(breakdown, parts, args),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_time_ratio", "run_time_ratio", "frames")},
                     indent=1))  # fmt: skip
    print(f"wrote {args.json}")


def _torchrun(ranks: int) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
            "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "celpaint"]  # fmt: skip


def _timed(command: list[str]) -> dict:
    """Run a colorize command; its wall time and the run's time as its summary line says."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    found = _SUMMARY.findall(done.stderr)
    return {"wall_seconds": round(wall, 2), "run_seconds": float(found[-1][1]),
            "frames": int(found[-1][0])}  # fmt: skip


def _read(path: Path) -> np.ndarray:
    with open_source(path) as source:
        return np.stack(list(source.frames()))


def _compare(one: Path, sharded: Path, clip: Path, parts: list[FrameRange], ffmpeg: str) -> dict:
    a, b = probe(one, ffmpeg), probe(sharded, ffmpeg)
    audio = [(s.codec, s.description.split(",")[1:3]) for s in a.audio]
    first = parts[0].stop
    ours, theirs = _read(one), _read(sharded)
    errors = [ciede2000(x, y) for x, y in zip(ours[first:], theirs[first:], strict=True)]
    seams = {str(part.start): round(errors[part.start - first], 4) for part in parts[1:]}
    return {
        "count": [a.frame_count, b.frame_count],
        "count_equal": a.frame_count == b.frame_count == len(ours) == len(theirs),
        "fps_equal": a.fps == b.fps == probe(clip, ffmpeg).fps,
        "fps": f"{b.fps.numerator}/{b.fps.denominator}",
        "audio_equal": audio == [(s.codec, s.description.split(",")[1:3]) for s in b.audio]
        and a.duration == b.duration,
        "first_part_frames": first,
        "first_part_identical": bool(np.array_equal(ours[:first], theirs[:first])),
        "later_delta_e_max": round(max(errors), 4),
        "later_delta_e_mean": round(float(np.mean(errors)), 4),
        "later_frames_identical": int(sum(e == 0 for e in errors)),
        "delta_e_at_seams": seams,
    }


def _rank_breakdown(
    clip: Path, colorizer: Colorizer, parts: list[FrameRange], folder: Path, ffmpeg: str
) -> dict:
    """Seconds the last rank spends on each stage of its part, one stage at a time, with its
    share of the cores (as under torchrun: ``usable_cores`` / ranks on one machine)."""
    cores = max(1, usable_cores() // len(parts))
    torch.set_num_threads(cores)
    cv2.setNumThreads(1)
    part = parts[-1]
    seconds: dict[str, float] = {}
    with open_source(clip) as source:
        info = source.info
        started = time.perf_counter()
        frames = np.stack(list(source.frames(part.first, None)))
        seconds["decode"] = time.perf_counter() - started
    stream = colorizer.stream(ColorizeOptions())
    batch = colorizer.batch_size
    seconds.update(generator=0.0, smoothing=0.0, render=0.0)
    rendered = []
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        tick = time.perf_counter()
        _, grays, lab = stream.predict(chunk)
        seconds["generator"] += (tock := time.perf_counter()) - tick
        lab = stream.smoother.process_batch(grays, lab, 1)
        seconds["smoothing"] += (tick := time.perf_counter()) - tock
        rendered += [
            stream.render(frame, one, False) for frame, one in zip(chunk, lab, strict=True)
        ]
        seconds["render"] += time.perf_counter() - tick
    written = np.stack(rendered[part.warmup :])
    # Two tagged halves of the part, encoded as a rank encodes its part, then joined as rank 0
    # joins the parts (with the clip's audio).
    halves = [(0, len(written) // 2), (len(written) // 2, len(written))]
    identity = ClipIdentity(clip.name, len(written), info.width, info.height, "24")
    encoding = {"container": ".mp4", "crf": 18, "preset": "medium", "lossless": True, "fps": "24"}
    started = time.perf_counter()
    paths = []
    for index, (start, stop) in enumerate(halves, start=1):
        tag = PartTag(index, 2, start, stop, identity, encoding)
        path = folder / f"half{index}.mp4"
        with VideoWriter(path, info.width, info.height, info.fps, lossless=True,
                         metadata=tag.metadata()) as writer:  # fmt: skip
            for frame in written[start:stop]:
                writer.write(frame)
        paths.append(path)
    seconds["encode"] = time.perf_counter() - started
    started = time.perf_counter()
    join_parts(paths, folder / "joined.mp4", clip, ffmpeg=ffmpeg)
    seconds["join"] = time.perf_counter() - started
    total = sum(seconds.values())
    return {
        "cores": cores,
        "frames_colorized": len(frames),
        "frames_written": len(written),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "share": {k: round(v / total, 3) for k, v in seconds.items()},
        "ms_per_frame": {k: round(1000 * v / len(frames), 2) for k, v in seconds.items()},
        "total_seconds": round(total, 2),
    }


def _multi_gpu(breakdown: dict, parts: list[FrameRange], args) -> dict:
    """A rank with its own GPU: the generator leaves the CPU, whose stages (per frame, per core,
    measured above) then bound the rank, unless the GPU's own rate is lower."""
    per_frame = breakdown["ms_per_frame"]
    cpu_ms = sum(per_frame[k] for k in ("decode", "smoothing", "render", "encode"))
    cpu_fps_per_core = 1000 / cpu_ms
    bounds = {"cpu_stages_fps_per_core": round(cpu_fps_per_core, 1)}
    if args.gpu_model_fps:
        bounds["gpu_model_fps"] = args.gpu_model_fps
    rows = []
    for frames in (args.frames, EPISODE_FRAMES):
        for ranks in (2, 4, 8):
            share = frames / ranks
            # The last rank's warm-up: the whole warm-up unless the clip starts sooner.
            overhead = min(args.warm_up, frames - share) / share
            rows.append({
                "clip_frames": frames,
                "ranks": ranks,
                "frames_per_rank": round(share),
                "warm_up_overhead": round(overhead, 4),
                "speedup_over_one_gpu": round(ranks / (1 + overhead), 2),
            })  # fmt: skip
    return {
        "per_rank_fps": bounds,
        "note": "per-rank rate = min(GPU generator fps, cores per rank x cpu_stages_fps_per_core); "
        "speed-up over one GPU = ranks / (1 + warm-up / frames per rank), the join (a copy of "
        "the streams) aside",
        "rows": rows,
    }


if __name__ == "__main__":
    main()
