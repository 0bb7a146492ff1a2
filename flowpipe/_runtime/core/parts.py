"""Outputs of a slice handed on while the slice still runs: the *part* sinks.

A worker loop makes a sink for a slice whose outputs may leave before it ends
(``WorkerLoop._parts``): a generator's, and a function stage's outputs computed
before a call that turned slow (``release``). The sink takes them, from the
worker thread (a generator, a worker elsewhere answering in parts: ``__call__``,
which waits for the slice's turn) or from the releaser thread (``now``, which
never waits), and hands them on through the stage's reorderer::

    slice seq ──part──► PartSink ──► Reorderer.part(seq) ──► next stage
                         (the rest: Reorderer.complete(seq) when the slice ends)

A keyed stage's worker may call several of its *runs* as one slice; each run
leaves under its own number (``keyed``). ``RunsPartSink`` cuts the parts along
the runs: a run whose outputs are all there is complete, the first unfinished
one gets a part, and ``finish`` hands on the rest when the slice ends.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..._observe.counters import WorkerCounters
    from .loop import StageRun

Run = tuple[int, int, list[Any]]  # (seq, offset, items): a keyed stage's run


def sealed_count(entries: list[Any]) -> int:
    """Items in the entries of an edge that carries sealed slices (each knows its ``count``)."""
    return sum(e.count for e in entries)


class PartSink:
    """Takes outputs of slice ``seq`` while the slice still runs: a generator stage's,
    and a function stage's computed before a slow call (``now``, from the releaser).

    The time it waits handing a part on (the next buffer is full) is the
    generator's ``blocked`` time, not its work; the time between parts, over
    the outputs of the part, is its latency per output.
    """

    __slots__ = ("blocked", "counters", "handed_on", "mark", "seq", "stage_run")

    def __init__(
        self, stage_run: StageRun, seq: int, counters: WorkerCounters, started: float
    ) -> None:
        self.stage_run = stage_run
        self.seq = seq
        self.counters = counters
        self.handed_on = 0  # outputs (in items, not sealed slices)
        self.blocked = 0.0  # seconds spent handing parts on
        self.mark = started  # when the outputs of the next part began to be made

    def __call__(self, outputs: list[Any]) -> None:
        sr, clock = self.stage_run, time.perf_counter
        t0 = clock()
        n = sealed_count(outputs) if sr.sealed_out else len(outputs)
        self.handed_on += n
        self.counters.record_latency(t0 - self.mark, n)
        try:
            self._hand_on(outputs)
        finally:
            self.mark = clock()
            self.blocked += self.mark - t0

    def _hand_on(self, outputs: list[Any]) -> None:
        self.stage_run.hand_on_part(self.seq, outputs)

    def now(self, outputs: list[Any]) -> bool | int:
        """Hand ``outputs`` on now if they may leave now (every earlier slice is out);
        False if not (the releaser tries again later): it never waits for a turn."""
        sr = self.stage_run
        if sr.reorderer is not None and not sr.reorderer.part_now(self.seq, outputs):
            return False
        if sr.reorderer is None:
            sr.emitter.emit(outputs)
        self.handed_on += sealed_count(outputs) if sr.sealed_out else len(outputs)
        return True


class RunsPartSink(PartSink):
    """The part sink of a keyed slice of several runs (one output per input, never
    sealed: ``keyed.combines_runs``), with the stage's reorderer: each output leaves
    under its run's number, a finished run at once, an unfinished one as a part."""

    __slots__ = ("given", "run", "runs")

    def __init__(
        self, stage_run: StageRun, runs: list[Run], counters: WorkerCounters, started: float
    ) -> None:
        super().__init__(stage_run, runs[0][0], counters, started)
        self.runs = runs
        self.run = 0  # the run the next output belongs to
        self.given = 0  # its outputs handed on already

    def _hand_on(self, outputs: list[Any]) -> None:
        self._split(outputs, wait=True)

    def now(self, outputs: list[Any]) -> bool | int:
        """As ``PartSink.now``, but by runs: the finished runs leave at once; if the
        unfinished one's turn has not come, how many outputs did leave."""
        went = self._split(outputs, wait=False)
        self.handed_on += went
        return True if went == len(outputs) else went

    def _split(self, outputs: list[Any], wait: bool) -> int:
        """Hand ``outputs`` on from the current run on; how many went (all if ``wait``)."""
        reorderer = self.stage_run.reorderer
        assert reorderer is not None
        done: list[tuple[int, list[Any]]] = []
        i, n = 0, len(outputs)
        while i < n:
            seq, _, items = self.runs[self.run]
            need = len(items) - self.given
            if n - i < need:
                break
            done.append((seq, outputs[i : i + need]))
            i += need
            self.run, self.given = self.run + 1, 0
        if done:  # never waits: each leaves in its turn
            reorderer.complete_many(done)
        if i < n:  # the first unfinished run: a part, in its turn
            seq = self.runs[self.run][0]
            rest = outputs[i:]
            if wait:
                reorderer.part(seq, rest)
            elif not reorderer.part_now(seq, rest):
                return i
            self.given += len(rest)
        return n

    def finish(self, outputs: list[Any]) -> None:
        """The slice ended: ``outputs`` (those not handed on yet) leave by runs."""
        self._split(outputs, wait=False)  # they finish every run: nothing waits


def hand_on_runs(sr: StageRun, runs: list[Run], outputs: list[Any]) -> None:
    """A slice of several runs is done: each run's outputs (one per input) leave in its turn."""
    if sr.reorderer is None:
        sr.emitter.emit(outputs)
        return
    done: list[tuple[int, list[Any]]] = []
    start = 0
    for seq, _, items in runs:
        end = start + len(items)
        done.append((seq, outputs[start:end]))
        start = end
    sr.reorderer.complete_many(done)
