"""Running under ``torchrun`` and stopping on signals.

Under ``torchrun`` (``WORLD_SIZE`` > 1) a run uses DistributedDataParallel (gloo on the CPU,
nccl on CUDA), a distributed sampler, SyncBatchNorm on CUDA only (on the CPU each process keeps
its own batch statistics; the buffers of rank 0 are broadcast at each forward), and only rank 0
writes files or reports progress.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@contextmanager
def stop_on_signals(stop: threading.Event, on_stop: Callable[[], None]):
    """First SIGINT/SIGTERM: ask the loop to stop after the current step; second: raise."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            return
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        on_stop()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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

    def gather_errors(self, error: BaseException | None) -> list[tuple[int, str]]:
        """``(rank, message)`` of every process whose preparation failed."""
        if not self.enabled:
            return [(0, str(error))] if error is not None else []
        messages: list[str | None] = [None] * self.world_size
        torch.distributed.all_gather_object(messages, None if error is None else str(error))
        return [(rank, m) for rank, m in enumerate(messages) if m is not None]


def distributed_setup(device_text: str) -> tuple[Dist, str]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)
    if there is one; returns this process's ``Dist`` and its device (``cuda:LOCAL_RANK`` or cpu).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(), device_text
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_text.startswith("cuda") or (
        device_text == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        device_text = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    else:
        device_text = "cpu"
    owns = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return Dist(rank, world_size, local_rank, owns), device_text
