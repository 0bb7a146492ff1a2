"""Faults: a call or a source that never returns, on threads, where it cannot be stopped.

Leaving the run (``close()``, ``break``, Ctrl-C) must still return within about a
second, with a warning that names the stuck stage; the stuck thread is left running
(a daemon). Each test opens its gate at the end so that the thread can finish.
"""

from __future__ import annotations

import _thread
import itertools
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from flowpipe import stage

RETURNS_WITHIN = 1.5  # "about a second" (the run waits 1 s for a stuck thread), with slack
GATE_TIMEOUT = 10.0


def _source(release: threading.Event) -> Iterator[int]:
    yield 0  # taken alone: its output comes out before the call on 1 hangs
    release.wait(GATE_TIMEOUT)
    yield from itertools.count(1)


@pytest.mark.parametrize("how", ["close", "break", "ctrl-c"])
def test_leaving_a_run_with_a_call_that_never_returns_takes_about_a_second(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    release, entered, gate = threading.Event(), threading.Event(), threading.Event()

    @stage(name="hangs")
    def hangs(x: int) -> int:
        if x == 1:
            entered.set()
            gate.wait(GATE_TIMEOUT)  # a call that never returns (until the test ends)
        return x

    caplog.set_level(logging.WARNING, logger="flowpipe")
    try:
        with hangs.iter(_source(release)) as run:
            for y in run:
                assert y == 0
                release.set()
                assert entered.wait(GATE_TIMEOUT)
                started = time.monotonic()
                if how == "close":
                    run.close()
                elif how == "ctrl-c":  # lands while the caller waits in next()
                    threading.Timer(0.05, _thread.interrupt_main).start()
                    with pytest.raises(KeyboardInterrupt):
                        next(run)
                break  # how == "break": leaving the with block closes the run
        took = time.monotonic() - started
    finally:
        gate.set()
    assert took < RETURNS_WITHIN, f"{how} took {took:.2f} s"
    [warning] = [r.getMessage() for r in caplog.records if "left running" in r.getMessage()]
    assert "stage 'hangs'" in warning
    assert "flowpipe-hangs-0" in warning


def test_closing_a_run_whose_source_never_returns_takes_about_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()

    def sensor() -> Iterator[int]:
        yield 1
        gate.wait(GATE_TIMEOUT)  # next() never returns (until the test ends)
        yield 2

    run = stage(lambda x: x, name="echo").iter(sensor())
    assert next(run) == 1
    caplog.set_level(logging.WARNING, logger="flowpipe")
    try:
        started = time.monotonic()
        run.close()
        took = time.monotonic() - started
    finally:
        gate.set()
    assert took < RETURNS_WITHIN, f"close() took {took:.2f} s"
    [warning] = [r.getMessage() for r in caplog.records if "left running" in r.getMessage()]
    assert "stage 'source'" in warning


def test_a_source_stage_that_never_returns_is_named(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()

    @stage
    def camera() -> Iterator[int]:
        yield 1
        gate.wait(GATE_TIMEOUT)
        yield 2

    run = (camera | stage(lambda x: x, name="echo")).iter()
    assert next(run) == 1
    caplog.set_level(logging.WARNING, logger="flowpipe")
    try:
        run.close()
    finally:
        gate.set()
    [warning] = [r.getMessage() for r in caplog.records if "left running" in r.getMessage()]
    assert "stage 'camera'" in warning
