"""Mutable per-worker counters. One object per worker, so no two threads write one field."""

from __future__ import annotations


class WorkerCounters:
    __slots__ = (
        "blocked",
        "busy",
        "calls",
        "errors",
        "items_in",
        "items_out",
        "retries",
        "skipped",
        "waiting",
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
