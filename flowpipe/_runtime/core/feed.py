"""Feeding a run: the source read lazily, item by item, into the first stage's channel.

A thread of the caller's process runs ``feed_source``; a source stage's
generator (``def camera(): ...``) starts there. Quick sources are moved in
growing chunks, slow ones item by item, so a live source never has an item
held back. The source's own error ends the run like a stage's.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from ..._errors import StageError
from ..._observe.counters import WorkerCounters
from ..._transport.buffer import Aborted
from .routing import Emitter
from .state import RunState

SOURCE_CHUNK = 256  # items of an in-memory source (list, tuple, range) moved at once
FAST_NEXT_SECONDS = 20e-6  # a source yielding faster than this is read in chunks
SOURCE_CHUNK_SECONDS = 0.001  # ...of at most this much reading
FAST_RUN = 64  # ...once this many items came that fast in a row


def _feed_iterator(iterator: Any, emitter: Emitter, counters: WorkerCounters) -> None:
    """Move a lazy source into the first channel, counting its items in ``counters``.

    Each item is sent the moment ``next()`` returns it, so a live source (a
    camera, a sensor, a socket) never has an item held back. Only after a long
    run of items that came back to back (``FAST_RUN`` calls of ``next()``
    quicker than ``FAST_NEXT_SECONDS``: a generator over data in memory, a file
    read line by line) are items moved in growing chunks of at most
    ``SOURCE_CHUNK_SECONDS`` of reading, which makes the hand-off cheap per
    item. The first slow ``next()`` sends the chunk and returns to one item at
    a time; an item read in such a burst waits at most for that call.

    Time inside ``next()`` is the source's work (``busy``, and its latency per
    item); time handing items on is ``blocked``: a generator suspended at
    ``yield`` while the first stage's buffer is full is waiting, not working.
    """
    clock = time.perf_counter
    count = 0
    chunk: list[Any] = []
    fast_run = 0  # consecutive quick next() calls
    try:
        last = clock()
        for item in iterator:  # one at a time until the source proves fast
            now = clock()
            chunk.append(item)
            emitter.emit(chunk)
            count += 1
            chunk = []
            _count_items(counters, count, 1, now - last, clock() - now)
            fast_run = fast_run + 1 if now - last <= FAST_NEXT_SECONDS else 0
            if fast_run >= FAST_RUN:  # in chunks while it stays fast
                limit = 2
                while True:
                    started = clock()
                    append = chunk.append  # item by item: a failing next() keeps what came
                    for item in itertools.islice(iterator, limit):
                        append(item)
                    read = clock()
                    took = read - started
                    if not chunk:
                        break
                    n = len(chunk)
                    emitter.emit(chunk)
                    count += n
                    chunk = []
                    _count_items(counters, count, n, took, clock() - read)
                    if took > n * FAST_NEXT_SECONDS or n < limit:
                        break  # it slowed down (or ended): back to one at a time
                    if took < SOURCE_CHUNK_SECONDS / 2:
                        limit = min(limit * 2, SOURCE_CHUNK)
                fast_run = 0
            last = clock()
    finally:
        counters.items_out = count + len(chunk)  # the position of a failing next() included


def _count_items(counters: WorkerCounters, count: int, n: int, took: float, blocked: float) -> None:
    """``n`` items read in ``took`` seconds, handed on in ``blocked``; ``count`` in all."""
    counters.items_out = counters.calls = count
    counters.busy += took
    counters.blocked += blocked
    counters.record_latency(took, n)


def _feed_live(iterator: Any, emitter: Emitter, counters: WorkerCounters) -> None:
    """Move a source of live feeds (``flowpipe.sources``) into the first channel.

    Its feeds keep their newest items in buffers of their own; an item is
    taken from them only once the first stage has room for it, so it never
    ages in this thread's hands while the stage is busy, and a full stage
    makes the feeds drop (each its own), not this thread hold stale items.
    """
    count = 0
    try:
        while True:
            emitter.wait_for_room()
            try:
                item = next(iterator)
            except StopIteration:
                return
            emitter.emit([item])
            count += 1
    finally:
        counters.items_out = count


def feed_source(
    open_source: Callable[[], Iterable[Any]],
    label: str,
    emitter: Emitter,
    state: RunState,
    counters: WorkerCounters,
) -> None:
    """Read the source lazily into the first channel; its errors end the run like a stage's.

    ``open_source`` is called here, in the feeder thread: for a source stage
    (``def camera(): ...``) that is where user code starts running.
    """
    iterator: Any = None
    counters.items_out = 0
    counters.started = time.perf_counter()  # its shares count from its start
    try:
        source = open_source()
        counters.busy += time.perf_counter() - counters.started
        if isinstance(source, (list, tuple, range)):  # already in memory: hand over in chunks
            for start in range(0, len(source), SOURCE_CHUNK):
                chunk = list(source[start : start + SOURCE_CHUNK])
                t = time.perf_counter()
                emitter.emit(chunk)
                counters.items_out += len(chunk)
                counters.calls = counters.items_out
                counters.blocked += time.perf_counter() - t
        else:
            iterator = iter(source)
            # ``flowpipe.sources`` waits on feed threads of its own: the run's stop wakes it.
            interrupt = getattr(iterator, "_flowpipe_interrupt", None)
            if callable(interrupt):
                state.on_stop.append(cast("Callable[[], None]", interrupt))
                if state.stopped:
                    interrupt()
                _feed_live(iterator, emitter, counters)
            else:
                _feed_iterator(iterator, emitter, counters)
    except Aborted:
        pass
    except StageError as exc:  # names what failed already (a feed of ``flowpipe.sources``)
        state.fail(exc)
    except Exception as exc:
        index = counters.items_out if label != "source" else None
        err = StageError(label, index, cause=exc, yielded=True)
        err.__cause__ = exc
        state.fail(err)
    except BaseException as exc:
        state.fail(exc)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None and state.stopped:
            try:
                close()  # run the source generator's cleanup, in the thread that ran it
            except Exception:
                pass
        emitter.close()
