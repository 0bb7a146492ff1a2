"""Fairness of ``flowpipe.sources``: n live feeds at twice what the pipeline can take.

``python -m benchmarks.fairness [--feeds 4 16] [--seconds S] [--fps F]``

Each feed is a camera generator: frame ``i`` is due ``i / fps`` s after its
first (it sleeps until then, so it keeps its rate), with the feeds' phases
spread over one frame interval, and carries ``time.perf_counter()`` taken when
it is yielded. The pipeline is ``sources(feeds, buffer=1,
overflow="drop_oldest") | work``, with ``work`` one worker, ``buffer=1``, and a
sleep sized so that it takes half of what the feeds give (2x overload):
``work_s = 2 * interval / n``.

Reported per run: each feed's share of the processed items (min and max, as
a multiple of 1/n: the target is 0.8-1.2), the age of a processed item when it
comes out of ``work`` (``perf_counter()`` then minus the frame's capture time:
median, p99, max; the target is at most 2 frame intervals plus ``work_s``),
and the drops per feed, which must add up to the source row of the run's
stats.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import flowpipe
from flowpipe import Tagged, stage


def camera(fps: float, phase: float, start: float, until: float) -> Iterator[float]:
    """Frames at ``fps`` from ``start + phase``, each its capture time, until ``until``."""
    interval = 1.0 / fps
    i = 0
    while True:
        due = start + phase + i * interval
        if due >= until:
            return
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        yield time.perf_counter()
        i += 1


def one_run(n: int, fps: float, seconds: float) -> dict[str, Any]:
    interval = 1.0 / fps
    work_s = 2 * interval / n  # the pipeline takes n / 2 frames per interval: 2x overload

    @stage(buffer=1)
    def work(t: Tagged) -> tuple[Any, float, float]:
        time.sleep(work_s)
        return t.source, t.item, time.perf_counter()

    start = time.perf_counter() + 0.2
    feeds = flowpipe.sources(
        {f"cam{k}": camera(fps, k * interval / n, start, start + seconds) for k in range(n)},
        buffer=1,
        overflow="drop_oldest",
    )
    run = (feeds | work).iter()
    out = list(run)
    shares = Counter(name for name, _, _ in out)
    ages = sorted(done - captured for _, captured, done in out)
    fair = [shares[f"cam{k}"] * n / len(out) for k in range(n)]
    stats_dropped = run.stats.stages[0].dropped
    return {
        "feeds": n,
        "fps": fps,
        "work_ms": work_s * 1e3,
        "processed": len(out),
        "share_min": min(fair),
        "share_max": max(fair),
        "age_p50_ms": statistics.median(ages) * 1e3,
        "age_p99_ms": ages[int(0.99 * (len(ages) - 1))] * 1e3,
        "age_max_ms": ages[-1] * 1e3,
        "age_bound_ms": (2 * interval + work_s) * 1e3,
        "dropped": sum(feeds.dropped.values()),
        "stats_dropped": stats_dropped,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=25.0)
    args = parser.parse_args(argv)
    head = (
        f"{'feeds':>5} {'work ms':>7} {'processed':>9} {'share min':>9} {'share max':>9} "
        f"{'age p50':>8} {'age p99':>8} {'age max':>8} {'bound':>7} {'dropped':>8} {'in stats':>8}"
    )
    print(f"{args.fps:g} fps per feed, {args.seconds:g} s per run, 2x overload")
    print(head)
    for n in args.feeds:
        r = one_run(n, args.fps, args.seconds)
        print(
            f"{r['feeds']:>5} {r['work_ms']:>7.1f} {r['processed']:>9} {r['share_min']:>9.2f} "
            f"{r['share_max']:>9.2f} {r['age_p50_ms']:>6.1f}ms {r['age_p99_ms']:>6.1f}ms "
            f"{r['age_max_ms']:>6.1f}ms {r['age_bound_ms']:>5.0f}ms {r['dropped']:>8} "
            f"{r['stats_dropped']:>8}"
        )


if __name__ == "__main__":
    main()
