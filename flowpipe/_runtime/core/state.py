"""What every worker of one run shares: the first error, the stop switch, gates.

A run *stops* once: on its first error (``fail``), when the caller closes it,
or when it is garbage collected. Stopping aborts every channel and gate, so
each worker blocked on one wakes with ``Aborted`` and leaves its loop; the
``on_stop`` hooks run once, then; the ``cleanups`` run once every worker has
left (``run.run_cleanups``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..._errors import StageError
from ..._transport.buffer import Aborted, Channel
from .release import Releaser

# Opens the handles (shared-memory frames, object references) that items may be
# while they travel through the caller's process; set by the backends that make them.
Opener = Callable[[list[Any]], list[Any]]


class RunState:
    """What every worker of one run shares: the first error and the stop switch."""

    __slots__ = (
        "_lock",
        "_releaser",
        "channels",
        "cleanups",
        "error",
        "gates",
        "on_stop",
        "open_handles",
        "stacks",
        "stopped",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.stopped = False
        self.channels: list[Channel] = []
        self.gates: list[Gate] = []
        # Backends hook in here: ``on_stop`` runs when the run is stopped (end
        # busy worker processes), ``cleanups`` once every worker has left.
        self.on_stop: list[Callable[[], None]] = []
        self.cleanups: list[Callable[[], None]] = []
        # Set when the plan says items reaching this process may be handles
        # (``EdgePlan.handles``): whatever runs here opens them before use.
        self.open_handles: Opener | None = None
        # Set (empty) when the run watches for stalls: workers elsewhere register
        # how to read their stacks (``id(worker)`` -> a function returning the text).
        self.stacks: dict[int, Callable[[], str]] | None = None
        self._releaser: Releaser | None = None

    def activity(self) -> list[int]:
        """Each channel's ``moved`` count: a change means some item moved."""
        return [ch.moved for ch in self.channels]

    def releaser(self) -> Releaser:
        """The run's releaser thread (``release``), closed with the run's cleanups."""
        with self._lock:
            if self._releaser is None:
                self._releaser = Releaser()
                self.cleanups.append(self._releaser.close)
            return self._releaser

    def channel(self, capacity: int | None, overflow: str = "block", name: str = "") -> Channel:
        ch = Channel(capacity, overflow, name=name)
        self.channels.append(ch)
        return ch

    def gate(self, limit: int) -> Gate:
        g = Gate(limit)
        self.gates.append(g)
        return g

    def fail(self, exc: BaseException) -> None:
        """Record the first error and stop everything; later errors are consequences.

        A ``StageError`` is raised again in the caller's thread: the worker's frames
        that led to it are flowpipe's plumbing (its ``__cause__`` has the user's), so
        its traceback will show only the caller's way into flowpipe."""
        if isinstance(exc, StageError):
            exc.__traceback__ = None
        with self._lock:
            if self.error is None and not self.stopped:
                self.error = exc
        self.stop()

    def stop(self) -> None:
        with self._lock:
            first = not self.stopped
            self.stopped = True
        for ch in self.channels:
            ch.abort()
        for g in self.gates:
            g.abort()
        if first:
            for hook in list(self.on_stop):
                hook()


class Gate:
    """A counter of slots with a limit; ``acquire`` blocks while full, abortable."""

    __slots__ = ("_aborted", "_cond", "_used", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._aborted = False
        self._cond = threading.Condition(threading.Lock())

    def acquire(self) -> None:
        with self._cond:
            while self._used >= self.limit and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted
            self._used += 1

    def try_acquire(self) -> bool:
        """Take a slot if one is free now; never waits."""
        with self._cond:
            if self._aborted:
                raise Aborted
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    def release(self, n: int = 1) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()

    def wait_empty(self) -> None:
        with self._cond:
            while self._used and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()


def start_thread(name: str, target: Callable[..., object], *args: object) -> threading.Thread:
    """A daemon thread named ``flowpipe-<name>``, started: a stage stuck in user code
    never keeps the interpreter alive (``Run.close`` still joins every one it can)."""
    thread = threading.Thread(target=target, args=args, name=f"flowpipe-{name}", daemon=True)
    thread.start()
    return thread


def start_worker_threads(
    label: str, run_worker: Callable[[int], None], count: int
) -> list[threading.Thread]:
    """One thread per worker loop of a stage: every backend's loops run in threads here."""
    return [start_thread(f"{label}-{wid}", run_worker, wid) for wid in range(count)]
