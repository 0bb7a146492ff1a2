"""Mutable per-worker counters. One object per worker, so no two threads write one field.

Per-call latency goes into a histogram of logarithmic buckets (each 10% wider
than the one before, from 100 ns to beyond 1000 s): recording a slice costs one
``log`` and one list update, and percentiles read back within about 5%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LATENCY_MIN = 1e-7  # seconds: the lower edge of bucket 0
LATENCY_STEP = 1.1  # ratio of one bucket's edges
LATENCY_BUCKETS = 256  # up to 1e-7 * 1.1**256 s (about 40 000 s)
_SCALE = 1.0 / math.log(LATENCY_STEP)
_LAST = LATENCY_BUCKETS - 1


class WorkerCounters:
    __slots__ = (
        "blocked",
        "busy",
        "calling",
        "calls",
        "cpu",
        "errors",
        "items_in",
        "items_out",
        "latency",
        "queued",
        "retries",
        "rss",
        "skipped",
        "started",
        "startup",
        "waiting",
        "wall",
        "worker_cpu",
    )

    def __init__(self) -> None:
        self.items_in = 0
        self.items_out = 0
        self.calls = 0
        self.skipped = 0
        self.errors = 0
        self.retries = 0
        self.busy = 0.0  # seconds inside the stage's function
        self.waiting = 0.0  # seconds waiting for input
        self.blocked = 0.0  # seconds blocked handing outputs on
        self.latency: list[int] = [0] * LATENCY_BUCKETS  # calls per latency bucket
        self.started: float | None = None  # perf_counter() at the worker's first input
        self.calling = 0.0  # perf_counter() since its slice is being called; 0.0: not in a call
        # Seconds spent starting the worker: a worker process's boot, a class stage's
        # ``__init__`` (a model load); every start, a replacement after a crash too.
        self.startup = 0.0
        # What the worker itself used, where measured (``_observe.usage``): CPU seconds
        # in its calls, and seconds it was ready to run but waited for a core.
        self.cpu: float | None = None
        self.queued: float | None = None
        self.rss: int | None = None  # bytes its worker process held, as last reported
        self.worker_cpu: float | None = None  # CPU seconds of its worker process, in all
        self.wall: float | None = None  # seconds of its calls, by its worker process's clock

    def add_usage(
        self,
        cpu: float | None,
        queued: float | None = None,
        rss: int | None = None,
        worker_cpu: float | None = None,
        wall: float | None = None,
    ) -> None:
        """Add what a slice used (``None``: not measured there); ``rss``: the memory its
        worker process holds now, ``worker_cpu``: that process's CPU meanwhile, ``wall``:
        the seconds of its calls there."""
        if wall is not None:
            self.wall = wall if self.wall is None else self.wall + wall
        if rss is not None:
            self.rss = rss
        if worker_cpu is not None:
            self.worker_cpu = (
                worker_cpu if self.worker_cpu is None else self.worker_cpu + worker_cpu
            )
        if cpu is not None:
            self.cpu = cpu if self.cpu is None else self.cpu + cpu
        if queued is not None:
            self.queued = queued if self.queued is None else self.queued + queued

    def count_slice(
        self,
        items_in: int,
        items_out: int,
        calls: int,
        t0: float,
        t1: float,
        t2: float,
        t3: float,
        held: float = 0.0,
        per_call: bool = True,
    ) -> None:
        """Count one slice: waited for from ``t0``, taken at ``t1``, called until ``t2``,
        its outputs handed on by ``t3`` (``perf_counter()`` readings). Shares are of
        the time from the first input on, so the wait for that input does not count.

        A generator stage hands outputs on while it runs: ``held`` is the part of
        ``t1``..``t2`` it spent waiting for room downstream (blocked, not busy);
        its latency is per output, not per call (``per_call=False``: the caller
        counts it, ``record_latency`` over each part's outputs)."""
        self.items_in += items_in
        self.items_out += items_out
        self.calls += calls
        busy = t2 - t1 - held
        if per_call:
            self.record_latency(busy, calls)
        self.waiting += t1 - (t0 if self.started is None else max(t0, self.started))
        self.busy += busy
        self.blocked += t3 - t2 + held

    def record_latency(self, seconds: float, calls: int) -> None:
        """Count ``calls`` calls that took ``seconds`` in all (a slice: its mean per call)."""
        if calls > 0:
            per_call = seconds / calls
            i = int(math.log(per_call / LATENCY_MIN) * _SCALE) if per_call > LATENCY_MIN else 0
            self.latency[i if i < _LAST else _LAST] += calls


def latency_percentiles(
    histograms: Sequence[Sequence[int]], quantiles: Sequence[float]
) -> list[float | None]:
    """Percentiles (seconds) of the calls counted in ``histograms``; ``None`` without calls."""
    merged = [sum(column) for column in zip(*histograms)] if histograms else []
    total = sum(merged)
    if total == 0:
        return [None for _ in quantiles]
    out: list[float | None] = []
    for q in quantiles:
        rank = q * total  # the smallest bucket whose running count reaches the rank
        seen = 0
        for i, n in enumerate(merged):
            seen += n
            if n and seen >= rank:
                out.append(LATENCY_MIN * LATENCY_STEP ** (i + 0.5))
                break
    return out
