"""The thread backend: every worker is a daemon thread of this process.

::

    caller thread                 worker threads (one per stage worker)
    ─────────────                 ─────────────────────────────────────
    Run.__next__ ◄── Channel ◄── [stage N] ◄── Channel ◄── ... ◄── [stage 1] ◄── Channel ◄── feeder thread ◄── source
                      (output)     xW threads       (stage N's buffer)                           (reads lazily)

Right for I/O and for native code that releases the GIL (NumPy, OpenCV,
PyTorch). Threads are daemons so that a stage stuck in user code never keeps
the interpreter alive; ``Run.close`` still joins every one it can.
"""

from __future__ import annotations

import threading

from .base import Backend, Worker
from .engine import StageRun


def start_thread(name: str, target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=f"flowpipe-{name}", daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def start_worker_threads(stage_run: StageRun) -> list[Worker]:
    """One thread per worker loop of the stage; every backend's loops run in threads here."""
    label = stage_run.node.label
    return [
        start_thread(f"{label}-{wid}", stage_run.run_worker, wid)
        for wid in range(len(stage_run.counters))
    ]


class ThreadBackend(Backend):
    name = "thread"

    def start_stage(self, stage_run: StageRun) -> list[Worker]:
        return start_worker_threads(stage_run)


backend_class = ThreadBackend
