"""Device and precision choice, the cores this process may use, thread-count contexts, and this
process's place in a run that ``torchrun`` started (``Dist``)."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
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
    """CPU cores this process may run on: its affinity, shared evenly among the processes
    ``torchrun`` started on this machine (``LOCAL_WORLD_SIZE``), at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // local_world_size())


def local_world_size() -> int:
    """How many processes of this run ``torchrun`` started on this machine (1 without it)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


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


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world_size`` processes (one when not
    distributed); ``owns_group``: the run initialised the process group and destroys it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process if ``flag`` is True on any (so all stop at the same step)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def gather(self, value) -> list:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        if not self.enabled:
            return [value]
        values: list = [None] * self.world_size
        torch.distributed.all_gather_object(values, value)
        return values

    def gather_errors(self, error: BaseException | None) -> list[tuple[int, str]]:
        """``(rank, message)`` of every process whose preparation failed."""
        messages = self.gather(None if error is None else str(error))
        return [(rank, m) for rank, m in enumerate(messages) if m is not None]

    def close(self) -> None:
        """Leave the process group if this run initialised it."""
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def world_size() -> int:
    """How many processes ``torchrun`` started for this run (``WORLD_SIZE``; 1 without it)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    """This process's rank in a ``torchrun`` run (``RANK``; 0 without it)."""
    try:
        return max(0, int(os.environ.get("RANK", "0")))
    except ValueError:
        return 0


def rank_device(device_text: str) -> str:
    """``--device`` for this process of a ``torchrun`` run: its own GPU (``cuda:LOCAL_RANK``)
    for ``cuda``, ``cuda:N`` and ``auto`` where CUDA is available, else the CPU. With more
    processes on the machine than GPUs they take turns (``LOCAL_RANK`` modulo the GPU count),
    so several share a GPU. Unchanged outside ``torchrun``."""
    if world_size() <= 1:
        return device_text
    if device_text.startswith("cuda") or (device_text == "auto" and torch.cuda.is_available()):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        gpus = torch.cuda.device_count()
        return f"cuda:{local_rank % gpus if gpus else local_rank}"
    return "cpu"


def distributed_setup(
    device_text: str, backend: str | None = None, timeout: datetime.timedelta | None = None
) -> tuple[Dist, str]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    and its rendezvous for several machines) if there is one; returns this process's ``Dist``
    and its device (``cuda:LOCAL_RANK``, or cpu).

    Args:
        device_text: ``--device``; ``auto`` and ``cuda`` become this process's own GPU.
        backend: the process group's backend; None: nccl on CUDA, gloo on the CPU.
        timeout: how long a collective waits for the slowest process (torch's default if None).

    Raises:
        ValueError: NCCL with more processes on this machine than it has GPUs.
    """
    size = world_size()
    if size <= 1:
        return Dist(), device_text
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device_text = rank_device(device_text)
    use_cuda = device_text.startswith("cuda")
    backend = backend or ("nccl" if use_cuda else "gloo")
    gpus = torch.cuda.device_count() if use_cuda else 0
    if backend == "nccl" and 0 < gpus < local_world_size():
        raise ValueError(
            f"torchrun started {local_world_size()} processes on this machine but it has {gpus} "
            f"GPU(s), and NCCL needs a GPU of its own for each: use --nproc-per-node {gpus}"
        )
    if use_cuda:
        torch.cuda.set_device(torch.device(device_text))
    owns = False
    if not torch.distributed.is_initialized():
        options = {"timeout": timeout} if timeout is not None else {}
        torch.distributed.init_process_group(backend=backend, **options)
        owns = True
    return Dist(rank, size, local_rank, owns), device_text
