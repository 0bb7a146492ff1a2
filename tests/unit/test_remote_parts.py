"""``RemoteCaller`` and outputs that come in parts: none is ever dropped.

A worker elsewhere may answer a slice in parts (``PartOutputs``) before its
last answer: a generator's outputs, and a function stage's outputs computed
before a call turned slow (``core/release.py``). The caller tells the worker,
slice by slice, whether it has a sink for parts; a stand-in worker that
answers in parts all the same (as one once did for a keyed slice of several
runs, losing frames) still loses nothing.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any, cast

import pytest

from flowpipe import stage
from flowpipe._observe.counters import WorkerCounters
from flowpipe._runtime.core.loop import StageRun
from flowpipe._runtime.core.state import RunState
from flowpipe._runtime.remote.caller import RemoteCaller
from flowpipe._runtime.remote.errors import WorkerDied
from flowpipe._runtime.remote.messages import PartOutputs, Reply, SliceOutputs


class AnswersInParts:
    """A stand-in worker: answers each slice's first half as a part, then the rest;
    records the ``parts`` flag of each send; can die before its second answer."""

    def __init__(self, sends: list[tuple[list[Any], bool]], dies: bool = False) -> None:
        self.sends = sends
        self.dies = dies
        self.answers: deque[Reply] = deque()
        self.credit = 0

    def send(
        self,
        items: list[Any],
        offset: int,
        sealed: bool = False,
        skip: int = 0,
        parts: bool = False,
    ) -> None:
        self.sends.append((list(items), parts))
        made = [x * 10 for x in items]
        outputs, left = made[skip:], max(0, skip - len(made))  # as ``SliceCaller`` skips
        half = len(outputs) // 2
        self.answers.append(PartOutputs(outputs[:half], []))
        self.answers.append(SliceOutputs(outputs[half:], 0, 0, 0, left, []))

    def reply(self, offset: int, give_up_at: float | None = None) -> Reply:
        answer = self.answers.popleft()
        if self.dies and isinstance(answer, SliceOutputs):
            self.dies = False
            self.answers.clear()
            raise WorkerDied()
        return answer

    def more(self) -> None:
        self.credit += 1

    def park(self) -> bool:
        return False

    def exit_description(self) -> str:
        return "exit code 1"

    def kill(self) -> None:
        raise AssertionError("no timeout is set")

    def close(self) -> None:
        return None


def times_ten(x: int) -> int:
    return x * 10


def caller_of(sends: list[tuple[list[Any], bool]], dies: bool = False) -> RemoteCaller:
    node = SimpleNamespace(label="times_ten", stage=stage(times_ten, retries=1))
    stage_run = SimpleNamespace(node=node, state=RunState(), sealed_in=False, sealed_out=False)
    workers = iter([AnswersInParts(sends, dies), AnswersInParts(sends)])
    return RemoteCaller(
        cast("StageRun", stage_run),
        WorkerCounters(),
        lambda: next(workers),
        what="worker",
        slice_target=0.05,
    )


def test_without_a_sink_the_worker_is_told_and_parts_sent_anyway_are_kept() -> None:
    sends: list[tuple[list[Any], bool]] = []
    caller = caller_of(sends)
    caller.submit([1, 2, 3, 4], 0)  # e.g. a keyed slice of several runs: no sink
    assert caller.receive() == [10, 20, 30, 40]
    assert sends == [([1, 2, 3, 4], False)]


def test_with_a_sink_parts_go_to_it_and_the_rest_is_returned() -> None:
    sends: list[tuple[list[Any], bool]] = []
    caller = caller_of(sends)
    sink: list[list[Any]] = []
    caller.submit([1, 2, 3, 4], 0, parts=True)
    assert caller.receive(sink.append) == [30, 40]
    assert sink == [[10, 20]]
    assert sends == [([1, 2, 3, 4], True)]


@pytest.mark.parametrize("with_sink", [False, True])
def test_a_crash_after_a_part_runs_again_what_did_not_leave(with_sink: bool) -> None:
    # Held parts (no sink) did not leave: they are made again; parts given to a sink
    # did: the re-run skips them, so every output leaves exactly once.
    sends: list[tuple[list[Any], bool]] = []
    caller = caller_of(sends, dies=True)
    sink: list[list[Any]] = []
    caller.submit([1, 2, 3, 4], 0, parts=with_sink)
    out = caller.receive(sink.append if with_sink else None)
    assert [x for part in sink for x in part] + out == [10, 20, 30, 40]
