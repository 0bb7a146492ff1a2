"""Faults: a call past its stage's ``timeout``, on every backend.

A hung call waits on a gate that the test opens only at its end: on threads the
abandoned call then finishes (so its thread ends), on process and Ray its
worker was killed long before. Nothing here sleeps to synchronise; the only
sleeps are the work of a slow generator, well inside its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FileGate, Journal

from flowpipe import StageError, StageTimeout, stage
from flowpipe._errors import CallTimedOut

TIMEOUT = 0.3  # small: every test waits for it once or twice


def _hangs_on(gate: FileGate, bad: int, journal: Journal | None = None) -> object:
    def hangs(x: int) -> int:
        if journal is not None:
            journal.write(str(x))
        if x == bad:
            gate.wait()  # never opened before the run is over
        return x

    return hangs


def test_a_call_past_its_timeout_is_skipped_and_the_run_goes_on(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = FileGate(tmp_path / "gate")
    hangs = stage(_hangs_on(gate, 3), name="hangs", timeout=TIMEOUT, on_error="skip")  # type: ignore[call-overload]
    caplog.set_level(logging.WARNING, logger="flowpipe")
    try:
        with hangs.iter(range(8), backend=backend) as run:
            out = list(run)
    finally:
        gate.open()
    assert out == [0, 1, 2, 4, 5, 6, 7]
    stats = run.stats["hangs"]
    assert (stats.skipped, stats.errors) == (1, 1)
    messages = [r.getMessage() for r in caplog.records]
    assert any("skipped input #3" in m and "timeout=0.3" in m for m in messages), messages
    if backend == "thread":  # the call cannot be stopped: its thread is named
        assert any("left finishing it" in m and "flowpipe-hangs-call" in m for m in messages)


def test_a_call_past_its_timeout_raises_stage_timeout_naming_stage_and_input(
    backend: str, tmp_path: Path
) -> None:
    gate = FileGate(tmp_path / "gate")
    hangs = stage(_hangs_on(gate, 3), name="hangs", timeout=TIMEOUT)  # type: ignore[call-overload]
    try:
        with pytest.raises(StageTimeout) as info:
            hangs.run(range(8), backend=backend)
    finally:
        gate.open()
    err = info.value
    assert isinstance(err, StageError)
    assert (err.stage, err.index, err.item) == ("hangs", 3, 3)
    assert isinstance(err.__cause__, CallTimedOut)
    assert isinstance(err.__cause__, TimeoutError)
    assert "timeout=0.3" in str(err)


def test_a_call_past_its_timeout_is_retried(backend: str, tmp_path: Path, journal: Journal) -> None:
    gate = FileGate(tmp_path / "gate")

    def first_attempt_hangs(x: int) -> int:
        journal.write(str(x))
        if x == 2 and journal.lines().count("2") == 1:
            gate.wait()
        return x

    flaky = stage(first_attempt_hangs, name="flaky", timeout=TIMEOUT, retries=1)
    try:
        with flaky.iter(range(5), backend=backend) as run:
            out = list(run)
    finally:
        gate.open()
    assert out == [0, 1, 2, 3, 4]
    assert journal.lines().count("2") == 2
    stats = run.stats["flaky"]
    assert (stats.retries, stats.errors, stats.skipped) == (1, 1, 0)


def test_a_batch_stage_times_each_call_on_a_batch(backend: str, tmp_path: Path) -> None:
    gate = FileGate(tmp_path / "gate")

    def batch_hangs(xs: list[int]) -> list[int]:
        if 3 in xs:
            gate.wait()
        return xs

    batches = stage(batch_hangs, name="batches", batch=2, timeout=TIMEOUT, on_error="skip")
    try:
        with batches.iter(range(6), backend=backend) as run:
            out = list(run)
    finally:
        gate.open()
    assert out == [0, 1, 4, 5]  # the batch [2, 3] timed out as one call
    assert run.stats["batches"].skipped == 2


def test_a_generator_stage_times_each_output(backend: str, tmp_path: Path) -> None:
    gate = FileGate(tmp_path / "gate")

    def slow_outputs(x: int) -> Iterator[int]:
        for k in range(4):  # 4 x 0.15 s in all: longer than the timeout, each output within it
            time.sleep(0.15)
            yield 10 * x + k
        if x == 1:
            gate.wait()  # the end never comes
            yield -1

    outputs = stage(slow_outputs, name="outputs", timeout=0.5, on_error="skip")
    try:
        with outputs.iter([0, 1], backend=backend) as run:
            out = list(run)
    finally:
        gate.open()
    assert out == [0, 1, 2, 3, 10, 11, 12, 13]  # what came before the hang is kept
    assert run.stats["outputs"].skipped == 1


def test_an_async_stage_cancels_a_call_past_its_timeout(backend: str) -> None:
    async def sleeps(x: int) -> int:
        if x == 1:
            await asyncio.sleep(60)  # cancelled
        return x

    async_stage = stage(sleeps, name="sleeps", timeout=TIMEOUT, on_error="skip", workers=2)
    with async_stage.iter(range(4), backend=backend) as run:
        out = list(run)
    assert out == [0, 2, 3]
    assert run.stats["sleeps"].skipped == 1
    with pytest.raises(StageTimeout) as info:
        async_stage.with_options(on_error="raise").run(range(4), backend=backend)
    assert (info.value.stage, info.value.index, info.value.item) == ("sleeps", 1, 1)


def test_a_stages_own_timeout_error_is_not_a_timeout(backend: str) -> None:
    def raises(x: int) -> int:
        raise TimeoutError("the server did not answer")

    with pytest.raises(StageError) as info:
        stage(raises, name="raises", timeout=5.0).run([1], backend=backend)
    assert not isinstance(info.value, StageTimeout)
    assert type(info.value.__cause__) is TimeoutError
