"""Wiring a plan into a live run, and the ``Run`` object users iterate.

The builder walks the plan right to left, so every stage's downstream channels
exist before its workers start::

    build(steps, downstream=[output])  ->  entry channels of steps[0]

A stage's input channel is made with that stage's ``buffer``/``overflow``; a
join gets one channel per branch and a thread that zips them; a merge lets
every branch emit into the same downstream channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .._dsl.compose import NO_SOURCE
from .._dsl.pipeline import Pipeline
from .._errors import GraphError, RunOptionError
from .._observe.counters import WorkerCounters
from .._observe.stats import RunStats, StageStats, combine
from .._plan.plan import FanOutNode, Node, Plan, StageNode, compile_plan
from .._transport.buffer import Aborted, Channel
from .._transport.wire import unpack_items
from .base import Backend, Worker, get_backend
from .engine import MAX_SLICE, Emitter, RunState, StageRun, feed_source, join_rows
from .thread import start_thread

Out = TypeVar("Out")
logger = logging.getLogger("flowpipe")
JOIN_TIMEOUT = 2.0  # seconds close() waits in all for workers to leave


class _Builder:
    def __init__(self, plan: Plan, state: RunState) -> None:
        self.plan = plan
        self.state = state
        self.stage_runs: list[StageRun] = []
        self.workers: list[Worker] = []
        self.backends: dict[str, Backend] = {}
        self.joins: list[tuple[Any, ...]] = []

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            self.backends[name] = get_backend(name)
        return self.backends[name]

    def build(self, steps: tuple[Node, ...], downstream: list[Channel]) -> list[Channel]:
        for step in reversed(steps):
            downstream = self._step(step, downstream)
        return downstream

    def _step(self, step: Node, downstream: list[Channel]) -> list[Channel]:
        if isinstance(step, FanOutNode):
            return self._fan_out(step, downstream)
        opts = step.stage.options
        inp = self.state.channel(opts.buffer, opts.overflow, name=step.label)
        stage_run = StageRun(step, inp, Emitter(downstream), self.state)
        self.stage_runs.append(stage_run)
        return [inp]

    def start(self) -> None:
        """Start every worker, once the whole graph is wired (no channel gains a producer later)."""
        for stage_run in self.stage_runs:
            self.workers.extend(self.backend(stage_run.node.backend).start_stage(stage_run))
        for args in self.joins:
            self.workers.append(start_thread("join", join_rows, *args))

    def _fan_out(self, step: FanOutNode, downstream: list[Channel]) -> list[Channel]:
        entries: list[Channel] = []
        if step.merge:
            for branch in step.branches:
                entries.extend(self.build(branch, downstream))
            return entries
        inputs = [self.state.channel(None, name="join") for _ in step.branches]
        emitter = Emitter(downstream)
        self.joins.append((inputs, step.keys, emitter, self.state))
        for branch, inp in zip(step.branches, inputs):
            entries.extend(self.build(branch, [inp]))
        return entries


def run_cleanups(state: RunState) -> None:
    for cleanup in state.cleanups:
        try:
            cleanup()
        except Exception:  # a cleanup never hides the run's own outcome
            logger.exception("flowpipe: cleanup after a run failed")


class Run(Generic[Out]):
    """A running pipeline: an iterator over its outputs and a context manager.

    Leaving early (``break``, ``close()``, garbage collection, Ctrl-C) stops
    every worker. Workers hold no reference to this object, so dropping it is
    enough to stop them.
    """

    def __init__(
        self,
        state: RunState,
        output: Channel,
        workers: list[Worker],
        parts: list[tuple[str, int, list[WorkerCounters], Channel | None]],
    ) -> None:
        self._state = state
        self._output = output
        self._workers = workers
        self._parts = parts
        self._buffer: list[Any] = []
        self._pos = 0
        self._closed = False
        self._started = time.perf_counter()
        self._ended: float | None = None

    # -- iteration ----------------------------------------------------------------
    def __iter__(self) -> Iterator[Out]:
        return self

    def __next__(self) -> Out:
        if self._pos < len(self._buffer):
            item: Out = self._buffer[self._pos]
            self._pos += 1
            return item
        got = self._take()
        if got is None:
            raise StopIteration
        self._buffer, self._pos = got, 1
        return got[0]  # type: ignore[no-any-return]

    def collect(self) -> list[Out]:
        """Every remaining output, in order (what ``pipe.run`` returns)."""
        out: list[Out] = self._buffer[self._pos :]
        self._buffer, self._pos = [], 0
        while (got := self._take()) is not None:
            out.extend(got)
        return out

    def _take(self) -> list[Any] | None:
        if self._closed:
            return None
        try:
            got = self._output.take(MAX_SLICE)
        except Aborted:
            got = None
        except BaseException:  # Ctrl-C while waiting: stop everything, then re-raise
            self.close()
            raise
        if got is not None:
            return unpack_items(got[2]) if self._state.packed else got[2]
        self._finish()
        if self._state.error is not None:
            raise self._state.error
        return None

    # -- stopping -----------------------------------------------------------------
    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ended = time.perf_counter()
        if self._state.error is not None:
            self._state.stop()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for w in self._workers:
            w.join(max(0.0, deadline - time.monotonic()))
        stuck = [w for w in self._workers if w.is_alive()]
        if stuck:
            logger.warning(
                "%d flowpipe worker(s) still inside a stage call after close()", len(stuck)
            )
        run_cleanups(self._state)
        logger.debug("run finished in %.3fs", self._ended - self._started)

    def close(self) -> None:
        """Stop every worker now (outputs not yet read are discarded)."""
        self._buffer, self._pos = [], 0  # outputs not yet read are discarded
        if not self._closed:
            self._state.stop()
            self._finish()

    def __enter__(self) -> Run[Out]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise from a finaliser
            pass

    # -- observing ----------------------------------------------------------------
    @property
    def stats(self) -> RunStats:
        """Per-stage statistics: live while the run goes on, final after it ends."""
        end = self._ended if self._ended is not None else time.perf_counter()
        elapsed = end - self._started
        stages: list[StageStats] = []
        for name, workers, counters, ch in self._parts:
            stages.append(
                combine(
                    name,
                    counters,
                    workers=workers,
                    dropped=ch.dropped if ch is not None else 0,
                    fill=len(ch) if ch is not None else 0,
                    peak=ch.peak if ch is not None else 0,
                    size=ch.capacity if ch is not None else 0,
                    elapsed=elapsed,
                )
            )
        return RunStats(tuple(stages), elapsed)


def _opener(plan: Plan, source: Any) -> tuple[str, Callable[[], Iterable[Any]]]:
    first = plan.source_stage
    if first is not None:
        if source is not None:
            raise GraphError(
                f"stage {first.label!r} takes no argument, so it is the source: run() takes no source"
            )
        return first.label, first.stage.make_callable()
    if source is None:
        raise GraphError("this pipeline needs a source: pipe.run(items), or items | pipe")
    if not isinstance(source, Iterable):
        raise GraphError(f"a source must be iterable, got {type(source).__name__}: {source!r:.60}")
    return "source", lambda: source


def open_run(pipe: Pipeline[Any, Out], source: Any, *, backend: str, **options: Any) -> Run[Out]:
    if options:
        given = ", ".join(f"{k}={v!r:.40}" for k, v in sorted(options.items()))
        raise RunOptionError(
            f"unknown run option(s): {given}; run/iter take the source and backend="
        )
    if source is NO_SOURCE:
        source = pipe.source
    elif pipe.source is not None:
        raise GraphError(f"{pipe} already has a source bound; call run() without one")
    plan = compile_plan(pipe, backend)
    label, open_source = _opener(plan, source)
    steps = plan.steps[1:] if plan.source_stage is not None else plan.steps
    state = RunState()
    # Outputs of worker processes may arrive as shared-memory handles (wire.Packed).
    state.packed = "process" in plan.backends
    # The hand-over to the caller is as large as the last stage's own buffer, so a
    # small explicit ``buffer=`` bounds what is read ahead of a slow consumer.
    last = plan.steps[-1]
    output = state.channel(
        last.stage.options.buffer if isinstance(last, StageNode) else None, name="output"
    )
    builder = _Builder(plan, state)
    source_counters = WorkerCounters()
    try:
        emitter = Emitter(builder.build(steps, [output]))
        for name in plan.backends:
            builder.backend(name)  # an unavailable backend fails before anything starts
        builder.start()
        feeder = start_thread(
            "source", feed_source, open_source, label, emitter, state, source_counters
        )
    except BaseException:
        state.stop()
        for w in builder.workers:
            w.join(JOIN_TIMEOUT)
        run_cleanups(state)
        raise
    parts: list[tuple[str, int, list[WorkerCounters], Channel | None]] = []
    if plan.source_stage is not None:
        parts.append((label, 1, [source_counters], None))
    parts.extend(
        (sr.node.label, sr.node.stage.options.workers, sr.counters, sr.inp)
        for sr in sorted(builder.stage_runs, key=lambda sr: sr.node.index)
    )
    logger.debug("run started: %s (%s)", pipe, backend)
    return Run(state, output, [feeder, *builder.workers], parts)
