"""Precise timers for the threads that run stages: a stage's ``sleep`` ends when asked.

Linux may fire a thread's timers up to its *timer slack* late (50 µs by
default), so as to wake the CPU for several at once. A stage that paces
itself (a camera read at 30 fps, a rate limit, a poll with a timeout) waits
that much longer than it asked, every time: ``time.sleep(0.002)`` took
2.095 ms here (median of 300, 2-core VM), and 2.061 ms with a slack of 1 µs.
Four workers sleeping 2 ms per item then lose 1.6% of their throughput to
the slack alone (``python -m benchmarks --scenario sleep-w4``, issue 21).

So every thread that flowpipe starts to run stage code (``state.start_thread``)
and a worker process's calling thread ask for a slack of ``SLACK_NS``. It is
set per thread, through ``/proc/<tid>/timerslack_ns``; where that cannot be
written (not Linux, or no ``/proc``), nothing changes. A thread of the
caller's own keeps its slack.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

SLACK_NS = 1000  # 1 µs: timers fire about on time; a busy CPU still decides when


def precise_timers() -> None:
    """Ask the kernel to fire the calling thread's timers within ``SLACK_NS``."""
    try:
        with open(f"/proc/{threading.get_native_id()}/timerslack_ns", "w") as f:
            f.write(str(SLACK_NS))
    except (OSError, AttributeError):  # not Linux, no /proc, or not allowed
        pass


def with_precise_timers(target: Callable[..., object], *args: object) -> None:
    """``target(*args)`` with precise timers: a thread's body (``start_thread``)."""
    precise_timers()
    target(*args)
