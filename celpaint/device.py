"""Device and precision choice, the cores this process may use, and thread-count contexts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Literal

import cv2
import torch

Precision = Literal["auto", "fp32", "fp16", "bf16"]


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; explicit devices are checked.

    Raises:
        ValueError: not a device, or not present here; the message names the option to fix
            (callers turn it into an ``InputError``).
    """
    text = str(device)
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise ValueError(
            f"--device {text!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {text}: no CUDA GPU is available; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are present"
            )
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"--device {text}: Apple MPS is not available; use --device cpu")
    elif resolved.type != "cpu":
        raise ValueError(f"--device {text!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp16 on CUDA and fp32 elsewhere.

    Raises:
        ValueError: an unknown precision, or fp16 on the CPU.
    """
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in _DTYPES:
        raise ValueError(f"--precision {precision!r} is unknown; use auto, fp32, fp16 or bf16")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("--precision fp16 needs a GPU; on the CPU use fp32 (or bf16)")
    return _DTYPES[precision]


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error)
    )


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def thread_count(threads: int | None, get: Callable[[], int], set_: Callable[[int], None]):
    """``set_(threads)`` for the duration (restoring ``get()``'s value), unless None."""
    if threads is None:
        yield
        return
    previous = get()
    set_(threads)
    try:
        yield
    finally:
        set_(previous)


def torch_threads(threads: int | None):
    """Set torch's intra-op threads (process-wide) for the duration, unless None."""
    return thread_count(threads, torch.get_num_threads, torch.set_num_threads)


def opencv_threads(threads: int | None):
    """Cap OpenCV's thread pool (process-wide) for the duration, unless ``threads`` is None.

    A generator on the CPU already keeps every core busy with torch's threads, so OpenCV
    fanning the smoothing out over the same cores only adds synchronisation: at 512x288 on 2
    cores it cost about 5 ms of CPU per frame (a quarter of the smoothing stage) for no speed.
    """
    return thread_count(threads, cv2.getNumThreads, cv2.setNumThreads)
