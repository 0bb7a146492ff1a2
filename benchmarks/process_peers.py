"""The process-based implementations of the ``proc-*`` scenarios, as streams.

Every implementation is written as a *stream*: a generator function of no
arguments. Nothing starts when it is called; its first ``next()`` starts the
implementation's processes (or pool, or actors) and feeds ``range(n)`` in,
every later ``next()`` gives the following output, in input order, and when
it is exhausted every process it started has ended (its ``finally`` also
ends them when the caller stops early). The throughput scenarios take
``list(stream())``; ``proc-startup`` times the first ``next()`` and the end.

Rows:

- ``mp_queue_chain``: the hand-written chain, one ``multiprocessing`` process
  per stage (spawn context, module-level functions), bounded
  ``multiprocessing.Queue``s between them, one item (or one list of
  ``chunk`` items) per ``put``, ``None`` as the sentinel.
- ``pypeln_stream``: ``pl.process.map(fn, stage, workers=1)`` chained (one
  worker per stage keeps the input order, so no ``pl.process.ordered``, which
  holds every item back until the last one).
- ``mpipe_stream``: ``mpipe.OrderedStage`` per stage, linked, one
  ``mpipe.Pipeline``; a feeder thread puts the items and the ``None`` stop
  request while the caller reads ``results()``. mpipe's workers are
  ``multiprocessing.Process`` subclasses defined inside ``OrderedStage``, so
  they only work with the ``fork`` start method (Linux's default).
- ``pool_stream``: ``multiprocessing.get_context("spawn").Pool(cpus).imap`` of
  the stages fused into one function; closed and joined at the end.
- ``mpire_stream``: mpire's ``WorkerPool(n_jobs=cpus)`` (its default start
  method), ``imap`` of the fused stages.
- ``ray_actor_stream``: one Ray actor per stage (``num_cpus=0``), each item's
  calls chained by object reference, ``RAY_WINDOW`` items in flight. Ray
  hands actors NumPy arrays that are read-only views of its object store, so
  a stage that writes into its input works on a copy there (``copy_readonly``),
  as a Ray user has to.
- ``ray_data_stream``: Ray Data, ``map_batches`` with one actor per stage
  (``concurrency=1``, a quarter CPU each), order preserved.
- ``flowpipe_stream``: ``(stage(a) | stage(b) | ...).iter(range(n), backend=...)``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .peers import Fused, _Mapper, start_ray

Fn = Callable[[Any], Any]
Stream = Callable[[], Iterator[Any]]

CPUS = os.cpu_count() or 1
RAY_WINDOW = 16  # items in flight in the hand-written Ray chain (bounded memory)
JOIN_S = 10.0  # how long a finished chain's process may take to exit before it is killed


# -- the hand-written multiprocessing.Queue chain ---------------------------------------


def _queue_stage(fn: Fn, inp: Any, out: Any, chunked: bool) -> None:
    """One stage's process: ``fn`` on every item (or list) until the ``None`` sentinel."""
    get, put = inp.get, out.put
    if chunked:
        while (xs := get()) is not None:
            put([fn(x) for x in xs])
    else:
        while (x := get()) is not None:
            put(fn(x))
    put(None)


def _feed(q: Any, n: int, chunk: int | None) -> None:
    put = q.put
    if chunk is None:
        for x in range(n):
            put(x)
    else:
        for start in range(0, n, chunk):
            put(list(range(start, min(n, start + chunk))))
    put(None)


def _end_processes(procs: Sequence[Any], wait_s: float = JOIN_S) -> None:
    """Join ``multiprocessing`` processes; kill what is still alive after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


def mp_queue_chain(
    stages: Sequence[Fn], n: int, maxsize: int, chunk: int | None = None
) -> Iterator[Any]:
    """The hand-written chain: ``range(n)`` through one spawned process per stage."""
    ctx = multiprocessing.get_context("spawn")
    queues = [ctx.Queue(maxsize) for _ in range(len(stages) + 1)]
    procs = [
        ctx.Process(
            target=_queue_stage,
            args=(fn, queues[k], queues[k + 1], chunk is not None),
            name=f"mpq-stage-{k + 1}",
            daemon=True,
        )
        for k, fn in enumerate(stages)
    ]
    feeder = threading.Thread(target=_feed, args=(queues[0], n, chunk), daemon=True)
    finished = False
    try:
        for p in procs:
            p.start()
        feeder.start()
        get = queues[-1].get
        if chunk is None:
            while (x := get()) is not None:
                yield x
        else:
            while (xs := get()) is not None:
                yield from xs
        finished = True
        feeder.join()
    finally:
        if not finished:  # stopped early: nothing will drain the queues
            for q in queues:
                q.cancel_join_thread()
            for p in procs:
                if p.is_alive():
                    p.kill()
        _end_processes(procs)
        for q in queues:
            q.close()


# -- pypeln, mpipe, pools ------------------------------------------------------------------


def pypeln_stream(stages: Sequence[Fn], n: int, maxsize: int = 0) -> Iterator[Any]:
    """``pl.process.map`` chained, one worker process per stage (``maxsize`` 0: unbounded)."""
    import pypeln as pl

    s: Any = range(n)
    for fn in stages:
        s = pl.process.map(fn, s, workers=1, maxsize=maxsize)
    yield from s


def _mpipe_feed(pipe: Any, n: int) -> None:
    put = pipe.put
    for x in range(n):
        put(x)
    put(None)  # mpipe's stop request


def mpipe_stream(stages: Sequence[Fn], n: int) -> Iterator[Any]:
    """mpipe: an ``OrderedStage`` (one worker process) per stage, linked into a ``Pipeline``.

    mpipe starts its workers when the ``Pipeline`` is made and keeps no handle
    on them; they exit after the stop request, and are joined here (found
    among ``multiprocessing.active_children()`` by class).
    """
    import mpipe  # type: ignore[import-untyped, import-not-found, unused-ignore]

    before = set(multiprocessing.active_children())
    first = prev = mpipe.OrderedStage(stages[0])
    for fn in stages[1:]:
        nxt = mpipe.OrderedStage(fn)
        prev.link(nxt)
        prev = nxt
    finished = False
    try:
        pipe = mpipe.Pipeline(first)  # forks the workers
        feeder = threading.Thread(target=_mpipe_feed, args=(pipe, n), daemon=True)
        feeder.start()
        yield from pipe.results()
        finished = True
        feeder.join()
    finally:
        workers = [
            p
            for p in multiprocessing.active_children()
            if p not in before and isinstance(p, mpipe.OrderedWorker)
        ]
        if not finished:
            for p in workers:
                p.kill()
        _end_processes(workers)


def pool_chunk(n: int) -> int:
    """``Pool.imap``'s chunk: ``n / (4 x cpus)`` items, as ``Pool.map`` would pick."""
    return max(1, n // (4 * CPUS))


def pool_stream(stages: Sequence[Fn], n: int) -> Iterator[Any]:
    """``multiprocessing.get_context("spawn").Pool(cpus).imap`` of the fused stages."""
    pool = multiprocessing.get_context("spawn").Pool(CPUS)
    try:
        yield from pool.imap(Fused(tuple(stages)), range(n), chunksize=pool_chunk(n))
        pool.close()
        pool.join()
    finally:
        pool.terminate()  # nothing left to end after close/join; ends the pool if stopped early
        pool.join()


def mpire_stream(stages: Sequence[Fn], n: int) -> Iterator[Any]:
    """mpire's ``WorkerPool(n_jobs=cpus)`` (its default start method), ``imap`` of the fused stages."""
    from mpire.pool import WorkerPool

    with WorkerPool(n_jobs=CPUS) as pool:
        yield from pool.imap(Fused(tuple(stages)), range(n))


# -- Ray ---------------------------------------------------------------------------------------


def copy_readonly(x: Any) -> Any:
    """A writable copy of a read-only NumPy array (how Ray hands out arrays); else ``x``."""
    flags = getattr(x, "flags", None)
    if flags is not None and not flags.writeable:
        return x.copy()
    return x


class _StageCall:
    """What one Ray actor runs: the stage on a writable input."""

    def __init__(self, fn: Fn) -> None:
        self.fn = fn

    def call(self, x: Any) -> Any:
        return self.fn(copy_readonly(x))


_ray_actor_class: Any = None


def ray_actor_class() -> Any:
    """``_StageCall`` as a Ray actor class reserving no CPU (made once, Ray started)."""
    global _ray_actor_class
    ray = start_ray()
    if _ray_actor_class is None:
        _ray_actor_class = ray.remote(num_cpus=0)(_StageCall)
    return _ray_actor_class


def make_ray_actors(stages: Sequence[Fn]) -> list[Any]:
    return [ray_actor_class().remote(fn) for fn in stages]


def kill_ray_actors(actors: Sequence[Any]) -> None:
    """End actors the graceful way (``ray.kill`` would make each print a SIGTERM trace)."""
    for actor in actors:
        actor.__ray_terminate__.remote()


def ray_actor_stream(stages: Sequence[Fn], n: int, actors: Sequence[Any] | None) -> Iterator[Any]:
    """Ray actors by hand, chained by object reference, ``RAY_WINDOW`` items at a time.

    ``actors``: warm actors made before the timed call (the throughput rows);
    ``None``: make fresh ones in the call and kill them at its end (start-up).
    """
    import ray

    own = actors is None
    chain = make_ray_actors(stages) if actors is None else actors
    try:
        for start in range(0, n, RAY_WINDOW):
            refs = []
            for x in range(start, min(n, start + RAY_WINDOW)):
                ref: Any = x
                for actor in chain:
                    ref = actor.call.remote(ref)
                refs.append(ref)
            yield from ray.get(refs)
    finally:
        if own:
            kill_ray_actors(chain)


def ray_data_stream(stages: Sequence[Fn], n: int, batch_size: int) -> Iterator[Any]:
    """Ray Data: ``map_batches`` with one actor per stage (``concurrency=1``, 0.25 CPU), ordered."""
    start_ray()
    import ray.data as rd

    rd.DataContext.get_current().execution_options.preserve_order = True
    ds = rd.range(n).map_batches(lambda b: {"item": b["id"]})
    for fn in stages:
        ds = ds.map_batches(
            _Mapper, fn_constructor_args=(fn,), concurrency=1, num_cpus=0.25, batch_size=batch_size
        )
    for row in ds.iter_rows():
        yield int(row["item"])


# -- flowpipe -------------------------------------------------------------------------------------


def flowpipe_pipeline(stages: Sequence[Fn], fuse: bool = False) -> Any:
    """``stage(a) | stage(b) | ...``; ``fuse``: every stage ``fuse=True`` (one worker)."""
    from flowpipe import stage

    def one(fn: Fn) -> Any:
        return stage(fn, fuse=True) if fuse else stage(fn)  # a revision before fuse= refuses it

    pipe: Any = one(stages[0])
    for fn in stages[1:]:
        pipe = pipe | one(fn)
    return pipe


def flowpipe_stream(pipe: Any, n: int, backend: str) -> Iterator[Any]:
    """``pipe.iter(range(n), backend=backend)``; leaving the ``with`` ends its workers."""
    with pipe.iter(range(n), backend=backend) as run:
        yield from run


def loop_stream(stages: Sequence[Fn], n: int) -> Iterator[Any]:
    """The plain loop, one item at a time (the reference output)."""
    for x in range(n):
        for fn in stages:
            x = fn(x)
        yield x
