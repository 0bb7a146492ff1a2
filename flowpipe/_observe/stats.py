"""Run statistics as frozen records, with a readable table and the bottleneck."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .counters import WorkerCounters


@dataclasses.dataclass(frozen=True)
class StageStats:
    """What one stage did during a run (so far, while it runs)."""

    name: str
    """The stage's label (``name#2`` when a name appears twice)."""
    workers: int
    items_in: int
    """Inputs the stage took from its buffer."""
    items_out: int
    """Outputs it handed on."""
    skipped: int
    """Inputs skipped by ``on_error``."""
    dropped: int
    """Inputs dropped from its buffer by ``overflow``."""
    errors: int
    """Calls that raised (retried ones included)."""
    retries: int
    busy_s: float
    """Seconds spent in the stage's function, summed over workers."""
    waiting_s: float
    """Seconds its workers waited for input."""
    blocked_s: float
    """Seconds its workers were blocked handing outputs on (backpressure)."""
    buffer_fill: int
    buffer_peak: int
    buffer_size: int
    elapsed_s: float

    @property
    def busy_share(self) -> float:
        """Fraction of the workers' time spent working: near 1.0 means this stage limits."""
        span = self.elapsed_s * self.workers
        return min(1.0, self.busy_s / span) if span > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Outputs per second over the run so far."""
        return self.items_out / self.elapsed_s if self.elapsed_s > 0 else 0.0


def combine(
    name: str,
    counters: Sequence[WorkerCounters],
    *,
    workers: int,
    dropped: int,
    fill: int,
    peak: int,
    size: int,
    elapsed: float,
) -> StageStats:
    return StageStats(
        name=name,
        workers=workers,
        items_in=sum(c.items_in for c in counters),
        items_out=sum(c.items_out for c in counters),
        skipped=sum(c.skipped for c in counters),
        dropped=dropped,
        errors=sum(c.errors for c in counters),
        retries=sum(c.retries for c in counters),
        busy_s=sum(c.busy for c in counters),
        waiting_s=sum(c.waiting for c in counters),
        blocked_s=sum(c.blocked for c in counters),
        buffer_fill=fill,
        buffer_peak=peak,
        buffer_size=size,
        elapsed_s=elapsed,
    )


@dataclasses.dataclass(frozen=True)
class RunStats:
    """Per-stage statistics of one run; ``print(run.stats)`` shows a table."""

    stages: tuple[StageStats, ...]
    elapsed_s: float

    def __getitem__(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def bottleneck(self) -> StageStats | None:
        """The stage whose workers were busiest: the one that limits throughput."""
        working = [s for s in self.stages if s.items_in or s.busy_s]
        return max(working, key=lambda s: s.busy_share, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.elapsed_s,
            "stages": [dataclasses.asdict(s) for s in self.stages],
        }

    def __str__(self) -> str:
        head = (
            "stage",
            "workers",
            "in",
            "out",
            "skipped",
            "dropped",
            "errors",
            "busy",
            "items/s",
            "buffer",
        )
        rows = [head]
        for s in self.stages:
            rows.append(
                (
                    s.name,
                    str(s.workers),
                    str(s.items_in),
                    str(s.items_out),
                    str(s.skipped),
                    str(s.dropped),
                    str(s.errors),
                    f"{s.busy_share:.0%}",
                    f"{s.throughput:,.0f}",
                    f"{s.buffer_fill}/{s.buffer_size}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        neck = self.bottleneck
        tail = f"elapsed {self.elapsed_s:.3f}s"
        if neck is not None:
            tail += f"; bottleneck: {neck.name} (busy {neck.busy_share:.0%})"
        return "\n".join([*lines, tail])
