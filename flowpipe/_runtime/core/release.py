"""A slice's computed outputs handed on while the slice still runs, once its calls turn slow.

A worker takes cheap items in slices of hundreds (``shaping.SliceSizer``):
one hand-off per slice is what keeps the per-item cost low. But when a later
item of a slice is slow (items 200-203 take a second each), the outputs
computed before it would wait for it. So a slice of a function stage is
*watched*: its outputs are appended to ``Watch.out`` as they are computed,
and a releaser thread (one per run, and one per worker process or actor) looks at the
watched slices: each look says when that slice is due again, and the thread sleeps until the
first is (never less than ``TICK_SECONDS``). A slice that keeps making progress is due a
``SLOW_CALL_SECONDS`` after its last new output was seen, so while calls are quick the thread
wakes about every ``SLOW_CALL_SECONDS``, and an output computed just before a slow call leaves
within about two of them::

    worker thread: call, call, call (slow .........)   finish(): the rest
                          │                                ▲
    releaser:  look  look │ look: no new output for         │
                          │ SLOW_CALL_SECONDS: part(out[sent:n]) ──► hand on

A slice whose calls keep making progress is left alone (one hand-off, as
before); one with a call running longer than ``SLOW_CALL_SECONDS``, or whose
held outputs wait longer than ``HOLD_SECONDS``, hands on what it has through
the same *part* sink a generator stage streams through (``parts.PartSink``
here, ``PartOutputs`` from a worker elsewhere). A part sink may answer
``False``: not now (an earlier slice is not out yet); the releaser tries
again at its next look. The releaser's thread ends with its run
(``close``), or once no slice has been watched for ``IDLE_SECONDS`` (it
starts again with the next watch).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

TICK_SECONDS = 0.002  # the releaser looks at the watched slices at most this often
SLOW_CALL_SECONDS = 0.005  # a call running this long without an output is slow
HOLD_SECONDS = 0.1  # outputs held longer than this leave whatever the calls do
IDLE_SECONDS = 0.05  # the releaser's thread ends after this long with nothing to watch

# Hands outputs on while their slice runs; ``False``: not now, try again later; an int
# (not a bool): only that many of them left now (a keyed slice's, run by run).
Release = Callable[[list[Any]], "bool | int | None"]


class Watch:
    """The outputs of one slice being called, which the releaser may hand on early.

    The calling thread only appends to ``out`` (the releaser reads its length
    and copies a prefix: both atomic under the GIL); ``lock`` orders a release
    against ``finish``, so every output leaves exactly once, in order.
    """

    __slots__ = ("changed", "done", "error", "lock", "out", "release", "seen", "sent", "since")

    def __init__(self, release: Release) -> None:
        self.release = release
        self.out: list[Any] = []
        self.sent = 0  # outputs of ``out`` handed on already
        self.seen = 0  # ``len(out)`` at the releaser's last look
        self.changed = self.since = time.perf_counter()  # last new output; last hand-off
        self.lock = threading.Lock()
        self.done = False
        self.error: BaseException | None = None

    def look(self, now: float) -> float:
        """The releaser's look: hand on what is held if the current call is slow. Returns
        when this slice needs the next look (``Releaser`` sleeps until the earliest)."""
        n = len(self.out)
        if n != self.seen:
            self.seen, self.changed = n, now
        if n <= self.sent:  # nothing held: what comes next is seen within a slow call's time
            return now + SLOW_CALL_SECONDS
        due = min(self.changed + SLOW_CALL_SECONDS, self.since + HOLD_SECONDS)
        if now < due:
            return due
        with self.lock:
            if self.done or self.error is not None:
                return now + SLOW_CALL_SECONDS
            n = len(self.out)
            try:
                handed = self.release(self.out[self.sent : n])
            except BaseException as exc:  # the run stopped, an output cannot be sent
                self.error = exc
                return now + SLOW_CALL_SECONDS
            if handed is False:  # an earlier slice is not out yet: try again soon
                return now + TICK_SECONDS
            if type(handed) is int:  # only the first ``handed`` could leave now
                self.sent += handed
                if handed:
                    self.since = now
                return now + TICK_SECONDS
            self.sent, self.since = n, now
            return now + SLOW_CALL_SECONDS

    def finish(self) -> list[Any]:
        """The slice ended: the outputs not handed on yet (a release's error is raised)."""
        with self.lock:
            self.done = True
            if self.error is not None:
                raise self.error
            return self.out[self.sent :] if self.sent else self.out


class Releaser:
    """The thread that looks at every watched slice: one per run for the slices called
    in the caller's process (closed with the run), one per worker process or actor."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._watches: list[Watch] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, watch: Watch) -> None:
        with self._cond:
            self._watches.append(watch)
            # No wake-up: the thread looks at its next tick (a wake-up per slice would
            # cost the cheap stages more than the looks do).
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="flowpipe-releaser", daemon=True
                )
                self._thread.start()

    def remove(self, watch: Watch) -> None:
        with self._cond:
            self._watches.remove(watch)

    def close(self) -> None:
        """End the thread (every slice it watched has ended)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(1.0)

    def _run(self) -> None:
        cond = self._cond
        idle_since: float | None = None
        while True:
            with cond:
                if self._closed:
                    self._thread = None
                    return
                if not self._watches:
                    now = time.perf_counter()
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= IDLE_SECONDS:
                        self._thread = None
                        return
                    cond.wait(TICK_SECONDS)
                    continue
                idle_since = None
                watches = self._watches[:]
            now = time.perf_counter()
            # Sleep until the first watched slice is due: a slice whose calls keep
            # making progress is next due a slow call's time after its last output
            # was seen, so the thread wakes about every SLOW_CALL_SECONDS, not every tick.
            due = min([watch.look(now) for watch in watches])
            with cond:
                if not self._closed:
                    cond.wait(max(TICK_SECONDS, due - time.perf_counter()))


releaser = Releaser()  # a worker process's or actor's (a run has its own: ``RunState``)
