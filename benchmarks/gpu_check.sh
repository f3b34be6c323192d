#!/usr/bin/env bash
# The GPU measurements of issues 5 and 6 in one run, for a machine with an NVIDIA GPU:
#   1. the GPU-only tests (CUDA path: fp16, pinned memory, out-of-memory backoff, AMP training);
#   2. bench_colorize.py on CUDA at 512x288 and 1080p (model-only, IO-only, end to end, the
#      frames-on-disk route, peak memory), with CPU time per stage to show the bottleneck;
#   3. bench_temporal.py on CUDA (smoothing quality and the 1080p / 512 time ratio).
# Everything lands in $OUT (default benchmarks/gpu/). Settings: DEVICE (cuda), SIZES, REPEATS.
#
# Where the machine has torch, OpenCV and the rest but not kornia, put its wheels in .whl/
# (ignored by git) first; they are installed into /tmp/site here:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl kornia kornia-rs
# ffmpeg: set CELPAINT_FFMPEG where the machine has one; else add imageio-ffmpeg's wheel (29.5
# MB, which with the repo's 30 MiB comes close to what a device call may carry).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-benchmarks/gpu}"
device="${DEVICE:-cuda}"
read -r -a sizes <<<"${SIZES:-512x288 1920x1080:240}"
repeats="${REPEATS:-2}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
nproc | tee "$out/cores.txt"

python3 -m pytest -q -m gpu tests 2>&1 | tee "$out/gpu_tests.txt" || true
python3 benchmarks/bench_colorize.py --device "$device" --model lineart --sizes "${sizes[@]}" \
    --repeats "$repeats" --json "$out/results-colorize-$device.json" |
    tee "$out/bench_colorize.txt"
python3 benchmarks/bench_temporal.py --device "$device" --model lineart --repeats "$repeats" \
    --json "$out/results-temporal-$device.json" | tee "$out/bench_temporal.txt"
