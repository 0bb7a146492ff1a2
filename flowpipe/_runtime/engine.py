"""Scheduling, written once for every backend.

Everything a stage worker does, whatever runs it::

    input Channel ──take slice──► SliceCaller.call(items) ──outputs──► Reorderer ──► Emitter ──► next Channel(s)
         ▲   (seq, offset, items)     retries / on_error        (ordered, workers>1)    (fan-out: every branch)
         │                            batch length check
    feed_source (source iterator or a source stage)

A backend decides only where ``stage_worker`` runs (a thread, a process, an
actor) and how slices travel; the loops below are the same everywhere.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, cast

from .._errors import StageError
from .._observe.counters import WorkerCounters
from .._plan.plan import StageNode
from .._transport.buffer import Aborted, Channel, payload_bytes
from .._transport.wire import bundle_count, owner_prefix, unpack_items
from .outflow import HandOnFailed, OutputFlow, Pace
from .policy import ErrorPolicy

if TYPE_CHECKING:
    import asyncio

MAX_SLICE = 1024
SLICE_TARGET_SECONDS = (
    0.0005  # aim for this much work per slice: amortise hand-offs, keep latency low
)
SOURCE_CHUNK = 256
ASYNC_GROUP_SECONDS = 0.005  # an async stage in a worker process waits this long to fill a group

_run_ids = itertools.count()

Part = Callable[[list[Any]], None]  # takes outputs of a slice that is still running


class RunState:
    """What every worker of one run shares: the first error and the stop switch."""

    __slots__ = (
        "_lock",
        "channels",
        "cleanups",
        "error",
        "gates",
        "on_stop",
        "packed",
        "prefix",
        "stopped",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.stopped = False
        self.channels: list[Channel] = []
        self.gates: list[Gate] = []
        # Backends hook in here: ``on_stop`` runs when the run is stopped (end
        # busy worker processes), ``cleanups`` once every worker has left.
        self.on_stop: list[Callable[[], None]] = []
        self.cleanups: list[Callable[[], None]] = []
        # Names of shared-memory segments of this run start with this; every
        # run of this process with ``owner_prefix()`` (what a sweep after a
        # crash of this process removes).
        self.prefix = f"{owner_prefix(os.getpid())}{next(_run_ids)}_"
        # Set by the process backend: items may be ``wire.Packed`` handles that
        # whatever runs in this process unpacks before use.
        self.packed = False

    def channel(self, capacity: int | None, overflow: str = "block", name: str = "") -> Channel:
        ch = Channel(capacity, overflow, name=name)
        self.channels.append(ch)
        return ch

    def gate(self, limit: int) -> Gate:
        g = Gate(limit)
        self.gates.append(g)
        return g

    def fail(self, exc: BaseException) -> None:
        """Record the first error and stop everything; later errors are consequences."""
        with self._lock:
            if self.error is None and not self.stopped:
                self.error = exc
        self.stop()

    def stop(self) -> None:
        with self._lock:
            first = not self.stopped
            self.stopped = True
        for ch in self.channels:
            ch.abort()
        for g in self.gates:
            g.abort()
        if first:
            for hook in list(self.on_stop):
                hook()


class Gate:
    """A counter of slots with a limit; ``acquire`` blocks while full, abortable."""

    __slots__ = ("_aborted", "_cond", "_used", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._aborted = False
        self._cond = threading.Condition(threading.Lock())

    def acquire(self) -> None:
        with self._cond:
            while self._used >= self.limit and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted
            self._used += 1

    def try_acquire(self) -> bool:
        """Take a slot if one is free now; never waits."""
        with self._cond:
            if self._aborted:
                raise Aborted
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    def release(self, n: int = 1) -> None:
        with self._cond:
            self._used -= n
            self._cond.notify_all()

    def wait_empty(self) -> None:
        with self._cond:
            while self._used and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()


class Emitter:
    """Hands output slices to every downstream channel (several after a fan-out)."""

    __slots__ = ("targets",)

    def __init__(self, targets: list[Channel]) -> None:
        self.targets = targets
        for t in targets:
            t.add_producer()

    def emit(self, items: list[Any]) -> None:
        if items:
            for t in self.targets:
                t.put_many(items)

    def close(self) -> None:
        for t in self.targets:
            t.close()


class Reorderer:
    """Releases output slices in sequence order; bounds how many may wait.

    ``room`` is acquired before a slice is taken and released when the slice
    leaves in order, so at most ``room.limit`` slices are taken-but-unreleased:
    a slow slice holds back a bounded amount of later work, then backpressure.
    """

    __slots__ = ("_aborted", "_lock", "_next", "_pending", "_turn", "emitter", "room")

    def __init__(self, emitter: Emitter, room: Gate) -> None:
        self.emitter = emitter
        self.room = room
        self._pending: dict[int, list[Any]] = {}
        self._next = 0
        self._lock = threading.Lock()
        # Held while emitting (one releaser at a time keeps puts in order);
        # a part waits on it for its slice's turn.
        self._turn = threading.Condition(threading.Lock())
        self._aborted = False

    def complete(self, seq: int, outputs: list[Any]) -> None:
        with self._lock:
            self._pending[seq] = outputs
        with self._turn:
            while True:
                with self._lock:
                    ready = self._pending.pop(self._next, None)
                    if ready is None:
                        return
                    self._next += 1
                self.emitter.emit(ready)
                self.room.release()
                self._turn.notify_all()

    def part(self, seq: int, outputs: list[Any]) -> None:
        """Outputs of slice ``seq`` before it ends: they leave once every earlier slice has."""
        with self._turn:
            while self._next != seq:
                if self._aborted:
                    raise Aborted
                self._turn.wait()
            self.emitter.emit(outputs)

    def abort(self) -> None:
        with self._turn:
            self._aborted = True
            self._turn.notify_all()


class WindowTaker:
    """Turns a stage's input stream into sliding windows, shared by the stage's workers.

    The first window is the first ``size`` items; then one every ``stride`` items.
    The lock keeps window state and the channel's slice numbering in one order.
    """

    def __init__(self, channel: Channel, size: int, stride: int) -> None:
        self.channel = channel
        self.size = size
        self.stride = stride
        self.recent: deque[Any] = deque(maxlen=size)
        self.seen = 0
        self.lock = threading.Lock()

    def take(self, max_n: int, min_n: int = 1, timeout: float | None = None) -> Any:
        with self.lock:
            got = self.channel.take(max_n, min_n, timeout)
            if got is None:
                return None
            seq, offset, items = got
            windows: list[Any] = []
            for x in items:
                self.recent.append(x)
                self.seen += 1
                if self.seen >= self.size and (self.seen - self.size) % self.stride == 0:
                    windows.append(tuple(self.recent))
            return seq, offset, windows


class SliceSizer:
    """Adapts how many items a worker takes at once to the measured cost per item.

    A slice holds about ``target`` seconds of work, and, where ``byte_budget`` is
    set (a worker elsewhere), about that many bytes of large buffers in or out:
    enough work to amortise one hand-off, few enough frames in flight that their
    segments are reused and the next stage can start on the first of them.
    """

    __slots__ = ("byte_budget", "cost", "limit", "size", "target")

    def __init__(
        self, limit: int, target: float = SLICE_TARGET_SECONDS, byte_budget: int | None = None
    ) -> None:
        self.limit = max(1, min(limit, MAX_SLICE))
        self.target = target
        self.byte_budget = byte_budget
        self.size = 1
        self.cost = 0.0

    def update(self, n: int, seconds: float, nbytes: int = 0) -> None:
        """``n`` items (entries) took ``seconds``; ``nbytes``: their large buffers."""
        if n == 0:  # a window stage may take items that complete no window yet
            return
        per_item = seconds / n
        self.cost = per_item if self.cost == 0.0 else 0.7 * self.cost + 0.3 * per_item
        wanted = int(self.target / self.cost) if self.cost > 0 else self.limit
        if self.byte_budget is not None and nbytes > 0:
            wanted = min(wanted, self.byte_budget * n // nbytes)
        self.size = max(1, min(self.limit, wanted, self.size * 4))


def slice_size(sizer: SliceSizer, inp: Channel) -> int:
    """The sizer's size, but once the stream has ended at most half of what is left.

    The last items then go out in ever smaller slices (guided self-scheduling):
    the next stage starts on the first of them while the rest are worked on,
    instead of waiting for one last full slice (50 ms between processes) at the
    end of every run.
    """
    size = sizer.size
    if size > 1 and inp.producers <= 0:
        size = min(size, max(1, (len(inp) + 1) // 2))
    return size


def _slice_bytes(sizer: SliceSizer, items: list[Any], outputs: list[Any]) -> int:
    """About how many bytes of large buffers a slice took in or gave out (estimated
    from its first entry each way; a handle or bundle knows its own)."""
    if sizer.byte_budget is None:
        return 0
    into = payload_bytes(items[0]) * len(items) if items else 0
    out = payload_bytes(outputs[0]) * len(outputs) if outputs else 0
    return max(into, out)


class SliceCaller:
    """Calls a stage's function on the items of one slice, applying the error policy.

    ``part``, when given, receives a generator stage's outputs while the slice
    is still running (``outflow.OutputFlow``); ``call`` returns the rest.
    """

    __slots__ = ("batch", "fn", "kind", "label", "left_to_skip", "pace", "policy")

    def __init__(self, node: StageNode, fn: Callable[..., Any], counters: WorkerCounters) -> None:
        opts = node.stage.options
        self.fn = fn
        self.label = node.label
        self.kind = node.stage.call_kind
        self.batch = opts.batch
        self.policy = ErrorPolicy(node.label, opts.retries, opts.on_error, counters)
        self.pace = Pace()
        self.left_to_skip = 0  # of ``skip``, after the last slice (all its outputs were fewer)

    def call(
        self, items: list[Any], offset: int, part: Part | None = None, skip: int = 0
    ) -> list[Any]:
        """The slice's outputs (those not given to ``part``); ``skip``: drop this many
        of a generator stage's first outputs (handed on by a worker that died)."""
        if self.batch is not None:
            return self._call_batch(items, offset)
        if self.kind == "generator":
            try:
                return self._call_generator(items, offset, part, skip)
            except HandOnFailed as failed:
                raise cast("BaseException", failed.__cause__) from None
        return self._call_function(items, offset)

    def _call_function(self, items: list[Any], offset: int) -> list[Any]:
        fn, out = self.fn, list[Any]()
        append = out.append
        start = 0
        while True:
            before = len(out)
            try:
                for x in items if start == 0 else items[start:]:
                    append(fn(x))
                return out
            except Exception as exc:
                k = start + len(out) - before
                out.extend(self._recover(lambda x: [fn(x)], items[k], offset + k, exc))
                start = k + 1

    def _call_generator(
        self, items: list[Any], offset: int, part: Part | None, skip: int
    ) -> list[Any]:
        fn, pace = self.fn, self.pace
        flow = OutputFlow(part, pace, skip)
        out = flow.out  # stays one list
        for k, x in enumerate(items):
            before = len(out)
            it: Iterator[Any] | None = None
            if not flow.skip:
                n = pace.few
                try:
                    it = fn(x)  # a generator: its own iterator
                    out.extend(itertools.islice(cast("Iterator[Any]", it), n))
                except Exception as exc:
                    flow.mark, flow.sent = before, 0
                    flow.failed()
                    self._retry_generator(flow, x, offset + k, exc)
                    continue
                if len(out) - before < n:  # the common case: all its outputs in one go
                    continue
                flow.many(before)  # more: what it gave so far leaves now, the rest in parts
            else:
                flow.begin()
            try:
                if it is None:  # skipping the outputs a dead worker handed on
                    flow.drain(iter(fn(x)))
                else:
                    flow.drain(it, fresh=False)
            except Exception as exc:
                flow.failed()  # a retry must not duplicate what the failed attempt yielded
                self._retry_generator(flow, x, offset + k, exc)
        self.left_to_skip = flow.skip
        return flow.rest()

    def _retry_generator(self, flow: OutputFlow, x: Any, index: int, exc: Exception) -> None:
        attempt = 1
        while self.policy.should_retry([x], index, exc, attempt):
            attempt += 1
            try:
                flow.drain(iter(self.fn(x)))
                return
            except Exception as again:
                flow.failed()
                exc = again

    def _call_batch(self, items: list[Any], offset: int) -> list[Any]:
        attempt = 1
        while True:
            try:
                outputs: Iterable[Any] = self.fn(items)  # so that isinstance gives list[Any]
                outputs = list(outputs) if not isinstance(outputs, list) else outputs
            except Exception as exc:
                if self.policy.should_retry(items, offset, exc, attempt):
                    attempt += 1
                    continue
                return []
            if len(outputs) != len(items):
                problem = ValueError(
                    f"a batch function must return one output per input: "
                    f"got {len(outputs)} outputs for {len(items)} inputs"
                )
                raise StageError(self.label, offset, items, cause=problem) from problem
            return outputs

    def _recover(
        self, once: Callable[[Any], list[Any]], item: Any, index: int, exc: Exception
    ) -> list[Any]:
        attempt = 1
        while self.policy.should_retry([item], index, exc, attempt):
            attempt += 1
            try:
                return once(item)
            except Exception as again:
                exc = again
        return []


class Caller(Protocol):
    """What a worker loop calls a slice with: here (``LocalCaller``) or in a worker process."""

    slice_target: float  # seconds of work per slice worth one hand-off
    slice_bytes: int | None  # large-buffer bytes a slice may hold (None: no bound)

    def call(self, items: list[Any], offset: int, part: Part | None = None) -> list[Any]: ...
    def close(self) -> None: ...


class PipelinedCaller(Caller, Protocol):
    """A caller whose worker is elsewhere: it can hold ``depth`` slices in flight.

    ``submit`` sends a slice and returns at once; ``receive`` gives the outputs
    of the oldest slice submitted and not yet received. While a worker process
    or actor computes one slice, the next is already on its way to it, so the
    worker does not sit idle for a round trip between slices.
    """

    depth: int

    def submit(self, items: list[Any], offset: int) -> None: ...
    def receive(self, part: Part | None = None) -> list[Any]: ...


class LocalCaller:
    """Runs the stage in the calling thread: builds the callable (a class stage's instance)."""

    slice_target = SLICE_TARGET_SECONDS
    slice_bytes: int | None = None

    def __init__(self, node: StageNode, counters: WorkerCounters, unpack: bool = False) -> None:
        self.fn = node.stage.make_callable()
        try:
            self.slices = SliceCaller(node, self.fn, counters)
        except BaseException:
            close_callable(self.fn)
            raise
        self.call = self._unpack_then_call if unpack else self.slices.call

    def _unpack_then_call(
        self, items: list[Any], offset: int, part: Part | None = None
    ) -> list[Any]:
        # Outputs of a worker process may arrive as shared-memory handles.
        return self.slices.call(unpack_items(items), offset, part)

    def close(self) -> None:
        close_callable(self.fn)


CallerFactory = Callable[[int, WorkerCounters], Caller]


def _asyncio() -> Any:
    """asyncio, imported only by a run that has an ``async def`` stage (it is slow to import)."""
    import asyncio

    return asyncio


class AsyncSliceCaller:
    """An ``async def`` stage in a worker process: a slice's items all in flight on one loop."""

    def __init__(self, node: StageNode, fn: Callable[..., Any], counters: WorkerCounters) -> None:
        opts = node.stage.options
        self.fn = fn
        self.policy = ErrorPolicy(node.label, opts.retries, opts.on_error, counters)
        self.loop = _asyncio().new_event_loop()

    def call(self, items: list[Any], offset: int, part: Part | None = None) -> list[Any]:
        async def attempt(item: Any, index: int) -> list[Any]:
            tries = 1
            while True:
                try:
                    return [await self.fn(item)]
                except Exception as exc:
                    if not self.policy.should_retry([item], index, exc, tries):
                        return []
                    tries += 1

        async def every() -> list[list[Any]]:
            done: list[list[Any]] = await _asyncio().gather(
                *(attempt(x, offset + k) for k, x in enumerate(items))
            )
            return done

        return [y for outputs in self.loop.run_until_complete(every()) for y in outputs]

    def close(self) -> None:
        self.loop.close()


def close_callable(fn: Any) -> None:
    """Call a class stage instance's optional ``close()``."""
    close = getattr(fn, "close", None)
    if callable(close) and not inspect.isfunction(fn):
        close()


class StageRun:
    """One stage in one run: its input, where outputs go, and its workers' counters."""

    # What each worker counts into. Only the benchmarks swap it, for a subclass
    # whose updates do nothing, to measure what the statistics cost.
    counters_class: ClassVar[type[WorkerCounters]] = WorkerCounters

    def __init__(self, node: StageNode, inp: Channel, emitter: Emitter, state: RunState) -> None:
        opts = node.stage.options
        self.node = node
        self.inp = inp
        self.emitter = emitter
        self.state = state
        # An async stage has one dispatching worker with ``workers`` items in flight.
        threads = 1 if node.stage.call_kind == "async" else opts.workers
        self.counters = [self.counters_class() for _ in range(threads)]
        ordered_many = opts.ordered and (opts.workers > 1 or node.stage.call_kind == "async")
        room = state.gate(2 * opts.workers + 2) if ordered_many else None
        self.reorderer = Reorderer(emitter, room) if room is not None else None
        if self.reorderer is not None:
            state.on_stop.append(self.reorderer.abort)
        self.streams = streams_outputs(node)
        self.in_flight = state.gate(opts.workers) if node.stage.call_kind == "async" else None
        self.take = WindowTaker(inp, opts.window, opts.stride).take if opts.window else inp.take
        # A backend that runs the calls elsewhere (a worker process) sets this;
        # taking, ordering and emitting stay here, the same for every backend.
        self.caller_factory: CallerFactory | None = None
        # Between two stages in worker processes, whole output slices travel as
        # sealed bundles (``bundles.plan_bundles``); these say which side this is.
        self.bundles_in = False
        self.bundles_out = False
        self._live = len(self.counters)
        self._lock = threading.Lock()

    def worker_finished(self) -> None:
        with self._lock:
            self._live -= 1
            last = self._live == 0
        if last:
            self.emitter.close()

    def run_worker(self, wid: int) -> None:
        """The body of one worker: build the callable, loop over slices, tear down."""
        try:
            if self.node.stage.call_kind == "async" and self.caller_factory is None:
                AsyncStageLoop(self).run()
            else:
                self._sync_loop(wid)
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

    def _sync_loop(self, wid: int) -> None:
        opts = self.node.stage.options
        counters = self.counters[wid]
        if self.caller_factory is not None:
            caller: Caller = self.caller_factory(wid, counters)
        else:
            caller = LocalCaller(self.node, counters, unpack=self.state.packed)
        try:
            if getattr(caller, "depth", 1) > 1 and not opts.window:
                self._pipelined_loop(cast("PipelinedCaller", caller), counters)
            else:
                self._slice_loop(caller, counters)
        except BaseException:
            try:  # the error in flight is the run's error, not one close() may raise
                caller.close()
            except BaseException:
                pass
            raise
        caller.close()  # its error (a class stage's close() raised) fails the run

    def _taking(self, caller: Caller) -> tuple[SliceSizer, int | None, float | None]:
        """How a worker loop takes slices: its sizer, and batches (size, timeout)."""
        opts = self.node.stage.options
        sizer = SliceSizer(MAX_SLICE, caller.slice_target, caller.slice_bytes)
        if self.node.stage.call_kind == "async":  # elsewhere: a group of items in flight
            return sizer, opts.workers, ASYNC_GROUP_SECONDS
        return sizer, opts.batch, opts.batch_timeout

    def _slice_loop(self, caller: Caller, counters: WorkerCounters) -> None:
        """Take a slice, call it, hand its outputs on; until the input ends."""
        sizer, batch, timeout = self._taking(caller)
        reorderer, take, clock = self.reorderer, self.take, time.perf_counter
        while True:
            if reorderer is not None:
                reorderer.room.acquire()
            t0 = clock()
            got = take(batch, batch, timeout) if batch else take(sizer.size)
            t1 = clock()
            if got is None:
                if reorderer is not None:
                    reorderer.room.release()
                return
            seq, offset, items = got
            if counters.started is None:  # busy shares count from the first input on
                counters.started = t1
            sink = PartSink(self, seq) if self.streams else None
            outputs = caller.call(items, offset, sink)
            t2 = clock()
            self._hand_on(seq, outputs)
            t3 = clock()
            # bundles: the sizer counts them as items
            sizer.update(len(items), t2 - t1, _slice_bytes(sizer, items, outputs))
            self._count(counters, items, outputs, (t0, t1, t2, t3), sink)

    def _pipelined_loop(self, caller: PipelinedCaller, counters: WorkerCounters) -> None:
        """``_sync_loop`` with up to ``caller.depth`` slices in flight, received in order.

        With a slice in flight, the next is taken only if it is ready now (and
        there is room to reorder it): waiting for input must never hold back
        outputs that are already computed.
        """
        sizer, batch, timeout = self._taking(caller)
        reorderer, inp, clock = self.reorderer, self.inp, time.perf_counter
        pending: deque[tuple[int, int, list[Any], float, float]] = deque()
        ended = False
        last_done = 0.0
        while pending or not ended:
            if not ended and len(pending) < caller.depth:
                t0 = clock()
                got: tuple[int, int, list[Any]] | Literal[False] | None
                if not pending:
                    if reorderer is not None:
                        reorderer.room.acquire()
                    got = (
                        inp.take(batch, batch, timeout)
                        if batch
                        else inp.take(slice_size(sizer, inp))
                    )
                elif reorderer is not None and not reorderer.room.try_acquire():
                    got = False
                else:
                    got = (
                        inp.take_ready(batch, batch)
                        if batch
                        else inp.take_ready(slice_size(sizer, inp))
                    )
                    if got is False and reorderer is not None:
                        reorderer.room.release()
                if got is None:
                    ended = True
                    if reorderer is not None:
                        reorderer.room.release()
                    continue
                if got is not False:
                    seq, offset, items = got
                    t1 = clock()
                    if counters.started is None:  # busy shares count from the first input on
                        counters.started = t1
                    caller.submit(items, offset)
                    pending.append((seq, offset, items, t0 if not pending else t1, t1))
                    continue
            seq, offset, items, t0, t1 = pending.popleft()
            sink = PartSink(self, seq) if self.streams else None
            outputs = caller.receive(sink)
            t2 = clock()
            self._hand_on(seq, outputs)
            t3 = clock()
            # Busy from when the worker could start on it: its submission, or the
            # end of the slice before it (they queue at the worker).
            start = max(t1, last_done)
            last_done = t3
            sizer.update(len(items), t2 - start, _slice_bytes(sizer, items, outputs))
            self._count(counters, items, outputs, (t0 - t1 + start, start, t2, t3), sink)

    def _hand_on(self, seq: int, outputs: list[Any]) -> None:
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

    def _count(
        self,
        counters: WorkerCounters,
        items: list[Any],
        outputs: list[Any],
        times: tuple[float, float, float, float],
        sink: PartSink | None = None,
    ) -> None:
        """Count a slice in items (an entry of a bundled edge is a bundle of them)."""
        n_in = bundle_count(items) if self.bundles_in else len(items)
        n_out = bundle_count(outputs) if self.bundles_out else len(outputs)
        if sink is not None:
            n_out += sink.handed_on
        calls = 1 if self.node.stage.options.batch else n_in
        counters.count_slice(n_in, n_out, calls, *times)


def streams_outputs(node: StageNode) -> bool:
    """Whether the stage hands its outputs on while a slice runs (``outflow``): a
    generator stage without ``batch``."""
    return node.stage.call_kind == "generator" and node.stage.options.batch is None


class PartSink:
    """Takes a generator stage's outputs for slice ``seq`` while the slice still runs."""

    __slots__ = ("handed_on", "seq", "stage_run")

    def __init__(self, stage_run: StageRun, seq: int) -> None:
        self.stage_run = stage_run
        self.seq = seq
        self.handed_on = 0  # outputs (in items, not bundles)

    def __call__(self, outputs: list[Any]) -> None:
        sr = self.stage_run
        self.handed_on += bundle_count(outputs) if sr.bundles_out else len(outputs)
        sr.hand_on_part(self.seq, outputs)


class AsyncStageLoop:
    """An ``async def`` stage: one event-loop thread, ``workers`` items in flight.

    The calling thread takes items and submits one coroutine per item to the
    loop; results go through the reorderer keyed by input position.
    """

    def __init__(self, stage_run: StageRun) -> None:
        self.sr = stage_run
        self.opts = stage_run.node.stage.options
        self.counters = stage_run.counters[0]
        assert stage_run.in_flight is not None
        self.in_flight = stage_run.in_flight
        self.futures: set[Future[Any]] = set()

    def run(self) -> None:
        loop = _asyncio().new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"flowpipe-{self.sr.node.label}-loop", daemon=True
        )
        thread.start()
        fn = self.sr.node.stage.make_callable()
        policy = ErrorPolicy(
            self.sr.node.label, self.opts.retries, self.opts.on_error, self.counters
        )
        try:
            self._dispatch(loop, fn, policy)
            self.in_flight.wait_empty()
        finally:
            for fut in list(self.futures):
                fut.cancel()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            close_callable(fn)

    def _dispatch(self, loop: asyncio.AbstractEventLoop, fn: Any, policy: ErrorPolicy) -> None:
        take = self.sr.inp.take
        while True:
            got = take(self.opts.workers)
            if got is None:
                return
            _, offset, items = got
            if self.sr.state.packed:
                items = unpack_items(items)
            self.counters.items_in += len(items)
            for k, item in enumerate(items):
                if self.sr.reorderer is not None:
                    self.sr.reorderer.room.acquire()
                self.in_flight.acquire()
                fut = _asyncio().run_coroutine_threadsafe(
                    self._attempt(fn, policy, item, offset + k), loop
                )
                self.futures.add(fut)
                fut.add_done_callback(functools.partial(self._done, offset + k))

    async def _attempt(self, fn: Any, policy: ErrorPolicy, item: Any, index: int) -> list[Any]:
        attempt = 1
        while True:
            t0 = time.perf_counter()
            try:
                result = [await fn(item)]
                took = time.perf_counter() - t0
                self.counters.busy += took
                self.counters.record_latency(took, 1)
                return result
            except Exception as exc:
                if not policy.should_retry([item], index, exc, attempt):
                    return []
                attempt += 1

    def _done(self, index: int, fut: Future[Any]) -> None:
        self.futures.discard(fut)
        try:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                self.sr.state.fail(
                    exc
                    if isinstance(exc, StageError)
                    else StageError(self.sr.node.label, index, cause=exc)
                )
                return
            outputs = fut.result()
            self.counters.calls += 1
            self.counters.items_out += len(outputs)
            if self.sr.reorderer is not None:
                self.sr.reorderer.complete(index, outputs)
            else:
                self.sr.emitter.emit(outputs)
        except Aborted:
            pass
        except BaseException as err:
            self.sr.state.fail(err)
        finally:
            self.in_flight.release()


FAST_NEXT_SECONDS = 20e-6  # a source yielding faster than this is read in chunks
SOURCE_CHUNK_SECONDS = 0.001  # ...of at most this much reading
FAST_RUN = 64  # ...once this many items came that fast in a row


def _feed_iterator(iterator: Any, emitter: Emitter, counters: WorkerCounters) -> None:
    """Move a lazy source into the first channel, counting its items in ``counters.items_out``.

    Each item is sent the moment ``next()`` returns it, so a live source (a
    camera, a sensor, a socket) never has an item held back. Only after a long
    run of items that came back to back (``FAST_RUN`` calls of ``next()``
    quicker than ``FAST_NEXT_SECONDS``: a generator over data in memory, a file
    read line by line) are items moved in growing chunks of at most
    ``SOURCE_CHUNK_SECONDS`` of reading, which makes the hand-off cheap per
    item. The first slow ``next()`` sends the chunk and returns to one item at
    a time; an item read in such a burst waits at most for that call.
    """
    clock = time.perf_counter
    count = 0
    chunk: list[Any] = []
    fast_run = 0  # consecutive quick next() calls
    try:
        last = clock()
        for item in iterator:  # one at a time until the source proves fast
            now = clock()
            chunk.append(item)
            emitter.emit(chunk)
            count += 1
            chunk = []
            fast_run = fast_run + 1 if now - last <= FAST_NEXT_SECONDS else 0
            if fast_run >= FAST_RUN:  # in chunks while it stays fast
                limit = 2
                while True:
                    started = clock()
                    append = chunk.append  # item by item: a failing next() keeps what came
                    for item in itertools.islice(iterator, limit):
                        append(item)
                    took = clock() - started
                    if not chunk:
                        break
                    n = len(chunk)
                    emitter.emit(chunk)
                    count += n
                    chunk = []
                    if took > n * FAST_NEXT_SECONDS or n < limit:
                        break  # it slowed down (or ended): back to one at a time
                    if took < SOURCE_CHUNK_SECONDS / 2:
                        limit = min(limit * 2, SOURCE_CHUNK)
                fast_run = 0
            last = clock()
    finally:
        counters.items_out = count + len(chunk)  # the position of a failing next() included


def feed_source(
    open_source: Callable[[], Iterable[Any]],
    label: str,
    emitter: Emitter,
    state: RunState,
    counters: WorkerCounters,
) -> None:
    """Read the source lazily into the first channel; its errors end the run like a stage's.

    ``open_source`` is called here, in the feeder thread: for a source stage
    (``def camera(): ...``) that is where user code starts running.
    """
    iterator: Any = None
    counters.items_out = 0
    try:
        source = open_source()
        if isinstance(source, (list, tuple, range)):  # already in memory: hand over in chunks
            for start in range(0, len(source), SOURCE_CHUNK):
                chunk = list(source[start : start + SOURCE_CHUNK])
                emitter.emit(chunk)
                counters.items_out += len(chunk)
        else:
            iterator = iter(source)
            _feed_iterator(iterator, emitter, counters)
    except Aborted:
        pass
    except Exception as exc:
        index = counters.items_out if label != "source" else None
        err = StageError(label, index, cause=exc, yielded=True)
        err.__cause__ = exc
        state.fail(err)
    except BaseException as exc:
        state.fail(exc)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None and state.stopped:
            try:
                close()  # run the source generator's cleanup, in the thread that ran it
            except Exception:
                pass
        emitter.close()


def join_rows(
    inputs: list[Channel], keys: tuple[str, ...] | None, emitter: Emitter, state: RunState
) -> None:
    """Zip the branches' outputs position by position into tuples (or dicts)."""
    try:
        while True:
            got = inputs[0].take(MAX_SLICE)
            if got is None:
                break
            columns = [got[2]]
            n = len(columns[0])
            for ch in inputs[1:]:
                part = ch.take(n, n)
                if part is None or len(part[2]) != n:
                    raise RuntimeError("join branches went out of step (a branch lost an item)")
                columns.append(part[2])
            rows: list[Any] = list(zip(*columns))
            if keys is not None:
                rows = [dict(zip(keys, row)) for row in rows]
            emitter.emit(rows)
    except Aborted:
        pass
    except BaseException as exc:
        state.fail(exc)
    finally:
        emitter.close()
