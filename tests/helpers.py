"""Small measuring helpers for tests (ffmpeg has no ffprobe here, so framecrc it is)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
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


def ffmpeg_children() -> list[int]:
    """PIDs of ffmpeg processes started by this test process (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children += (task / "children").read_text().split()
        except OSError:
            continue
    found = []
    for pid in children:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "ffmpeg" in name and state != "Z":
            found.append(int(pid))
    return found


def assert_nothing_left(threads_before: set[threading.Thread]) -> None:
    # The stderr drains of killed ffmpeg processes end a moment after the pipe closes, so
    # poll briefly for them rather than failing on a race that is not a leak.
    deadline = time.monotonic() + 10
    while True:
        extra = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = ffmpeg_children()
        if (not extra and not children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert extra == [], f"threads left behind: {extra}"
    assert children == [], f"ffmpeg processes left behind: {children}"


class Killed(BaseException):
    """The process dies here: no ``except Exception`` handler sees it."""


def die_at(monkeypatch, k: int) -> list[str]:
    """From the ``k``-th call on, every rename and tree removal fails as if the process had
    been killed at that call (so clean-up handlers cannot repair anything either). Returns
    the names of the calls made."""
    calls: list[str] = []
    for module, name in ((os, "replace"), (os, "rename"), (shutil, "rmtree")):
        original = getattr(module, name)

        def patched(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            if len(calls) >= k:
                raise Killed(f"killed at {_name} (call {len(calls)})")
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, patched)
    return calls


def load_script(name: str):
    """Import ``scripts/NAME.py`` (a script, not a package module) as the module ``NAME``."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered before running: dataclasses look their module up while the class is built.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
