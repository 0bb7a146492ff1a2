"""Stall detection: ``stall_timeout=S`` on ``run``/``iter``/``start``.

A watch thread (started only when asked for) looks at the run a few times per
``S``. Progress is any item moving: taken from or put into a channel, or a
slice finished by a worker. When nothing moved for ``S`` seconds while work
remains (an item waits in a channel, a worker is inside a call, or the source
is still being read), and the caller is not the one holding the run up (the
output channel is not full), the run is *stalled*: the watch logs one warning
that names the stalled stage(s), with the stack of every thread of this
process and of every worker process (``RunState.stacks``: the process
backend asks each worker for its stacks through ``faulthandler``), or, with
``on_stall="raise"``, fails the run with ``flowpipe.Stalled``. One report per
stall: the watch reports again only after the run moved again.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ..._errors import RunOptionError, Stalled
from .state import RunState, start_thread

if TYPE_CHECKING:
    from ..._transport.buffer import Channel
    from ..backends.base import Worker
    from .closing import Owner
    from .meter import Part

logger = logging.getLogger("flowpipe")
ON_STALL = ("warn", "raise")


def stall_options(options: dict[str, Any]) -> tuple[float | None, bool]:
    """Pop ``stall_timeout`` and ``on_stall`` from a run's options, checked: the
    seconds (``None``: no watch) and whether a stall raises."""
    asked = "on_stall" in options
    seconds = options.pop("stall_timeout", None)
    on_stall = options.pop("on_stall", "warn")
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise RunOptionError(f"stall_timeout={seconds!r}: expected a positive number of seconds")
    if on_stall not in ON_STALL:
        raise RunOptionError(f"on_stall={on_stall!r}: expected 'warn' or 'raise'")
    if seconds is None and asked:
        raise RunOptionError("on_stall= needs stall_timeout= as well")
    return (None if seconds is None else float(seconds)), on_stall == "raise"


class StallWatch:
    """Watches one run for stalls; ``stop()`` ends the watch (a run's cleanup)."""

    def __init__(
        self,
        state: RunState,
        parts: list[Part],
        output: Channel,
        workers: list[Worker],
        owners: dict[int, Owner],
        seconds: float,
        raises: bool,
    ) -> None:
        self.state = state
        self.parts = [p for p in parts if p.channel is not None]
        self.output = output
        self.workers = workers
        self.owners = owners
        self.seconds = seconds
        self.raises = raises
        self.ended = threading.Event()
        self.thread = start_thread("stall-watch", self._watch)

    def stop(self) -> None:
        self.ended.set()
        if self.thread is not threading.current_thread():
            self.thread.join()

    def _watch(self) -> None:
        every = min(self.seconds / 4, 0.5)
        last, since, reported = self._activity(), time.monotonic(), False
        while not self.ended.wait(every):
            if self.state.stopped or not any(w.is_alive() for w in self.workers):
                return
            now, seen = time.monotonic(), self._activity()
            if seen != last or not self._work_remains():
                last, since, reported = seen, now, False
                continue
            if now - since >= self.seconds and not reported:
                reported = True
                self._report(now - since)

    def _activity(self) -> tuple[int, ...]:
        """What changes whenever an item moves: each channel's and worker's counts."""
        moved = self.state.activity()
        for part in self.parts:
            moved.extend(c.items_in + c.items_out for c in part.counters)
        return tuple(moved)

    def _work_remains(self) -> bool:
        if len(self.output) >= self.output.capacity:  # the caller is not reading: not a stall
            return False
        if any(len(p.channel) for p in self.parts if p.channel is not None):
            return True
        if any(c.calling for p in self.parts for c in p.counters):
            return True
        return self._source_alive()

    def _source_alive(self) -> bool:
        return any(
            w.is_alive() and (o := self.owners.get(id(w))) is not None and o.source
            for w in self.workers
        )

    def stalled_stages(self) -> list[str]:
        """The stages to blame: those inside a call; else the source, if it is still
        being read; else those with items waiting that none of their workers took."""
        now = time.perf_counter()
        calling = [
            f"{p.label} (inside a call for {now - started:.1f} s)"
            for p in self.parts
            if (started := min((c.calling for c in p.counters if c.calling), default=0.0))
        ]
        if calling:
            return calling
        for w in self.workers:
            owner = self.owners.get(id(w))
            if owner is not None and owner.source and w.is_alive():
                return [f"{owner.stage} (no item from the source)"]
        return [
            f"{p.label} ({len(p.channel)} items waiting in its buffer)"
            for p in self.parts
            if p.channel is not None and len(p.channel)
        ] or ["? (no stage is in a call and no items are waiting)"]

    def _report(self, idle: float) -> None:
        stages = self.stalled_stages()
        stacks = self._stacks()
        error = Stalled(stages, idle, stacks)
        if self.raises:
            self.state.fail(error)
        else:
            logger.warning("%s", error)

    def _stacks(self) -> str:
        """Every thread's stack here (but the watch's), then every worker process's."""
        import traceback  # only for a report

        frames = sys._current_frames()  # pyright: ignore[reportPrivateUsage]
        parts: list[str] = []
        for thread in threading.enumerate():
            frame = frames.get(thread.ident or -1)
            if frame is None or thread is threading.current_thread():
                continue
            stack = "".join(traceback.format_stack(frame))
            parts.append(f"thread {thread.name}:\n{stack}")
        for dump in list((self.state.stacks or {}).values()):
            try:
                parts.append(dump())
            except Exception as exc:  # a worker that just ended: say so, go on
                parts.append(f"(a worker's stack could not be read: {exc!r})\n")
        return "\n".join(parts)


def watch_stalls(
    state: RunState,
    parts: list[Part],
    output: Channel,
    workers: list[Worker],
    owners: dict[int, Owner],
    seconds: float | None,
    raises: bool,
) -> None:
    """Start a ``StallWatch`` for a started run (``seconds`` ``None``: none), ended
    with the run's cleanups."""
    if seconds is None:
        return
    watch = StallWatch(state, parts, output, workers, owners, seconds, raises)
    state.cleanups.insert(0, watch.stop)
