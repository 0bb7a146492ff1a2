"""``RunsPartSink``: a keyed slice of several runs hands its early outputs on run by run.

The runs of one worker's slice are numbered among the other workers' runs; a
finished run completes under its number at once, an unfinished one leaves as a
part in its turn, and from the releaser (``now``, which never waits) only what
may leave now does, saying how many went.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from flowpipe._observe.counters import WorkerCounters
from flowpipe._runtime.core.loop import StageRun
from flowpipe._runtime.core.parts import RunsPartSink
from flowpipe._runtime.core.routing import Emitter, Reorderer
from flowpipe._runtime.core.state import Gate


class Collect:
    def __init__(self) -> None:
        self.out: list[Any] = []

    def emit(self, items: list[Any]) -> None:
        self.out.extend(items)


def sink_of(runs: list[tuple[int, int, list[Any]]]) -> tuple[RunsPartSink, Reorderer, Collect]:
    collect = Collect()
    reorderer = Reorderer(cast("Emitter", collect), Gate(100))
    sr = SimpleNamespace(reorderer=reorderer, emitter=collect, sealed_out=False)
    sink = RunsPartSink(cast("StageRun", sr), runs, WorkerCounters(), 0.0)
    return sink, reorderer, collect


def test_early_outputs_leave_run_by_run_each_in_its_turn() -> None:
    # This worker's runs are numbers 1 and 3; 0 and 2 are another worker's.
    sink, reorderer, collect = sink_of([(1, 10, ["a", "b"]), (3, 14, ["c", "d"])])
    assert sink.now(["A", "B", "C"]) == 2  # run 1 is done; run 3's turn has not come
    assert collect.out == []  # run 0 is not out yet
    reorderer.complete(0, ["x"])
    assert collect.out == ["x", "A", "B"]
    assert sink.now(["C"]) == 0  # run 2 is not out yet: nothing goes, nothing is lost
    reorderer.complete(2, ["y"])
    assert sink.now(["C"]) is True
    assert collect.out == ["x", "A", "B", "y", "C"]
    sink.finish(["D"])
    assert collect.out == ["x", "A", "B", "y", "C", "D"]
    assert sink.handed_on == 3  # A, B, C before the slice ended


def test_a_part_in_the_worker_thread_goes_in_its_turn() -> None:
    sink, _, collect = sink_of([(0, 0, ["a"]), (1, 1, ["b", "c"])])
    sink(["A", "B"])  # run 0 completes; run 1 is next: its part goes at once
    assert collect.out == ["A", "B"]
    sink.finish(["C"])
    assert collect.out == ["A", "B", "C"]
    assert sink.handed_on == 2
