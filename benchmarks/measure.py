"""Timing: every peer of a scenario, round-robin over the repeats, outputs checked.

Round ``r`` runs every peer once, in table order, before round ``r + 1`` starts,
so a slow drift of the machine (another process, thermal throttling) spreads
over every peer instead of landing on one.

The plain loop runs first; its output in round 1 is the reference. A run
counts only if its output equals the reference (same items, same order); a
peer whose output differs, or that raises, is marked failed and not run again.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .peers import LOOP, Job, Peer
from .scenarios import Scenario


@dataclass
class Measurement:
    peer: Peer
    seconds: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Summary:
    """Throughput in items per second over the counted repeats."""

    median: float
    low: float
    high: float
    median_seconds: float
    runs: int


def summarize(n: int, seconds: Sequence[float]) -> Summary | None:
    if not seconds:
        return None
    rates = [n / s for s in seconds]
    return Summary(
        median=statistics.median(rates),
        low=min(rates),
        high=max(rates),
        median_seconds=statistics.median(seconds),
        runs=len(seconds),
    )


def mismatch(got: Any, want: list[Any]) -> str:
    """Say how an output differs from the reference, briefly."""
    if not isinstance(got, list):
        return f"returned {type(got).__name__}, not a list"
    if len(got) != len(want):
        return f"returned {len(got)} items, expected {len(want)}"
    k = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    return f"item {k} is {got[k]!r}, expected {want[k]!r}"


def timed(job: Job) -> tuple[float, list[Any]]:
    gc.collect()
    t0 = time.perf_counter()
    out = job()
    return time.perf_counter() - t0, out


def measure(
    scenario: Scenario, jobs: Sequence[tuple[Peer, Job]], repeat: int, log: bool = True
) -> list[Measurement]:
    """Time every job ``repeat`` times, round-robin; check each output first."""
    if not jobs or jobs[0][0].key != LOOP:
        raise ValueError("the plain loop must come first: it gives the reference output")
    results = [Measurement(peer) for peer, _ in jobs]
    reference: list[Any] | None = None
    for r in range(repeat):
        done: list[str] = []
        for (_, job), m in zip(jobs, results):
            if m.error is not None:
                continue
            try:
                seconds, out = timed(job)
            except Exception as exc:
                m.error = f"raised {exc!r}"
                continue
            if reference is None:
                reference = out
            if out != reference:
                m.error = f"wrong output: {mismatch(out, reference)}"
                continue
            m.seconds.append(seconds)
            done.append(f"{m.peer.key} {seconds:.3f}s")
        if log:
            print(f"  [{scenario.name}] round {r + 1}/{repeat}: {', '.join(done)}", file=sys.stderr)
    return results


def measured_sleep(seconds: float, calls: int = 200) -> float:
    """The median time ``time.sleep(seconds)`` really takes here (timer slack included)."""
    took = []
    for _ in range(calls):
        t0 = time.perf_counter()
        time.sleep(seconds)
        took.append(time.perf_counter() - t0)
    return statistics.median(took)
