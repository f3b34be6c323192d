"""celpaint side by side with the reference pix2pix test path (a benchmark, not a test).

The reference is junyanz/pytorch-CycleGAN-and-pix2pix (or a mirror, e.g. zenml-io's), run from
a copy outside this project (``--junyanz-dir``; it needs ``dominate`` installed, for the HTML
page its test script writes). Both sides run the same U-Net 256 (8 levels, 64 base channels,
512 at most, batch norm), with random weights, in eval mode, on the CPU, end to end as a user
runs them: a process started on a folder of PNG line-art frames, writing a folder of PNGs.

  * reference: ``test.py --model test --netG unet_256 --dataset_mode single --input_nc 1
    --output_nc 3 --norm batch --eval --gpu_ids -1`` (weights: ``networks.define_G`` with its
    default normal(0, 0.02) init, saved as the checkpoint it loads). It writes each fake and
    its real input as PNGs, plus an HTML page.
  * celpaint: ``celpaint colorize FRAMES -o OUT --model DIR --work-size 256`` with a random
    ``unet`` of the same arguments, saved in celpaint's checkpoint format; with
    ``--backend onnxruntime`` and ``--backend torch``, each with and without temporal
    smoothing (which the reference does not have).

The architectures differ only in two bias vectors (576 weights of 54 million: celpaint keeps
a bias in its outermost and innermost encoder convolutions); the parameter counts are in the
JSON. Repeats are interleaved and medians reported, with the load average before and after.

    python benchmarks/bench_junyanz.py --junyanz-dir /tmp/junyanz [--frames 100] [--repeats 3]
        [--json benchmarks/results-junyanz-cpu-2core.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from celpaint.io.media import find_ffmpeg
from celpaint.models.checkpoint import ModelConfig, celpaint_version, save_model
from celpaint.models.registry import build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_colorize import _cpu_name, _load, make_clip  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZE = 256
# junyanz's unet_256: UnetGenerator(input_nc, output_nc, 8, ngf=64), at most ngf * 8 channels.
UNET_256 = dict(in_channels=1, out_channels=3, depth=8, base_channels=64, max_channels=512,
                norm="batch", dropout=0.5, dropout_levels=3)  # fmt: skip
REFERENCE_WEIGHTS = """
import sys, torch
from models import networks
torch.manual_seed(0)
net = networks.define_G(1, 3, 64, "unet_256", "batch", False, "normal", 0.02, [])
torch.save(net.state_dict(), sys.argv[1])
print(sum(p.numel() for p in net.parameters()))
"""


def make_frames(folder: Path, ffmpeg: str, frames: int, scratch: Path) -> Path:
    """``frames`` PNG line-art frames of ``SIZE x SIZE`` (a moving test pattern's edges)."""
    clip = make_clip(scratch / "lineart.mp4", ffmpeg, f"{SIZE}x{SIZE}", frames)
    folder.mkdir(parents=True)
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(clip), "-pix_fmt", "gray",
         str(folder / "frame_%04d.png")],
        check=True,
    )  # fmt: skip
    return folder


def reference_checkpoint(junyanz: Path, checkpoints: Path, name: str) -> int:
    """The random reference generator, saved where its test script loads it; its parameter
    count."""
    target = checkpoints / name / "latest_net_G.pth"
    target.parent.mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-c", REFERENCE_WEIGHTS, str(target)], cwd=junyanz,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stdout.split()[-1])


def celpaint_checkpoint(directory: Path) -> int:
    torch.manual_seed(0)
    model = build("unet", **UNET_256)
    config = ModelConfig("unet", UNET_256, "lineart", "rgb", size_multiple=SIZE, work_size=SIZE)
    save_model(model, directory, config)
    return sum(p.numel() for p in model.parameters())


def timed(command: list[str], env: dict, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junyanz-dir", type=Path, required=True,
                        help="a work tree of pytorch-CycleGAN-and-pix2pix")  # fmt: skip
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks/results-junyanz-cpu-2core.json"
    )
    args = parser.parse_args()
    junyanz = args.junyanz_dir.resolve()
    if not (junyanz / "test.py").is_file():
        raise SystemExit(f"{junyanz} has no test.py; pass a pytorch-CycleGAN-and-pix2pix tree")

    ffmpeg = find_ffmpeg()
    load_before = _load()
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        frames = make_frames(scratch / "frames", ffmpeg, args.frames, scratch)
        reference_params = reference_checkpoint(junyanz, scratch / "checkpoints", "random")
        ours_params = celpaint_checkpoint(scratch / "model")
        # The ONNX Runtime backend's cache goes to the scratch folder, not the user's.
        env = {**os.environ, "CELPAINT_CACHE": str(scratch / "cache")}
        routes = {
            "reference test.py": lambda out: [
                sys.executable, "test.py", "--dataroot", str(frames), "--name", "random",
                "--model", "test", "--netG", "unet_256", "--dataset_mode", "single",
                "--input_nc", "1", "--output_nc", "3", "--norm", "batch", "--eval",
                "--gpu_ids", "-1", "--num_test", str(args.frames),
                "--checkpoints_dir", str(scratch / "checkpoints"), "--results_dir", str(out),
            ],
        }  # fmt: skip
        for backend in ("onnxruntime", "torch"):
            for temporal in ("--temporal", "--no-temporal"):
                routes[f"celpaint {backend} {temporal}"] = (
                    lambda out, b=backend, t=temporal: [
                        sys.executable, "-m", "celpaint", "colorize", str(frames), "-o", str(out),
                        "--model", str(scratch / "model"), "--work-size", str(SIZE),
                        "--backend", b, t, "-q", "--overwrite",
                    ]
                )  # fmt: skip
        # The first use of the ONNX Runtime backend exports the model into the cache: done
        # once before timing, as a user's first run would.
        timed(routes["celpaint onnxruntime --no-temporal"](scratch / "warm"), env)
        seconds = {route: [] for route in routes}
        order = list(routes)
        for repeat in range(args.repeats):
            # Each repeat starts with another route, so that no route always meets the same
            # moment of a changing load.
            for route in order[repeat % len(order) :] + order[: repeat % len(order)]:
                command = routes[route]
                out = scratch / f"out-{repeat}-{len(seconds[route])}-{route.replace(' ', '_')}"
                cwd = junyanz if route.startswith("reference") else None
                seconds[route].append(timed(command(out), env, cwd=cwd))
                written = len(list(out.rglob("*.png")))
                print(f"{route}: {seconds[route][-1]:.1f} s, {written} PNGs", flush=True)

    medians = {route: statistics.median(values) for route, values in seconds.items()}
    reference = medians["reference test.py"]
    result = {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "celpaint": celpaint_version(),
            "load_average_before": load_before,
            "load_average_after": _load(),
            "minutes": round((time.time() - started) / 60, 1),
        },
        "frames": args.frames,
        "size": f"{SIZE}x{SIZE}",
        "repeats": args.repeats,
        "parameters": {"reference unet_256": reference_params, "celpaint unet": ours_params},
        "seconds": {route: round(value, 2) for route, value in medians.items()},
        "frames_per_second": {route: round(args.frames / v, 2) for route, v in medians.items()},
        "speedup_over_reference": {
            route: round(reference / value, 3) for route, value in medians.items()
        },
        "seconds_each_repeat": {r: [round(v, 2) for v in values] for r, values in seconds.items()},
        "reference_command": "test.py --model test --netG unet_256 --dataset_mode single "
        "--input_nc 1 --output_nc 3 --norm batch --eval --gpu_ids -1",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for route in routes:
        print(f"{route:<32} {medians[route]:7.1f} s  {args.frames / medians[route]:6.2f} fps  "
              f"x{reference / medians[route]:.2f} vs reference")  # fmt: skip
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
