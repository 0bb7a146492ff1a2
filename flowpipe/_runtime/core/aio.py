"""``async def`` stages: one event loop per worker, ``workers`` calls in flight.

One coroutine (``AsyncCalls.attempt``: await the call, retry by the stage's
policy, time it) serves both ways an async stage runs:

- ``AsyncStageLoop``, in the caller's process: a loop thread runs the
  coroutines while the worker thread takes items and submits one per item,
  as long as fewer than ``workers`` are in flight; results leave through the
  reorderer keyed by input position.
- ``AsyncSliceCaller``, in a worker elsewhere: the items of a slice (a group
  of ``workers``) run together on the worker's loop.

asyncio is imported only by a run that has an async stage (it is slow to import).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..._errors import CallTimedOut, StageError
from ..._observe.counters import WorkerCounters
from ..._transport.buffer import Aborted
from .invoke import Part, close_callable
from .policy import ErrorPolicy

if TYPE_CHECKING:
    from ..._plan.plan import StageNode
    from .loop import StageRun


def _asyncio() -> Any:
    import asyncio

    return asyncio


class AsyncCalls:
    """An async stage's calls, one coroutine per item, retried by the stage's policy."""

    __slots__ = ("counters", "fn", "policy", "timeout")

    def __init__(self, node: StageNode, fn: Callable[..., Any], counters: WorkerCounters) -> None:
        opts = node.stage.options
        self.fn = fn
        self.counters = counters
        self.policy = ErrorPolicy(node.label, opts.retries, opts.on_error, counters)
        self.timeout = opts.timeout  # per coroutine; past it, it is cancelled

    async def call(self, item: Any) -> Any:
        """``await fn(item)``; with ``timeout``, cancelled past it (``CallTimedOut``)."""
        if self.timeout is None:
            return await self.fn(item)
        raised = False  # by the stage itself (its own TimeoutError is not a timeout here)

        async def call() -> Any:
            nonlocal raised
            try:
                return await self.fn(item)
            except Exception:
                raised = True
                raise

        asyncio = _asyncio()
        try:
            return await asyncio.wait_for(call(), self.timeout)
        except asyncio.TimeoutError:
            if raised:
                raise
            raise CallTimedOut(
                f"the call took longer than timeout={self.timeout:g} s (it was cancelled)"
            ) from None

    async def attempt(self, item: Any, index: int) -> list[Any]:
        """The item's outputs (``[]`` if skipped); ``StageError`` fails the run."""
        attempt = 1
        while True:
            t0 = time.perf_counter()
            try:
                result = [await self.call(item)]
            except Exception as exc:
                if not self.policy.should_retry([item], index, exc, attempt):
                    return []
                attempt += 1
                continue
            took = time.perf_counter() - t0
            self.counters.busy += took
            self.counters.record_latency(took, 1)
            return result


class AsyncSliceCaller:
    """An ``async def`` stage in a worker elsewhere: a slice's items all in flight on one loop."""

    def __init__(self, node: StageNode, fn: Callable[..., Any], counters: WorkerCounters) -> None:
        self.calls = AsyncCalls(node, fn, counters)
        self.policy = self.calls.policy
        self.loop = _asyncio().new_event_loop()

    def call(self, items: list[Any], offset: int, part: Part | None = None) -> list[Any]:
        async def every() -> list[list[Any]]:
            attempt = self.calls.attempt
            done: list[list[Any]] = await _asyncio().gather(
                *(attempt(x, offset + k) for k, x in enumerate(items))
            )
            return done

        return [y for outputs in self.loop.run_until_complete(every()) for y in outputs]

    def close(self) -> None:
        self.loop.close()


class AsyncStageLoop:
    """An ``async def`` stage in the caller's process: a loop thread, ``workers`` in flight."""

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
        t0 = time.perf_counter()
        fn = self.sr.node.stage.make_callable()
        self.counters.startup += time.perf_counter() - t0
        try:
            self._dispatch(loop, AsyncCalls(self.sr.node, fn, self.counters))
            self.in_flight.wait_empty()
        finally:
            for fut in list(self.futures):
                fut.cancel()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            close_callable(fn)

    def _dispatch(self, loop: Any, calls: AsyncCalls) -> None:
        take, open_handles = self.sr.inp.take, self.sr.state.open_handles
        reorderer = self.sr.reorderer
        while True:
            got = take(self.opts.workers)
            if got is None:
                return
            _, offset, items = got
            if open_handles is not None:
                items = open_handles(items)
            self.counters.items_in += len(items)
            for k, item in enumerate(items):
                if reorderer is not None:
                    reorderer.room.acquire()
                self.in_flight.acquire()
                fut = _asyncio().run_coroutine_threadsafe(calls.attempt(item, offset + k), loop)
                self.futures.add(fut)
                fut.add_done_callback(functools.partial(self._done, offset + k))

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
            self.sr.hand_on(index, outputs)
        except Aborted:
            pass
        except BaseException as err:
            self.sr.state.fail(err)
        finally:
            self.in_flight.release()
