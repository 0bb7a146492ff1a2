"""A stage in a run, and the one loop every worker of every backend runs.

::

    input Channel ──take slice──► Caller.submit ... Caller.receive ──outputs──► Reorderer ──► Emitter ──► next Channel(s)
         ▲   (seq, offset, items)   (up to ``depth`` slices in flight)         (ordered, workers>1)   (fan-out: every branch)
         │
    feed.feed_source (a source iterator or a source stage)

Where the calls run is the ``Caller``'s business: ``LocalCaller`` runs the
stage in the worker thread itself (depth 1); a backend whose workers run
elsewhere supplies one (``remote.caller.RemoteCaller``: a worker process, an
actor) with several slices in flight. Taking, ordering, emitting and counting
are the same everywhere.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol

from ..._errors import StageError
from ..._observe.counters import WorkerCounters
from ..._observe.usage import ThreadClock
from ..._transport.buffer import Aborted, Channel
from . import keep
from .fused import FusedCaller, count_fused, slice_caller
from .invoke import Part, close_callable
from .parts import PartSink, RunsPartSink, hand_on_runs, sealed_count
from .release import Releaser
from .routing import Emitter, Reorderer
from .shaping import (
    MAX_SLICE,
    SLICE_TARGET_SECONDS,
    SliceSizer,
    WindowTaker,
    slice_bytes,
    slice_size,
)
from .state import Gate, Opener, RunState
from .timeouts import TimedCalls, timed

if TYPE_CHECKING:
    from ..._plan.plan import StageNode
    from .keyed import KeyRouter

ASYNC_GROUP_SECONDS = 0.005  # an async stage elsewhere waits this long to fill a group


class Caller(Protocol):
    """How a worker loop has a slice called: here (``LocalCaller``) or elsewhere.

    ``submit`` hands a slice over and returns at once; ``receive`` gives the
    outputs of the oldest slice submitted and not yet received. A caller whose
    worker is elsewhere keeps ``depth`` slices in flight, so the worker does
    not sit idle for a round trip between slices.
    """

    slice_target: float  # seconds of work per slice worth one hand-off
    slice_bytes: int | None  # large-buffer bytes a slice may hold (None: no bound)
    depth: int  # slices in flight at most
    max_slice: int  # items a slice may hold at most (1: each call timed on its own)
    releases: bool  # hands on a function stage's outputs before a slow call (``release``)

    def submit(self, items: list[Any], offset: int, parts: bool = False) -> None:
        """``parts``: ``receive`` will get a sink for outputs handed on while the slice
        runs (a worker elsewhere answers in parts only then)."""
        ...

    def receive(self, part: Part | None = None) -> list[Any]: ...
    def close(self) -> None: ...
    def park(self) -> keep.Kept | None:
        """At the end of a run of a ``keep_alive`` stage: the worker, kept for the
        next run instead of closed (``None``: it cannot be kept; ``close`` it)."""
        ...


CallerFactory = Callable[[int, WorkerCounters], Caller]


class LocalCaller:
    """Runs the stage in the worker thread: builds the callable (a class stage's instance)."""

    slice_target = SLICE_TARGET_SECONDS
    slice_bytes: int | None = None
    depth = 1
    max_slice = MAX_SLICE
    releases = True

    def __init__(
        self,
        node: StageNode,
        counters: WorkerCounters,
        open_handles: Opener | None = None,
        kept: keep.KeptCallable | None = None,
        releaser: Releaser | None = None,
        fused: list[WorkerCounters] | None = None,  # the fused stages' rows (``fused.py``)
    ) -> None:
        self.fn = node.stage.make_callable() if kept is None else kept.fn
        timeout = node.stage.options.timeout
        self.timed: TimedCalls | None = None
        try:
            fn = self.fn
            if timeout is not None:  # each call in a call thread, abandoned past it
                self.timed = TimedCalls(node.label, timeout)
                fn = timed(fn, node.stage.call_kind, self.timed)
            self.slices = slice_caller(node, fn, counters, fused, releaser)
        except BaseException:
            close_callable(self.fn)
            raise
        self.open_handles = open_handles  # outputs of a worker elsewhere may be handles
        self.submitted: tuple[list[Any], int] = ([], 0)
        self.counters = counters
        self.clock = ThreadClock()  # built in the worker thread, which makes the calls

    def submit(self, items: list[Any], offset: int, parts: bool = False) -> None:
        self.submitted = (items, offset)  # ``parts``: ``receive`` gets the sink, or None

    def receive(self, part: Part | None = None) -> list[Any]:
        items, offset = self.submitted
        self.submitted = ([], 0)
        if self.open_handles is not None:
            items = self.open_handles(items)
        # This thread's own CPU time and wait for a core: not other threads', not other
        # programs'.
        self.clock.begin()
        try:
            return self.slices.call(items, offset, part)
        finally:
            self.counters.add_usage(*self.clock.end())

    def close(self) -> None:
        if self.timed is not None:
            self.timed.close()
        self.clock.close()
        try:
            close_callable(self.fn)
        finally:
            if isinstance(self.slices, FusedCaller):
                self.slices.close_fused()

    def park(self) -> keep.KeptCallable:
        if self.timed is not None:  # its call thread is this run's: the next run makes its own
            self.timed.close()
        return keep.KeptCallable(self.fn)


class InFlight(NamedTuple):
    """A slice taken and submitted, not yet received."""

    seq: int
    offset: int
    items: list[Any]
    asked: float  # when the worker began to wait for it (clock)
    taken: float  # when it was taken
    # A keyed stage's runs called as this one slice: (seq, offset, items) each.
    runs: list[tuple[int, int, list[Any]]] | None = None
    parts: bool = False  # outputs may leave while it runs, through a ``PartSink``


def streams_outputs(node: StageNode) -> bool:
    """Whether the stage hands its outputs on while a slice runs (``outflow``): a
    generator stage without ``batch``."""
    return node.stage.call_kind == "generator" and node.stage.options.batch is None


def releases_early(node: StageNode) -> bool:
    """Whether a slice hands on the outputs computed before a call that turned slow
    (``release``): a function stage, one item per call."""
    opts = node.stage.options
    return node.stage.call_kind == "function" and opts.batch is None and not node.fused


class StageRun:
    """One stage in one run: its input, where outputs go, its workers' counters and loop."""

    # What each worker counts into. Only the benchmarks swap it, for a subclass
    # whose updates do nothing, to measure what the statistics cost.
    counters_class: ClassVar[type[WorkerCounters]] = WorkerCounters

    def __init__(
        self,
        node: StageNode,
        inp: Channel,
        emitter: Emitter,
        state: RunState,
        sealed: tuple[bool, bool] = (False, False),
        router: KeyRouter | None = None,
    ) -> None:
        opts = node.stage.options
        self.node = node
        self.inp = inp
        self.emitter = emitter
        self.state = state
        # An async stage has one dispatching worker with ``workers`` items in flight.
        threads = 1 if node.stage.call_kind == "async" else opts.workers
        self.counters = [self.counters_class() for _ in range(threads)]
        # A fused group's other stages (one worker): their rows in the stats.
        self.fused_counters = [self.counters_class() for _ in node.fused]
        ordered_many = opts.ordered and (opts.workers > 1 or node.stage.call_kind == "async")
        room: Gate | None = None
        if ordered_many:  # a keyed stage's room is the router's: a budget per worker
            room = router.room if router is not None else state.gate(2 * opts.workers + 2)
        self.reorderer = Reorderer(emitter, room) if room is not None else None
        if self.reorderer is not None:
            state.on_stop.append(self.reorderer.abort)
        self.streams = streams_outputs(node)
        self.releases = releases_early(node)
        self.in_flight = state.gate(opts.workers) if node.stage.call_kind == "async" else None
        self.take = WindowTaker(inp, opts.window, opts.stride).take if opts.window else inp.take
        # A backend that runs the calls elsewhere (a worker process) sets this;
        # taking, ordering and emitting stay here, the same for every backend.
        self.caller_factory: CallerFactory | None = None
        # A keyed stage (``key=``): its router gives each worker a channel of its own.
        self.router = router
        # Whether the edge into / out of this stage carries sealed slices (the
        # plan's ``EdgePlan``): then entries are counted by what they carry.
        self.sealed_in, self.sealed_out = sealed
        self._live = len(self.counters)
        self._lock = threading.Lock()

    def worker_finished(self) -> None:
        with self._lock:
            self._live -= 1
            last = self._live == 0
        if last:
            self.emitter.close()

    def run_worker(self, wid: int) -> None:
        """The body of one worker: build the caller, loop over slices, tear down."""
        try:
            if self.node.stage.call_kind == "async" and self.caller_factory is None:
                from .aio import AsyncStageLoop  # only a run with an async stage needs it

                AsyncStageLoop(self).run()
            else:
                self._with_caller(wid)
        except Aborted:
            pass
        except StageError as exc:
            self.state.fail(exc)
        except BaseException as exc:  # a worker never dies silently
            err = StageError(self.node.label, None, cause=exc)
            err.__cause__ = exc
            self.state.fail(err)
        finally:
            self.worker_finished()

    def _with_caller(self, wid: int) -> None:
        counters = self.counters[wid]
        key = keep.key_of(self.node)  # a ``keep_alive`` stage's workers outlive the run
        t0 = time.perf_counter()
        if self.caller_factory is not None:
            caller: Caller = self.caller_factory(wid, counters)
        else:
            kept = keep.take(key, self.state, wid)
            releaser = self.state.releaser() if self.releases else None
            caller = LocalCaller(
                self.node, counters, self.state.open_handles, kept, releaser, self.fused_counters
            )
        counters.startup += time.perf_counter() - t0  # a class stage's __init__, a process boot
        try:
            WorkerLoop(self, caller, counters, wid).run()
        except BaseException:
            try:  # the error in flight is the run's error, not one close() may raise
                caller.close()
            except BaseException:
                pass
            raise
        if key is not None and not self.state.stopped:  # the run ended: keep it for the next
            parked = caller.park()
            if parked is not None:
                keep.give(key, parked, self.state, wid)
                return
        caller.close()  # its error (a class stage's close() raised) fails the run

    def hand_on(self, seq: int, outputs: list[Any]) -> None:
        """The outputs of slice ``seq`` (or of input ``seq`` of an async stage), done."""
        if self.reorderer is not None:
            self.reorderer.complete(seq, outputs)
        else:
            self.emitter.emit(outputs)

    def hand_on_part(self, seq: int, outputs: list[Any]) -> None:
        """Outputs of slice ``seq`` that is still running (a generator stage's)."""
        if self.reorderer is not None:
            self.reorderer.part(seq, outputs)
        else:
            self.emitter.emit(outputs)


class WorkerLoop:
    """Take a slice, submit it, receive the oldest, hand its outputs on; until the input ends.

    Up to ``caller.depth`` slices are in flight. With one in flight, the next
    is taken only if it is ready now (and there is room to reorder it): waiting
    for input must never hold back outputs that are already computed.
    """

    def __init__(
        self, stage_run: StageRun, caller: Caller, counters: WorkerCounters, wid: int = 0
    ) -> None:
        opts = stage_run.node.stage.options
        self.sr = stage_run
        self.caller = caller
        self.counters = counters
        self.depth = 1 if opts.window else caller.depth
        self.sizer = SliceSizer(caller.max_slice, caller.slice_target, caller.slice_bytes)
        self.batch, self.timeout = opts.batch, opts.batch_timeout
        if stage_run.node.stage.call_kind == "async":  # elsewhere: a group of items in flight
            self.batch, self.timeout = opts.workers, ASYNC_GROUP_SECONDS
        self.pending: deque[InFlight] = deque()
        self.last_done = 0.0  # when the slice received last was handed on
        # Keyed: this worker's own channel, whose entries are runs (a run is a slice).
        self.inbox = stage_run.router.inboxes[wid] if stage_run.router is not None else None

    def run(self) -> None:
        pending, ended = self.pending, False
        while pending or not ended:
            if not ended and len(pending) < self.depth:
                got = self._take(wait=not pending)
                if got is None:
                    ended = True
                    continue
                if got is not False:
                    self.caller.submit(got.items, got.offset, got.parts)
                    pending.append(got)
                    continue
            self._finish(pending.popleft())

    def _take(self, wait: bool) -> InFlight | Literal[False] | None:
        """The next slice; ``None`` at the end of input; ``False`` (only when not
        ``wait``ing) if none is ready now or there is no room to reorder one."""
        sr, sizer, batch = self.sr, self.sizer, self.batch
        room = sr.reorderer.room if sr.reorderer is not None and self.inbox is None else None
        clock = time.perf_counter
        t0 = clock()
        if self.inbox is not None:
            return self._take_runs(wait, t0)
        got: tuple[int, int, list[Any]] | Literal[False] | None
        if wait:
            if room is not None:
                room.acquire()
            size = batch or slice_size(sizer, sr.inp)
            got = sr.take(size, batch or 1, self.timeout if batch else None)
        elif room is not None and not room.try_acquire():
            return False
        else:
            got = sr.inp.take_ready(batch or slice_size(sizer, sr.inp), batch or 1)
        if not got:
            if room is not None:
                room.release()
            return got
        t1 = clock()
        if self.counters.started is None:  # busy shares count from the first input on
            self.counters.started = t1
        seq, offset, items = got
        return InFlight(seq, offset, items, t0 if wait else t1, t1, None, self._parts(items, None))

    def _take_runs(self, wait: bool, t0: float) -> InFlight | Literal[False] | None:
        """A keyed stage's next slice: one or more runs from this worker's inbox."""
        assert self.inbox is not None
        got = self.inbox.take(wait)
        if not got:
            return got
        t1 = time.perf_counter()
        if self.counters.started is None:
            self.counters.started = t1
        return InFlight(
            got[0], got[1], got[2], t0 if wait else t1, t1, got[3], self._parts(got[2], got[3])
        )

    def _parts(self, items: list[Any], runs: list[Any] | None) -> bool:
        """Whether a slice's outputs may leave while it runs, through a part sink
        (``parts``): a generator's, and a function stage's outputs computed before a
        slow call (``release``), also a keyed slice's of several runs; not a slice of
        one item, which has nothing computed before a slow call. Decided once: the
        caller tells a worker elsewhere (which answers in parts only then), and
        ``_finish`` makes the sink."""
        sr = self.sr
        return sr.streams or (
            sr.releases and self.caller.releases and (sr.sealed_in or len(items) > 1)
        )

    def _finish(self, slice_: InFlight) -> None:
        """Receive the oldest slice, hand its outputs on, count it."""
        sr, clock = self.sr, time.perf_counter
        # Busy from when the worker could start on it: its submission, or the end
        # of the slice before it (slices in flight queue at the worker).
        start = max(slice_.taken, self.last_done)
        sink: PartSink | None = None
        if slice_.parts and slice_.runs is not None and sr.reorderer is not None:
            sink = RunsPartSink(sr, slice_.runs, self.counters, start)  # run by run
        elif slice_.parts:
            sink = PartSink(sr, slice_.seq, self.counters, start)
        self.counters.calling = clock()  # for a stall watch: inside a call since
        if slice_.runs is None:
            outputs = self.caller.receive(sink)
            t2 = clock()
            self.counters.calling = 0.0
            sr.hand_on(slice_.seq, outputs)
        else:
            try:
                outputs = self.caller.receive(sink)
            except StageError as exc:
                remap_error(exc, slice_.runs)
                raise
            t2 = clock()
            self.counters.calling = 0.0
            if isinstance(sink, RunsPartSink):
                sink.finish(outputs)  # what its parts did not hand on
            else:
                hand_on_runs(sr, slice_.runs, outputs)
        t3 = clock()
        self.last_done = t3
        items = slice_.items
        held = sink.blocked if sink is not None else 0.0
        self.sizer.update(len(items), t2 - start - held, slice_bytes(self.sizer, items, outputs))
        if self.inbox is not None:  # the router cuts this worker's runs to its slice size
            self.inbox.limit = self.batch or self.sizer.size
        n_in = sealed_count(items) if sr.sealed_in else len(items)
        n_out = sealed_count(outputs) if sr.sealed_out else len(outputs)
        if sink is not None:
            if sr.streams:  # a generator: latency per output, its last ones now
                self.counters.record_latency(t2 - sink.mark, n_out)
            n_out += sink.handed_on  # outputs it handed on before the slice ended
        if sr.fused_counters:
            count_fused(sr.fused_counters, n_in, n_out)
        calls = 1 if sr.node.stage.options.batch else n_in
        asked = slice_.asked - slice_.taken + start
        self.counters.count_slice(
            n_in, n_out, calls, asked, start, t2, t3, held, per_call=not sr.streams
        )


def remap_error(exc: StageError, runs: list[tuple[int, int, list[Any]]]) -> None:
    """``exc`` from a slice of several runs names its input as if they were one stretch
    from the first run's offset: make it name the input's own position."""
    if exc.index is None:
        return
    k = exc.index - runs[0][1]
    for _, offset, items in runs:
        if k < len(items):
            index = offset + k
            break
        k -= len(items)
    else:
        return
    if index != exc.index:
        exc.args = (exc.args[0].replace(f"input #{exc.index} ", f"input #{index} ", 1),)
        exc.index = index
