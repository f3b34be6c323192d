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

# The process group itself is shared with sharded colorizing (pipeline/shard.py), so it lives a
# layer down; training imports it from here.
from celpaint.device import Dist, distributed_setup

__all__ = ["Dist", "distributed_setup", "stop_on_signals"]


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
