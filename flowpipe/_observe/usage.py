"""What a worker itself used: CPU time, time waiting for a core, memory.

Read where the worker runs, cheaply, and only where the system tells:

- ``ThreadClock``: the calling thread's own CPU time (``time.thread_time``)
  and, on Linux, the time it was ready to run but waited for a core
  (``/proc/thread-self/schedstat``, sampled). A thread worker reads it around
  its calls: other threads' and other programs' work is not in it. A thread
  starved by other programs' load waits for a core; a thread waiting for the
  GIL, for I/O or in ``sleep`` is not runnable, and does not: that is what
  tells native code on a busy machine from Python holding the GIL;
- ``process_cpu()``: this process's CPU time (a worker process reports it with
  each answer, with its ``ThreadClock``'s wait for a core);
- ``resident_bytes()``: this process's resident memory (``/proc/self/statm``;
  elsewhere its peak, from ``resource``), ``None`` where neither is known: a
  worker process reports it with each answer.
"""

from __future__ import annotations

import os
import sys
import time

process_cpu = time.process_time


SAMPLE_SECONDS = 0.05  # a thread reads its wait for a core at most this often


class ThreadClock:
    """Times one thread's calls: their CPU time, and their wait for a core.

    Made, used and closed by the thread it times. The CPU clock
    (``time.thread_time``) is read around every call; it keeps the GIL. The wait
    for a core is read from ``schedstat`` around one call every
    ``SAMPLE_SECONDS`` only, since reading a file lets other threads take the
    GIL; each call's wait is estimated from the share of the sampled calls' time
    spent waiting (``None`` where it cannot be read).
    """

    __slots__ = ("cpu0", "fd", "last", "q0", "sampled", "t0", "waited", "wall_end")

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except (OSError, AttributeError):  # not Linux (or Linux before 3.17)
            self.fd = None
        self.last = -SAMPLE_SECONDS  # when the wait for a core was last read
        self.waited = self.sampled = 0.0  # seconds waiting, of seconds sampled
        self.t0 = self.cpu0 = self.wall_end = 0.0
        self.q0: float | None = None

    @property
    def wall(self) -> float:
        """Seconds the last call took."""
        return self.wall_end - self.t0

    def _queued(self) -> float | None:
        assert self.fd is not None
        try:
            return int(os.pread(self.fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return None

    def begin(self) -> None:
        """A call starts."""
        self.t0 = time.perf_counter()
        self.cpu0 = time.thread_time()
        sample = self.fd is not None and self.t0 - self.last >= SAMPLE_SECONDS
        self.q0 = self._queued() if sample else None

    def end(self) -> tuple[float, float | None]:
        """The call ended: its CPU seconds, and its seconds waiting for a core (its
        seconds in all: ``wall``)."""
        cpu = time.thread_time() - self.cpu0
        t1 = self.wall_end = time.perf_counter()
        if self.q0 is not None:
            q1 = self._queued()
            if q1 is not None:
                self.waited += q1 - self.q0
                self.sampled += t1 - self.t0
            self.last, self.q0 = t1, None
        if self.sampled <= 0:
            return cpu, None
        return cpu, (t1 - self.t0) * min(1.0, self.waited / self.sampled)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


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
