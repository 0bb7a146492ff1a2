"""What a worker itself used: CPU time, time waiting for a core, memory.

Read where the worker runs, cheaply, and only where the system tells:

- ``thread_cpu()``: the calling thread's own CPU clock (a thread worker times its
  calls with it; other threads' and other programs' work is not in it);
- ``process_cpu()``: this process's CPU time (a worker process reports it with
  each answer);
- ``run_queue_wait(tid)``: seconds a thread of this process was ready to run but
  waited for a core (Linux ``schedstat``): a thread starved by other programs'
  load waits there, a thread waiting for the GIL or for I/O sleeps instead,
  which is what tells native code on a busy machine from Python holding the GIL;
- ``resident_bytes()``: this process's resident memory (``/proc/self/statm``;
  elsewhere its peak, from ``resource``), ``None`` where neither is known: a
  worker process reports it with each answer.
"""

from __future__ import annotations

import os
import sys
import threading
import time

thread_cpu = time.thread_time
process_cpu = time.process_time
native_id = threading.get_native_id


def run_queue_wait(tid: int) -> float | None:
    """Seconds thread ``tid`` of this process spent runnable, waiting for a core."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):  # not Linux, or the thread has ended
        return None


def resident_bytes() -> int | None:
    """This process's resident set size in bytes (its peak where only that is known)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError, AttributeError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; else KiB
