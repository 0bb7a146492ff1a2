"""What a run's statistics are made from, and what it says when it ends.

A ``Meter`` holds the counters and channels of every stage of one run; it makes
``RunStats`` snapshots (live while the run goes on, final once it ended), feeds
an optional progress bar, and logs the run's end. It holds no reference to the
``Run`` (a progress bar thread keeps the meter alive, never the run).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..._observe.counters import WorkerCounters
from ..._plan.edges import Capabilities
from ..._plan.plan import StageNode
from ..._transport.buffer import Channel

if TYPE_CHECKING:
    from ..._observe.progress import ProgressBar
    from ..._observe.stats import RunStats, StageStats

logger = logging.getLogger("flowpipe")


class Part(NamedTuple):
    """One stage's share of the stats."""

    label: str
    workers: int
    counters: list[WorkerCounters]
    channel: Channel | None  # its input (None: the source)
    node: StageNode | None  # as planned (None: a source iterable)
    capabilities: Capabilities | None = None  # of its backend (None: a thread of the caller's)
    drops: Callable[[], int] | None = None  # the source's own drops (``flowpipe.sources``)
    fused_into: str | None = None  # the stage whose worker calls it (``fuse=True``)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Meter:
    __slots__ = ("cpu_ended", "cpu_started", "delivered", "ended", "parts", "progress", "started")

    def __init__(self, parts: list[Part], started: float | None = None) -> None:
        self.parts = parts
        self.started = time.perf_counter() if started is None else started
        self.cpu_started = time.process_time()
        self.ended: float | None = None
        self.cpu_ended: float | None = None
        self.delivered = 0  # outputs handed to the caller
        self.progress: ProgressBar | None = None

    def stats(self) -> RunStats:
        # Imported when first asked for: a run that is never looked at does not pay for it.
        from ..._observe.stats import RunStats, combine

        end = self.ended if self.ended is not None else time.perf_counter()
        cpu_end = self.cpu_ended if self.cpu_ended is not None else time.process_time()
        elapsed = end - self.started
        stages: list[StageStats] = []
        for name, workers, counters, ch, node, caps, drops, fused_into in self.parts:
            opts = node.stage.options if node is not None else None
            dropped = ch.dropped if ch is not None else drops() if drops is not None else 0
            stages.append(
                combine(
                    name,
                    counters,
                    workers=workers,
                    dropped=dropped,
                    fill=len(ch) if ch is not None else 0,
                    peak=ch.peak if ch is not None else 0,
                    size=ch.capacity if ch is not None else 0,
                    elapsed=elapsed,
                    started=self.started,
                    backend=node.backend if node is not None else "",
                    in_caller=caps.in_caller if caps is not None else True,
                    on_this_machine=caps.on_this_machine if caps is not None else True,
                    batch=opts.batch if opts is not None else None,
                    source=ch is None and fused_into is None,
                    fused_into=fused_into,
                )
            )
        return RunStats(tuple(stages), elapsed, cpu_end - self.cpu_started, _cpu_count())

    def show_progress(self, tqdm: Any, total: int | None) -> None:
        from ..._observe.progress import ProgressBar

        self.progress = ProgressBar(tqdm, self.stats, lambda: self.delivered, total)

    def stop_clock(self) -> None:
        """The run has ended (its last output was read, or it was stopped)."""
        if self.ended is None:
            self.ended = time.perf_counter()
            self.cpu_ended = time.process_time()

    def finish(self, error: BaseException | None, stopped_early: bool) -> None:
        """Every worker has left: final numbers on the bar, log lines."""
        self.stop_clock()
        if self.progress is not None:
            self.progress.close()
        if not logger.isEnabledFor(logging.ERROR if error is not None else logging.INFO):
            return  # nothing would be logged: skip making the numbers
        stats = self.stats()
        for s, part in zip(stats.stages, self.parts):
            node = part.node
            if s.dropped:
                overflow = node.stage.options.overflow if node is not None else "?"
                logger.info(
                    "stage %r dropped %d of its inputs in all (overflow=%r)",
                    s.name,
                    s.dropped,
                    overflow,
                )
            if s.errors or s.skipped:
                logger.info(
                    "stage %r: %d failed calls, %d retries, %d inputs skipped",
                    s.name,
                    s.errors,
                    s.retries,
                    s.skipped,
                )
        how = f"in {stats.elapsed_s:.3f}s: {self.delivered} outputs read"
        if stats.bottleneck is not None:
            how += f"; bottleneck: {stats.why}"
        if error is not None:
            logger.error("run failed %s; %s: %s", how, type(error).__name__, error)
        elif stopped_early:
            logger.info("run stopped early %s", how)
        else:
            logger.info("run finished %s", how)
        if logger.isEnabledFor(logging.DEBUG):
            for tip in stats.advice:
                logger.debug("advice: %s", tip)
