"""A bounded, closable, abortable channel of items between threads.

One channel is the input buffer of one stage (or of a join, or of the caller).
Producers ``put``/``put_many``; consumers ``take`` a *slice*: everything that is
ready, up to a size, without waiting to fill it (unless ``min_n`` asks to, as a
batch stage does). Each slice gets a sequence number and the offset of its first
item under the channel's lock, so a stage's workers can restore input order.

Invariants:
- ``len(items) <= capacity`` (overflow policies drop instead of growing).
- An automatic channel (``buffer=None``) sizes its capacity from the items it
  carries: up to ``AUTO_MAX_ITEMS`` small items, but only about ``AUTO_BYTES``
  of large buffers (NumPy arrays, bytes): 1024 ints, or ten 1080p frames.
- End of stream: every registered producer called ``close()`` and ``items`` is
  empty; ``take`` then returns ``None``.
- After ``abort()`` every blocked or later ``put``/``take`` raises ``Aborted``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal, cast

logger = logging.getLogger("flowpipe")
AUTO_MAX_ITEMS = 1024
AUTO_BYTES = 64 * 1024 * 1024


def payload_bytes(item: Any) -> int:
    """A cheap size estimate of an item: large buffers count, small objects count as 0."""
    size = getattr(item, "nbytes", None)
    if isinstance(size, int):
        return size
    if isinstance(item, (bytes, bytearray, str)):
        return len(item)
    if isinstance(item, (tuple, list)) and item:  # (frame_id, frame) pairs are common
        parts = cast("Sequence[object]", item)[:4]  # isinstance leaves the parts' type unknown
        return sum(payload_bytes(part) for part in parts if not isinstance(part, (tuple, list)))
    return 0


def auto_capacity(sample: Any) -> int:
    size = payload_bytes(sample)
    return AUTO_MAX_ITEMS if size <= 0 else max(2, min(AUTO_MAX_ITEMS, AUTO_BYTES // size))


class Aborted(Exception):
    """Internal: the run is stopping; the worker that sees this leaves quietly."""


class Channel:
    __slots__ = (
        "_aborted",
        "_auto",
        "_bundle_cap",
        "_first_arrival",
        "_getters",
        "_items",
        "_lock",
        "_next_seq",
        "_not_empty",
        "_not_full",
        "_open_producers",
        "_putters",
        "_taken",
        "_weighted",
        "capacity",
        "dropped",
        "name",
        "overflow",
        "peak",
    )

    def __init__(self, capacity: int | None, overflow: str = "block", *, name: str = "") -> None:
        self._auto = capacity is None
        self.capacity = AUTO_MAX_ITEMS if capacity is None else capacity
        self.overflow = overflow
        self.name = name
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._open_producers = 0
        self._aborted = False
        self._getters = 0
        self._putters = 0
        self._next_seq = 0
        self._taken = 0
        self._first_arrival = 0.0
        self._weighted = False
        self._bundle_cap = 0
        self.dropped = 0
        self.peak = 0

    # -- lifecycle ----------------------------------------------------------------
    def add_producer(self) -> None:
        """Register one more producer; the stream ends when each has called close()."""
        with self._lock:
            self._open_producers += 1

    def close(self) -> None:
        with self._lock:
            self._open_producers -= 1
            if self._open_producers <= 0:
                self._not_empty.notify_all()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def producers(self) -> int:
        """Producers registered and not yet closed."""
        return self._open_producers

    @property
    def moved(self) -> int:
        """A count that grows whenever an item is put, taken or dropped (read without
        the lock: a stall watch compares two readings)."""
        return self._next_seq + self._taken + len(self._items) + self.dropped

    def __len__(self) -> int:
        """Entries waiting: items, or bundles on a channel that carries bundles
        (as its capacity counts them)."""
        return len(self._items)

    def carry_bundles(self, capacity: int) -> None:
        """From now on every entry is a bundle of items (``wire.bundle``) between two
        worker processes: ``capacity`` counts bundles (fewer when they hold large
        buffers: about ``AUTO_BYTES`` in all), offsets count their items."""
        self._weighted = True
        self._auto = False
        self._bundle_cap = capacity
        self.capacity = capacity

    def unbound(self) -> None:
        """Lift the capacity: from now on producers never wait (a live run draining)."""
        with self._lock:
            self._auto = False
            self.capacity = sys.maxsize
            self._not_full.notify_all()

    # -- producing ----------------------------------------------------------------
    def put(self, item: Any) -> None:
        if self._auto:
            self.capacity = auto_capacity(item)
        with self._lock:  # fast path: room, nobody aborted
            if len(self._items) < self.capacity and not self._aborted:
                if not self._items:
                    self._first_arrival = time.perf_counter()
                self._items.append(item)
                if len(self._items) > self.peak:
                    self.peak = len(self._items)
                if self._getters:
                    self._not_empty.notify()
                return
        self.put_many((item,))

    def put_many(
        self, items: Sequence[Any], timeout: float | None = None, poll: float | None = None
    ) -> None:
        """Append items in order; block, drop the oldest or drop the newest when full.

        With ``timeout``, a blocked put gives up after that many seconds and
        raises ``TimeoutError``; the items before the one that found no room
        stay put (a single item is either put or not). With ``poll``, a wait
        lasts at most that long before it looks again (see ``take``).
        """
        if self._auto and items:
            self.capacity = auto_capacity(items[0])
        elif self._weighted and items:
            size = items[0].nbytes
            cap = self._bundle_cap
            self.capacity = cap if size <= 0 else max(2, min(cap, AUTO_BYTES // size))
        with self._lock:
            i, n = 0, len(items)
            give_up_at = None if timeout is None else time.perf_counter() + timeout
            while i < n:
                if self._aborted:
                    raise Aborted
                free = self.capacity - len(self._items)
                if free <= 0:
                    if self.overflow == "block":
                        wait = None
                        if give_up_at is not None:
                            wait = give_up_at - time.perf_counter()
                            if wait <= 0:
                                raise TimeoutError(f"no room in the buffer of {self.name!r}")
                        if poll is not None:
                            wait = poll if wait is None else min(wait, poll)
                        self._putters += 1
                        self._not_full.wait(wait)
                        self._putters -= 1
                        continue
                    free = self._make_room(n - i)
                    if free == 0:  # drop_newest: the rest of the items are discarded
                        self.dropped += n - i
                        return
                if not self._items:
                    self._first_arrival = time.perf_counter()
                part = items[i : i + free] if (i or n > free) else items
                self._items.extend(part)
                i += len(part)
                if len(self._items) > self.peak:
                    self.peak = len(self._items)
                if self._getters:
                    self._not_empty.notify()

    def wait_for_room(self) -> None:
        """Wait until a ``put`` would not block: room for an item, or a dropping policy."""
        with self._lock:
            while (
                self.overflow == "block" and len(self._items) >= self.capacity and not self._aborted
            ):
                self._putters += 1
                self._not_full.wait()
                self._putters -= 1
            if self._aborted:
                raise Aborted

    def _make_room(self, wanted: int) -> int:
        if self.dropped == 0:  # once per channel; the run logs the count when it ends
            logger.info(
                "stage %r: input buffer full (%d items), dropping inputs (overflow=%r)",
                self.name,
                self.capacity,
                self.overflow,
            )
        if self.overflow == "drop_newest":
            return 0
        # drop_oldest: keep the newest items; what is evicted is counted.
        evict = min(wanted, self.capacity, len(self._items))
        for _ in range(evict):
            self._items.popleft()
        self.dropped += evict
        return self.capacity - len(self._items)

    # -- consuming ----------------------------------------------------------------
    def take_ready(
        self, max_n: int, min_n: int = 1
    ) -> tuple[int, int, list[Any]] | Literal[False] | None:
        """``take`` without waiting: ``False`` when fewer than ``min_n`` items are ready
        now and the stream goes on."""
        with self._lock:
            if self._aborted:
                raise Aborted
            ready = len(self._items)
            if ready >= min_n or (ready and self._open_producers <= 0):
                return self._cut(ready, max_n)
            return False if self._open_producers > 0 else None

    def take(
        self,
        max_n: int,
        min_n: int = 1,
        timeout: float | None = None,
        give_up_at: float | None = None,
        poll: float | None = None,
    ) -> tuple[int, int, list[Any]] | None:
        """Take a slice ``(seq, offset, items)``; ``None`` at end of stream.

        Waits until ``min_n`` items are ready (or the stream ended). With
        ``timeout``, a partial slice is returned ``timeout`` seconds after its
        first item arrived (a batch's ``batch_timeout``). With ``give_up_at``
        (a ``time.perf_counter()`` instant), waiting past it for a first item
        raises ``TimeoutError`` (a live run's ``get(timeout=...)``).

        With ``poll``, no single wait lasts longer than that: the caller's
        thread comes back to Python now and then, so a Ctrl-C that arrived just
        before it went to sleep (CPython only runs signal handlers between
        bytecodes, and a signal that lands before the lock wait does not
        interrupt it) is raised within ``poll`` seconds, not at the next item.
        """
        with self._lock:
            while True:
                if self._aborted:
                    raise Aborted
                ready = len(self._items)
                if ready >= min_n or (ready and self._open_producers <= 0):
                    break
                if self._open_producers <= 0:
                    return None
                wait = None
                if timeout is not None and ready:
                    wait = self._first_arrival + timeout - time.perf_counter()
                    if wait <= 0:
                        break
                if give_up_at is not None and not ready:
                    wait = give_up_at - time.perf_counter()
                    if wait <= 0:
                        raise TimeoutError(f"nothing arrived in {self.name!r} in time")
                if poll is not None:
                    wait = poll if wait is None else min(wait, poll)
                self._getters += 1
                self._not_empty.wait(wait)
                self._getters -= 1
            return self._cut(ready, max_n)

    def _cut(self, ready: int, max_n: int) -> tuple[int, int, list[Any]]:
        """The next slice of at most ``max_n`` of the ``ready`` items (lock held)."""
        n = min(ready, max_n)
        items = self._items
        if n == ready:
            out = list(items)
            items.clear()
        else:
            popleft = items.popleft
            out = [popleft() for _ in range(n)]
            self._first_arrival = time.perf_counter()
            if self._getters:
                self._not_empty.notify()
        seq, offset = self._next_seq, self._taken
        self._next_seq += 1
        self._taken += sum(b.count for b in out) if self._weighted else n
        if self._putters:
            self._not_full.notify_all()
        return seq, offset, out
