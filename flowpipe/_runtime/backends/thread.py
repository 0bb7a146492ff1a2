"""The thread backend: every worker is a daemon thread of this process.

::

    caller thread                 worker threads (one per stage worker)
    ─────────────                 ─────────────────────────────────────
    Run.__next__ ◄── Channel ◄── [stage N] ◄── Channel ◄── ... ◄── [stage 1] ◄── Channel ◄── feeder thread ◄── source
                      (output)     xW threads       (stage N's buffer)                           (reads lazily)

Right for I/O and for native code that releases the GIL (NumPy, OpenCV,
PyTorch). Threads are daemons so that a stage stuck in user code never keeps
the interpreter alive; ``Run.close`` still joins every one it can. Each
worker runs the core's loop with a ``LocalCaller``: the stage is called in
the worker thread itself.
"""

from __future__ import annotations

from ..._plan.edges import Capabilities
from ..core.loop import StageRun
from ..core.state import start_worker_threads
from .base import Backend, Worker


class ThreadBackend(Backend):
    name = "thread"
    capabilities = Capabilities(
        in_caller=True, on_this_machine=True, returns_handles=False, seals_slices=False
    )

    def start_stage(self, stage_run: StageRun) -> list[Worker]:
        return [
            *start_worker_threads(
                stage_run.node.label, stage_run.run_worker, len(stage_run.counters)
            )
        ]


backend_class = ThreadBackend
