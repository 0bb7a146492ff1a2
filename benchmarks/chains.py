"""Hand-written ``queue.Queue`` chains: what a user writes without a library.

One thread per stage worker, one bounded queue in front of each stage, a
sentinel after the last item::

    feeder ──► Queue ──► [stage 1] xW ──► Queue ──► ... ──► [stage 4] xW ──► Queue ──► caller

Two variants: one item per ``put``/``get`` (``chunk=None``), or lists of
``chunk`` items per ``put``/``get``. With one worker per stage the order is
kept by construction and items travel bare. With several workers per stage
the order is lost, so each packet carries its position and the caller sorts
at the end (what a user would do to get ordered output).

Queues hold at most ``QUEUE_ITEMS`` items (as flowpipe's automatic buffers),
so memory stays bounded in both variants.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

QUEUE_ITEMS = 1024
SENTINEL: Any = object()

Packet = Any  # an item, a list of items, or (position, either) when tagged
Apply = Callable[[Packet], Packet]


def make_apply(fn: Callable[[Any], Any], chunked: bool, tagged: bool) -> Apply:
    """What one stage does to one packet (the bare function in the simplest case)."""
    if not chunked and not tagged:
        return fn
    if not chunked:
        return lambda p: (p[0], fn(p[1]))
    if not tagged:
        return lambda xs: [fn(x) for x in xs]
    return lambda p: (p[0], [fn(x) for x in p[1]])


class StageExit:
    """Counts a stage's workers out; the last one passes the sentinel downstream."""

    def __init__(self, workers: int, out: queue.Queue[Packet]) -> None:
        self.live = workers
        self.out = out
        self.lock = threading.Lock()

    def leave(self) -> None:
        with self.lock:
            self.live -= 1
            last = self.live == 0
        if last:
            self.out.put(SENTINEL)


def stage_worker(
    apply: Apply, inp: queue.Queue[Packet], out: queue.Queue[Packet], exit_: StageExit
) -> None:
    get, put = inp.get, out.put
    while (p := get()) is not SENTINEL:
        put(apply(p))
    inp.put(SENTINEL)  # let this stage's other workers see the end too
    exit_.leave()


def packets(source: Iterable[Any], chunk: int | None, tagged: bool) -> Iterator[Packet]:
    """The source as packets: bare items, lists of ``chunk``, optionally numbered."""
    stream: Iterator[Any] = iter(source)
    if chunk is not None:
        it = stream
        stream = iter(lambda: list(itertools.islice(it, chunk)), [])
    return enumerate(stream) if tagged else stream


def feeder(
    source: Iterable[Any], out: queue.Queue[Packet], chunk: int | None, tagged: bool
) -> None:
    put = out.put
    for p in packets(source, chunk, tagged):
        put(p)
    put(SENTINEL)


def collect(out: queue.Queue[Packet], chunk: int | None, tagged: bool) -> list[Any]:
    get = out.get
    got: list[Packet] = []
    append = got.append
    while (p := get()) is not SENTINEL:
        append(p)
    if tagged:
        got.sort(key=lambda p: p[0])
        got = [p[1] for p in got]
    if chunk is None:
        return got
    return list(itertools.chain.from_iterable(got))


def run_queue_chain(
    stages: Sequence[Callable[[Any], Any]],
    source: Iterable[Any],
    workers: int = 1,
    chunk: int | None = None,
) -> list[Any]:
    """Run ``stages`` over ``source`` through a chain of queues; outputs in input order."""
    tagged = workers > 1
    per_queue = QUEUE_ITEMS if chunk is None else max(1, QUEUE_ITEMS // chunk)
    queues: list[queue.Queue[Packet]] = [
        queue.Queue(maxsize=per_queue) for _ in range(len(stages) + 1)
    ]
    threads = [threading.Thread(target=feeder, args=(source, queues[0], chunk, tagged))]
    for k, fn in enumerate(stages):
        apply = make_apply(fn, chunk is not None, tagged)
        exit_ = StageExit(workers, queues[k + 1])
        threads.extend(
            threading.Thread(target=stage_worker, args=(apply, queues[k], queues[k + 1], exit_))
            for _ in range(workers)
        )
    for t in threads:
        t.daemon = True
        t.start()
    result = collect(queues[-1], chunk, tagged)
    for t in threads:
        t.join()
    return result
