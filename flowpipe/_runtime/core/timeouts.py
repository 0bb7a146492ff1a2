"""A stage's ``timeout`` where its calls run in this process: calls past it are abandoned.

Python cannot stop a thread inside user code. So a stage with ``timeout`` on
the thread backend has its calls made by a *call thread* that its worker
thread hands each call to, and the worker waits for the answer at most
``timeout`` seconds::

    worker thread (WorkerLoop, SliceCaller)          call thread (daemon)
    ───────────────────────────────────────          ────────────────────
    TimedCalls.call(fn, x) ──(fn, x)────────────────► fn(x)
        waits up to ``timeout`` ◄──result or error──  ...
        past it: CallTimedOut (retries, on_error)     left finishing fn(x), named in a warning;
        and a fresh call thread for the next call     its result is dropped, then it ends

The failure goes through the stage's retries and ``on_error`` like any
exception (a retry runs on the fresh call thread). The timeout is per call: a
function's call on one item, a batch function's call on one batch, and for a
generator stage each ``next()``: every output (and the end) must come within
``timeout`` of the one before. Where the calls run in a worker process or an
actor, the caller kills the worker instead (``remote.caller``); ``async def``
stages use ``asyncio.wait_for`` (``aio``), which cancels the coroutine.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..._errors import CallTimedOut
from .state import start_thread

logger = logging.getLogger("flowpipe")
_numbers = itertools.count(1)


class CallThread:
    """A daemon thread that makes the calls it is handed, one at a time."""

    __slots__ = ("abandoned", "done", "error", "jobs", "result", "thread")

    def __init__(self, label: str) -> None:
        self.jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], Any] | None] = queue.SimpleQueue()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.thread = start_thread(f"{label}-call{next(_numbers)}", self._serve)

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, arg = job
            try:
                self.result = fn(arg)
            except BaseException as exc:  # raised in the worker thread, which asked
                self.error = exc
            self.done.set()
            if self.abandoned:
                return
        # ``None``: the worker closed, or left this thread inside an abandoned call

    def close(self) -> None:
        self.jobs.put(None)
        if not self.abandoned:
            self.thread.join()


class TimedCalls:
    """A worker's calls of a stage with ``timeout``, each in a call thread, bounded in time."""

    __slots__ = ("label", "runner", "timeout")

    def __init__(self, label: str, timeout: float) -> None:
        self.label = label
        self.timeout = timeout
        self.runner: CallThread | None = None

    def call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """``fn(arg)``, or ``CallTimedOut`` once it has taken longer than ``timeout``."""
        runner = self.runner
        if runner is None:
            runner = self.runner = CallThread(self.label)
        runner.done.clear()
        runner.jobs.put((fn, arg))
        if not runner.done.wait(self.timeout):
            runner.abandoned = True
            runner.jobs.put(None)  # it ends once the call returns
            self.runner = None
            name = runner.thread.name
            logger.warning(
                "stage %r: a call took longer than timeout=%g s and was abandoned; "
                "thread %s is left finishing it (its result is dropped)",
                self.label,
                self.timeout,
                name,
            )
            raise CallTimedOut(
                f"the call took longer than timeout={self.timeout:g} s "
                f"(abandoned: thread {name} is left finishing it)"
            )
        error, result = runner.error, runner.result
        runner.error = runner.result = None
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None


class TimedIterator:
    """A generator stage's outputs, each ``next()`` bounded by the stage's ``timeout``."""

    __slots__ = ("calls", "it")

    def __init__(self, calls: TimedCalls, it: Iterator[Any]) -> None:
        self.calls = calls
        self.it = it

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self) -> Any:
        return self.calls.call(next, self.it)

    def close(self) -> None:
        close = getattr(self.it, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # still running in an abandoned call thread
                pass


def timed(fn: Callable[[Any], Any], kind: str, calls: TimedCalls) -> Callable[[Any], Any]:
    """``fn`` with each call (a generator stage: each output) bounded by ``calls.timeout``."""
    if kind == "generator":

        def outputs(x: Any) -> TimedIterator:
            return TimedIterator(calls, iter(fn(x)))

        return outputs

    def call(x: Any) -> Any:
        return calls.call(fn, x)

    return call
