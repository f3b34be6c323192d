"""Small measuring helpers for tests (ffmpeg has no ffprobe here, so framecrc it is)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path


def stream_duration(path: Path, ffmpeg: str, selector: str) -> float:
    """Duration in seconds of the stream ``selector`` (e.g. ``0:a:0``): last pts + duration."""
    result = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", selector,
         "-c", "copy", "-f", "framecrc", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    time_base = Fraction(1)
    first, end = None, 0
    for line in result.stdout.decode().splitlines():
        if line.startswith("#tb"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            _, _, pts, duration, *_ = (p.strip() for p in line.split(","))
            first = int(pts) if first is None else min(first, int(pts))
            end = max(end, int(pts) + int(duration))
    return float((end - (first or 0)) * time_base)


def audio_stream_count(path: Path, ffmpeg: str) -> int:
    result = subprocess.run(
        [ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, check=False
    )
    return result.stderr.decode().count(": Audio:")
