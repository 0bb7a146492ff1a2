"""Faults: a run that stops moving, found by ``stall_timeout``, on every backend.

A stage hangs on a gate; the stall report itself opens the gate (a logging
handler, or the ``Stalled`` error), so nothing sleeps to synchronise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FileGate

from flowpipe import FlowpipeError, RunOptionError, Stalled, stage

STALL = 0.3  # seconds without progress that make a stall


class OpensOnStall(logging.Handler):
    """Collects the stall warnings; the first one that blames a call opens ``gate``."""

    def __init__(self, gate: FileGate) -> None:
        super().__init__(logging.WARNING)
        self.gate = gate
        self.stalls: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "the run is stalled" in message:
            self.stalls.append(message)
            if "inside a call" in message:
                self.gate.open()


@pytest.fixture
def stall_log(tmp_path: Path) -> Iterator[OpensOnStall]:
    handler = OpensOnStall(FileGate(tmp_path / "gate"))
    logger = logging.getLogger("flowpipe")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        handler.gate.open()
        logger.removeHandler(handler)
        logger.setLevel(old)


def _hangs_at_2(gate: FileGate) -> Any:
    def stuck(x: int) -> int:
        if x == 2:
            gate.wait()  # until the stall is reported
        return x

    return stuck


def test_a_stall_is_logged_once_naming_the_stage_with_every_stack(
    backend: str, stall_log: OpensOnStall
) -> None:
    stuck = stage(_hangs_at_2(stall_log.gate), name="stuck")
    out = stuck.run(range(5), backend=backend, stall_timeout=STALL)
    assert out == [0, 1, 2, 3, 4]  # the gate opened: the run went on to its end
    blamed = [m for m in stall_log.stalls if "inside a call" in m]
    assert len(blamed) == 1, stall_log.stalls
    [report] = blamed
    assert "stalled: stuck (inside a call for" in report
    assert "thread MainThread" in report  # the caller's threads
    assert "thread flowpipe-stuck-0" in report
    if backend == "process":  # the worker's own stack, through faulthandler
        assert "worker process" in report
        assert "most recent call first" in report
        assert "test_stalls.py" in report  # the line where the stage waits
    else:
        assert "test_stalls.py" in report or backend == "ray"


def test_on_stall_raise_raises_stalled(backend: str, tmp_path: Path) -> None:
    gate = FileGate(tmp_path / "gate")
    stuck = stage(_hangs_at_2(gate), name="stuck")
    try:
        with pytest.raises(Stalled) as info:
            stuck.run(range(5), backend=backend, stall_timeout=STALL, on_stall="raise")
    finally:
        gate.open()
    err = info.value
    assert isinstance(err, FlowpipeError)
    assert any(s.startswith("stuck (inside a call") for s in err.stages), err.stages
    assert "thread MainThread" in err.stacks
    assert "stalled: stuck" in str(err)


def test_a_source_that_stops_giving_items_is_named(stall_log: OpensOnStall) -> None:
    def sensor() -> Iterator[int]:
        yield 1
        stall_log.gate.wait()  # opened by the stall report below
        yield 2

    with pytest.raises(Stalled) as info:
        stage(lambda x: x, name="echo").run(sensor(), stall_timeout=STALL, on_stall="raise")
    stall_log.gate.open()
    assert info.value.stages == ["source (no item from the source)"]


def test_a_caller_that_does_not_read_is_not_a_stall(stall_log: OpensOnStall) -> None:
    with stage(lambda x: x, name="echo", buffer=2).iter(range(100), stall_timeout=0.1) as run:
        assert next(run) == 0
        # The pipeline fills up and waits for this caller, which does not read for a while.
        threading.Event().wait(0.5)  # time passing is what is tested, not a synchronisation
        assert list(run) == list(range(1, 100))
    assert stall_log.stalls == []


def test_a_live_run_with_nothing_put_is_not_a_stall(stall_log: OpensOnStall) -> None:
    with stage(lambda x: x, name="echo").start(stall_timeout=0.1) as live:
        threading.Event().wait(0.5)  # idle: nothing was put
        live.put(1)
        assert live.get(timeout=5) == 1
    assert stall_log.stalls == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"stall_timeout": 0}, "stall_timeout=0: expected a positive number"),
        ({"stall_timeout": -1.0}, "stall_timeout=-1.0: expected a positive number"),
        ({"stall_timeout": "10s"}, "stall_timeout='10s': expected a positive number"),
        ({"stall_timeout": True}, "stall_timeout=True: expected a positive number"),
        ({"stall_timeout": float("inf")}, "stall_timeout=inf: expected a positive number"),
        ({"stall_timeout": 1.0, "on_stall": "ignore"}, "on_stall='ignore': expected 'warn'"),
        ({"on_stall": "raise"}, "on_stall= needs stall_timeout="),
    ],
)
def test_bad_stall_options_are_refused(options: dict[str, Any], problem: str) -> None:
    echo = stage(lambda x: x, name="echo")
    with pytest.raises(RunOptionError) as info:
        echo.run([1], **options)
    assert problem in str(info.value)
    with pytest.raises(RunOptionError) as info:
        echo.start(**options)
    assert problem in str(info.value)
