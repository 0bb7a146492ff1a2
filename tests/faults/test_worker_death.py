"""Faults: a worker that dies where no item is being called, on the backends with workers
elsewhere (process, Ray)."""

from __future__ import annotations

import importlib.util
import os
import signal

import pytest
from helpers import Journal

from flowpipe import WorkerCrashed, stage

ELSEWHERE = ["process"]
if importlib.util.find_spec("ray") is not None:
    ELSEWHERE.append("ray")


class DiesInClose:
    """A class stage whose ``close()`` ends its worker: ``os._exit`` or a segfault."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __call__(self, x: int) -> int:
        return x

    def close(self) -> None:
        if self.how == "exit":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGSEGV)


@pytest.mark.parametrize("how", ["exit", "segfault"])
@pytest.mark.parametrize("backend", ELSEWHERE)
def test_a_worker_that_dies_in_close_at_the_normal_end_fails_the_run(
    backend: str, how: str
) -> None:
    closer = stage(DiesInClose, name="closer")(how)
    with pytest.raises(WorkerCrashed) as info:
        closer.run(range(5), backend=backend)
    err = info.value
    assert err.stage == "closer"
    assert err.index is None  # no input was being called
    assert "close()" in str(err)
    if backend == "process":
        assert ("exit code 3" if how == "exit" else "SIGSEGV") in str(err)


@pytest.mark.parametrize("retries", [0, 1, 2])
@pytest.mark.parametrize("backend", ELSEWHERE)
def test_an_item_that_kills_its_worker_is_retried_as_often_as_configured(
    backend: str, retries: int, journal: Journal
) -> None:
    def deadly(x: int) -> int:
        journal.write(str(x))
        if x == 5:
            os._exit(1)
        return x

    with stage(deadly, name="deadly", retries=retries, on_error="skip").iter(
        range(10), backend=backend
    ) as run:
        out = list(run)
    assert out == [x for x in range(10) if x != 5]
    # Called in its slice, then alone: to find which input killed the worker, and
    # as its retry; then as its further retries.
    calls = journal.lines().count("5")
    assert calls == 1 + max(retries, 1)
    stats = run.stats["deadly"]
    assert (stats.retries, stats.errors, stats.skipped) == (retries, calls, 1)
