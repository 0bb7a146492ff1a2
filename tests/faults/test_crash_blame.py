"""Faults: a worker that dies inside a call is blamed on exactly the input being called.

End to end on the backends with workers elsewhere (process, Ray), and, with a
stand-in worker, the case a real one shows only now and then: two slices in
flight, the worker dies on the second, and the first is lost with it (a Ray
actor's finished call whose answer was not fetched yet fails with it).
"""

from __future__ import annotations

import importlib.util
import os
from collections import deque
from types import SimpleNamespace
from typing import Any, Literal, cast

import pytest
from helpers import Journal

from flowpipe import WorkerCrashed, stage
from flowpipe._observe.counters import WorkerCounters
from flowpipe._runtime.core.loop import StageRun
from flowpipe._runtime.core.state import RunState
from flowpipe._runtime.remote.caller import RemoteCaller
from flowpipe._runtime.remote.errors import WorkerDied
from flowpipe._runtime.remote.messages import SliceOutputs

ELSEWHERE = ["process"]
if importlib.util.find_spec("ray") is not None:
    ELSEWHERE.append("ray")


@pytest.mark.parametrize("backend", ELSEWHERE)
def test_a_crash_names_the_input_that_killed_the_worker_not_its_slice(
    backend: str, journal: Journal
) -> None:
    def deadly(x: int) -> int:
        journal.write(str(x))
        if x == 3:
            os._exit(1)
        return x

    with pytest.raises(WorkerCrashed) as info:
        stage(deadly, name="deadly").run(list(range(40)), backend=backend)
    err = info.value
    assert (err.stage, err.index, err.item) == ("deadly", 3, 3)
    assert "input #3" in str(err)
    assert journal.lines().count("3") <= 2  # in its slice, then alone to find it


@pytest.mark.parametrize("backend", ELSEWHERE)
def test_a_batch_stage_crash_names_its_batch(backend: str) -> None:
    def deadly(xs: list[int]) -> list[int]:
        if 3 in xs:
            os._exit(1)
        return xs

    with pytest.raises(WorkerCrashed) as info:
        stage(deadly, name="deadly", batch=4).run(list(range(8)), backend=backend)
    assert (info.value.index, info.value.item) == (0, [0, 1, 2, 3])


DEADLY = 4


class LosesEverySliceInFlight:
    """A stand-in worker: calls each slice as it is sent; once an item killed it, every
    slice not answered yet is lost, the ones it had finished too."""

    def __init__(self, calls: list[int]) -> None:
        self.calls = calls
        self.dead = False
        self.answers: deque[list[Any]] = deque()

    def send(
        self,
        items: list[Any],
        offset: int,
        sealed: bool = False,
        skip: int = 0,
        parts: bool = False,
    ) -> None:
        if self.dead:
            raise WorkerDied()
        outputs = []
        for x in items:
            self.calls.append(x)
            if x == DEADLY:
                self.dead = True
                return
            outputs.append(x)
        self.answers.append(outputs)

    def reply(self, offset: int, give_up_at: float | None = None) -> SliceOutputs:
        if self.dead:
            raise WorkerDied()
        return SliceOutputs(self.answers.popleft(), 0, 0, 0, 0, [])

    def more(self) -> None:
        pass

    def park(self) -> bool:  # keep_alive: never kept
        return False

    def exit_description(self) -> str:
        return "exit code 1"

    def kill(self) -> None:  # a call past its timeout: never here
        raise AssertionError("no timeout is set")

    def close(self) -> None:
        return None


def same(x: int) -> int:
    return x


def caller_of(retries: int, on_error: Literal["raise", "skip"], calls: list[int]) -> RemoteCaller:
    node = SimpleNamespace(label="deadly", stage=stage(same, retries=retries, on_error=on_error))
    stage_run = SimpleNamespace(node=node, state=RunState(), sealed_in=False, sealed_out=False)
    return RemoteCaller(
        cast("StageRun", stage_run),
        WorkerCounters(),
        lambda: LosesEverySliceInFlight(calls),
        what="worker",
        slice_target=0.05,
    )


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_a_crash_in_the_second_slice_in_flight_is_retried_as_configured(retries: int) -> None:
    calls: list[int] = []
    caller = caller_of(retries, "skip", calls)
    caller.submit([0, 1, 2, 3], 0)
    caller.submit([4, 5, 6, 7], 4)  # input 4 kills the worker; slice 0 is lost with it
    out = caller.receive() + caller.receive()
    assert out == [0, 1, 2, 3, 5, 6, 7]
    assert calls.count(DEADLY) == 1 + max(retries, 1)  # in its slice, alone, its retries
    counters = caller.counters
    assert (counters.retries, counters.errors, counters.skipped) == (
        retries,
        calls.count(DEADLY),
        1,
    )


def test_a_crash_in_the_second_slice_in_flight_names_its_input() -> None:
    caller = caller_of(0, "raise", [])
    caller.submit([0, 1, 2, 3], 0)
    caller.submit([4, 5, 6, 7], 4)
    assert caller.receive() == [0, 1, 2, 3]  # run again: the worker did not die on them
    with pytest.raises(WorkerCrashed) as info:
        caller.receive()
    assert (info.value.index, info.value.item) == (DEADLY, DEADLY)
