"""Where outputs go: every downstream channel, in order, and joined branches.

::

    worker ──outputs──► Reorderer ──in slice order──► Emitter ──► every downstream Channel
                       (ordered, workers > 1)                     (fan-out: one per branch)

    branch Channels ──join_rows: position by position──► Emitter (tuples or dicts)

A merge needs nothing here: every branch's last stage emits into the same
downstream channel.
"""

from __future__ import annotations

import threading
from typing import Any

from ..._transport.buffer import Aborted, Channel
from .shaping import MAX_SLICE
from .state import Gate, RunState


class Emitter:
    """Hands output slices to every downstream channel (several after a fan-out)."""

    __slots__ = ("targets",)

    def __init__(self, targets: list[Channel]) -> None:
        self.targets = targets
        for t in targets:
            t.add_producer()

    def emit(self, items: list[Any]) -> None:
        if items:
            for t in self.targets:
                t.put_many(items)

    def wait_for_room(self) -> None:
        """Wait until every downstream channel has room for an item (or drops to make it)."""
        for t in self.targets:
            t.wait_for_room()

    def close(self) -> None:
        for t in self.targets:
            t.close()


class Reorderer:
    """Releases output slices in sequence order; bounds how many may wait.

    ``room`` is acquired before a slice is taken and released when the slice
    leaves in order, so at most ``room.limit`` slices are taken-but-unreleased:
    a slow slice holds back a bounded amount of later work, then backpressure.
    """

    __slots__ = ("_aborted", "_lock", "_next", "_pending", "_turn", "emitter", "room")

    def __init__(self, emitter: Emitter, room: Gate) -> None:
        self.emitter = emitter
        self.room = room
        self._pending: dict[int, list[Any]] = {}
        self._next = 0
        self._lock = threading.Lock()
        # Held while emitting (one releaser at a time keeps puts in order);
        # a part waits on it for its slice's turn.
        self._turn = threading.Condition(threading.Lock())
        self._aborted = False

    def complete(self, seq: int, outputs: list[Any]) -> None:
        with self._lock:
            self._pending[seq] = outputs
        self._release()

    def complete_many(self, done: list[tuple[int, list[Any]]]) -> None:
        """Several slices done at once (a keyed stage's worker calls several runs as one)."""
        with self._lock:
            self._pending.update(done)
        self._release()

    def _release(self) -> None:
        """Emit every slice whose turn has come; consecutive ones as one emit."""
        with self._turn:
            while True:
                with self._lock:
                    ready = self._pending.pop(self._next, None)
                    if ready is None:
                        return
                    n, pending = 1, self._pending
                    if self._next + 1 in pending:  # one list, never the caller's
                        ready = list(ready)
                        while (more := pending.pop(self._next + n, None)) is not None:
                            ready.extend(more)
                            n += 1
                    self._next += n
                self.emitter.emit(ready)
                self.room.release(n)
                self._turn.notify_all()

    def part(self, seq: int, outputs: list[Any]) -> None:
        """Outputs of slice ``seq`` before it ends: they leave once every earlier slice has."""
        with self._turn:
            while self._next != seq:
                if self._aborted:
                    raise Aborted
                self._turn.wait()
            self.emitter.emit(outputs)

    def part_now(self, seq: int, outputs: list[Any]) -> bool:
        """``part`` if it is slice ``seq``'s turn now; False (nothing done) if not."""
        with self._turn:
            if self._aborted:
                raise Aborted
            if self._next != seq:
                return False
            self.emitter.emit(outputs)
            return True

    def abort(self) -> None:
        with self._turn:
            self._aborted = True
            self._turn.notify_all()


def join_rows(
    inputs: list[Channel], keys: tuple[str, ...] | None, emitter: Emitter, state: RunState
) -> None:
    """Zip the branches' outputs position by position into tuples (or dicts)."""
    try:
        while True:
            got = inputs[0].take(MAX_SLICE)
            if got is None:
                break
            columns = [got[2]]
            n = len(columns[0])
            for ch in inputs[1:]:
                part = ch.take(n, n)
                if part is None or len(part[2]) != n:
                    raise RuntimeError("join branches went out of step (a branch lost an item)")
                columns.append(part[2])
            rows: list[Any] = list(zip(*columns))
            if keys is not None:
                rows = [dict(zip(keys, row)) for row in rows]
            emitter.emit(rows)
    except Aborted:
        pass
    except BaseException as exc:
        state.fail(exc)
    finally:
        emitter.close()
