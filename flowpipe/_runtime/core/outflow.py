"""A generator stage's outputs, handed on in parts while the generator runs.

A generator stage may yield any number of outputs for one input: every frame
of a video, or an endless stream from a camera. Collecting them all before
handing them on would hold the whole video in memory and never deliver the
first output of an endless one. An input's first outputs are pulled in one
``islice`` of ``Pace.few`` (one more than the inputs before it gave, when they
were quick): most inputs end there, for the cost of one ``islice``. An input
that gives more hands on what is held at once, then ``OutputFlow.drain``
pulls the rest in chunks that start at one output and grow while a chunk
takes less than ``CHUNK_SECONDS`` (so a slow generator, a camera, is pulled
one output at a time), and hands on what it holds (``part(outputs)``) once
``FLUSH_SECONDS`` have passed since the last hand-off, or once it holds
``MAX_HELD`` outputs or ``MAX_HELD_BYTES`` of large buffers. An input whose outputs all come in one chunk (the common
case: a few outputs each) costs one ``islice`` more than a plain loop, and its
outputs leave with the slice, whose size the worker loop already bounds. Handing on waits while the next stage's buffer is full, and
the generator waits with it: memory stays bounded by the buffers.

A failed attempt's outputs that were not handed on yet are dropped; those
already handed on stay. A retry runs the generator again from the start and
skips as many outputs as the failed attempt handed on, so nothing is
duplicated (as long as the generator yields the same outputs again). The
same holds across workers: a slice run again after its worker process died
starts with ``skip``, the number of its outputs handed on before the crash.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..._transport.buffer import payload_bytes

CHUNK_SECONDS = 0.001  # a chunk pulled in one go takes about this long
FLUSH_SECONDS = 0.01  # outputs wait at most about this long (at the generator's pace)
MAX_CHUNK = 1024  # outputs pulled in one go at most
MAX_FEW = 128  # outputs an input's first pull takes at most
MAX_HELD = 4096  # outputs of one input held before they are handed on, whatever the time
MAX_HELD_BYTES = 8 << 20  # ... or large buffers (NumPy arrays, bytes): one 1080p frame


class HandOnFailed(BaseException):
    """Internal: handing outputs on failed (the run stopped, an output cannot be sent).

    A ``BaseException``, so that a stage's error policy never takes it for an
    error of the stage; ``SliceCaller`` raises its ``__cause__`` instead.
    """


def close_generator(it: Any) -> None:
    """Run a generator's cleanup (``finally``, ``with``) now, in this thread: its run
    stopped while it was paused at a ``yield`` (left to garbage collection, a cycle of
    frames and exceptions keeps it open until some later collection, or for ever in a
    worker process that exits without one). An error of the cleanup is the stage's to
    report, not ours: the run is ending already."""
    close = getattr(it, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass


class Pace:
    """How many outputs an input's first pull takes; one per stage worker."""

    __slots__ = ("few",)

    def __init__(self) -> None:
        self.few = 1

    def quick_input(self, outputs: int) -> None:
        """An input gave ``outputs`` quickly: the next input's first pull may take them
        all, if they are few (a first pull waits for all it takes: the next input may
        be a slow generator)."""
        if self.few <= outputs < MAX_FEW:
            self.few = outputs + 1


def next_chunk(n: int, seconds: float) -> int:
    """A full chunk of ``n`` outputs took ``seconds``: grow by at most 2x, shrink at once."""
    if seconds <= 0:
        return min(MAX_CHUNK, n * 2)
    return max(1, min(int(n * CHUNK_SECONDS / seconds), n * 2, MAX_CHUNK))


class OutputFlow:
    """The outputs of one slice of a generator stage, on their way out.

    ``part`` is None when nothing is handed on before the slice ends (all
    outputs are then returned by ``rest``).
    """

    __slots__ = ("last", "mark", "out", "pace", "part", "sent", "skip")

    def __init__(self, part: Callable[[list[Any]], None] | None, pace: Pace, skip: int = 0) -> None:
        self.part = part
        self.pace = pace
        self.skip = skip  # outputs of this slice handed on elsewhere already: drop them
        self.out: list[Any] = []
        self.mark = 0  # where the current input's outputs start in ``out``
        self.sent = 0  # outputs of the current input already handed on
        self.last = time.perf_counter()

    def begin(self) -> None:
        """An input starts that may yield many outputs (``drain`` follows)."""
        self.mark = len(self.out)
        self.sent = 0

    def many(self, before: int, it: Iterator[Any] | None) -> None:
        """The input whose outputs start at ``before`` in ``out`` gives more than its
        first pull took: hand on what is held now (its first outputs must not wait
        for a generator that may be slow to give the next), then ``drain`` ``it``."""
        self.mark, self.sent = before, 0
        if self.part is not None:
            try:
                self._flush(time.perf_counter())
            except HandOnFailed:
                close_generator(it)
                raise

    def drain(self, it: Iterator[Any], fresh: bool = True) -> None:
        """Pull one attempt's outputs, handing them on as they come; ``fresh``: a new
        attempt (not the rest of one whose first outputs were taken already). When
        they cannot be handed on (the run stopped), ``it`` is closed."""
        try:
            self._drain(it, fresh)
        except HandOnFailed:
            close_generator(it)
            raise

    def _drain(self, it: Iterator[Any], fresh: bool) -> None:
        if fresh and self.sent:  # a retry: the failed attempt handed these on already
            deque(itertools.islice(it, self.sent), maxlen=0)
        clock, part, out = time.perf_counter, self.part, self.out
        started, given = clock(), len(out) - self.mark + self.sent
        n = 1
        while True:
            t0 = clock()
            got: list[Any] = list(itertools.islice(it, n))
            now = clock()
            if self.skip and got:
                k = min(self.skip, len(got))
                self.skip -= k
                self.sent += k  # handed on, by the worker before: a retry skips them too
                self.out += got[k:]
            else:
                out += got
            if len(got) < n:  # the end
                if now - started < CHUNK_SECONDS:
                    self.pace.quick_input(given + len(got))
                return
            given += n
            n = next_chunk(n, now - t0)
            if part is not None and (
                now - self.last >= FLUSH_SECONDS
                or len(out) >= MAX_HELD
                or payload_bytes(got[0]) * len(out) >= MAX_HELD_BYTES
            ):
                self._flush(now)

    def failed(self) -> None:
        """The current attempt raised: drop its outputs not handed on yet."""
        del self.out[self.mark :]

    def rest(self) -> list[Any]:
        """The outputs not handed on yet, at the end of the slice."""
        return self.out

    def _flush(self, now: float) -> None:
        out = self.out
        self.sent += len(out) - self.mark
        self.mark, self.last = 0, now
        part = out[:]  # ``out`` stays the same list: callers may hold it
        out.clear()
        assert self.part is not None
        try:
            self.part(part)
        except BaseException as exc:
            raise HandOnFailed from exc
