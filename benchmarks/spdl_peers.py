"""SPDL (Meta's data-loading pipeline) as a peer, written the way its documentation shows it.

``PipelineBuilder().add_source(range(n))``, one ``.pipe(fn, concurrency=workers,
output_order="input")`` per stage, ``.aggregate(size)`` / ``.disaggregate()``
around a batch stage, ``.add_sink()``, ``.build(num_threads=...)``, then the
outputs read under ``pipeline.auto_stop()``. SPDL runs every stage as a
coroutine in one event-loop thread and calls a synchronous stage function in
its thread pool (``num_threads``: as many threads as the flowpipe pipeline of
the scenario has workers), or in the ``executor`` a stage is given: the
process scenarios give each stage a ``ProcessPoolExecutor`` of one process of
its own (a per-stage process pool), made in the timed call and shut down at
its end.

SPDL's builder makes chains only. For a fan-out with a join (``a | (b, c) |
d`` in flowpipe) the two branches are one stage whose coroutine runs both
functions at once in the loop's thread pool and pairs their results.

``spdl`` is imported inside each function: a run without it skips the rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Fn = Callable[[Any], Any]


def source(n: int) -> Any:
    """``PipelineBuilder().add_source(range(n))``."""
    from spdl.pipeline import PipelineBuilder

    builder: Any = PipelineBuilder()
    return builder.add_source(range(n))


def collect(builder: Any, threads: int) -> list[Any]:
    """Build, start, read every output, stop: one whole run."""
    pipeline = builder.add_sink().build(num_threads=threads)
    with pipeline.auto_stop():
        return list(pipeline)


def chain(stages: Sequence[Fn], n: int, workers: int) -> list[Any]:
    """Each stage ``concurrency=workers``, input order; ``workers`` threads per stage."""
    builder = source(n)
    for fn in stages:
        builder = builder.pipe(fn, concurrency=workers, output_order="input")
    return collect(builder, len(stages) * workers)


def both(left: Fn, right: Fn) -> Callable[[Any], Any]:
    """The two branches of a fan-out as one SPDL stage: both run at once, joined in a tuple."""

    async def branches(x: Any) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        a, b = await asyncio.gather(
            loop.run_in_executor(None, left, x), loop.run_in_executor(None, right, x)
        )
        return a, b

    return branches


def fanout(stages: Sequence[Fn], n: int, workers: int) -> list[Any]:
    """``a``, then ``(b, c)`` at once and joined, then ``d``: every stage ``workers`` wide."""
    a, b, c, d = stages
    builder = (
        source(n)
        .pipe(a, concurrency=workers, output_order="input")
        .pipe(both(b, c), concurrency=workers, output_order="input")
        .pipe(d, concurrency=workers, output_order="input")
    )
    return collect(builder, len(stages) * workers)


def batched(stages: Sequence[Fn], n: int, workers: int, size: int) -> list[Any]:
    """``prep`` on ``workers``, ``aggregate(size)``, the batch function, ``disaggregate``, ``post``."""
    prep, model, post = stages
    builder = (
        source(n)
        .pipe(prep, concurrency=workers, output_order="input")
        .aggregate(size)
        .pipe(model, output_order="input")
        .disaggregate()
        .pipe(post, output_order="input")
    )
    return collect(builder, workers + 2)


def process_stream(stages: Sequence[Fn], n: int) -> Iterator[Any]:
    """One ``ProcessPoolExecutor(1)`` per stage (``executor=``), input order, as a stream.

    The pools are made in the call (their processes start on first use) and
    shut down when the stream ends or is dropped.
    """
    from concurrent.futures import ProcessPoolExecutor

    pools = [ProcessPoolExecutor(1) for _ in stages]
    try:
        builder = source(n)
        for fn, pool in zip(stages, pools):
            builder = builder.pipe(fn, executor=pool, output_order="input")
        pipeline = builder.add_sink().build(num_threads=len(stages))
        with pipeline.auto_stop():
            yield from pipeline
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
