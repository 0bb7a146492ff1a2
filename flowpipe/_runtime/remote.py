"""Calling a stage's slices in a worker elsewhere (a process, a Ray actor). Written once.

Both sides of the conversation live here, so that every backend that runs a
stage outside the caller's process behaves the same:

- ``SliceServer`` is the worker's side: it builds the stage's callable once
  (a class stage's instance), calls slices with the shared ``SliceCaller``
  (retries, ``on_error``, batch checks) and answers with a *reply*:
  ``("ok", outputs, errors, retries, skipped)`` or an error reply carrying the
  exception (pickled on its own), its text and the remote traceback.
- ``RemoteCaller`` is the caller's side: the ``Caller`` a worker loop of
  ``engine.StageRun`` uses. It turns error replies back into ``StageError``,
  adds the worker's counters to the stage's, and handles a worker that dies:
  ``WorkerCrashed``, or with ``retries``/``on_error`` the lost slice run again
  item by item on a fresh worker, so the item that kills workers is found and
  nothing is lost or duplicated.

A backend supplies only how to start a worker and talk to it (``RemoteWorker``).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import cloudpickle

from .._errors import TEXT_LIMIT, StageError, WorkerCrashed, exception_text
from .._observe.counters import WorkerCounters
from .._plan.plan import StageNode
from .._transport.buffer import Aborted
from .._transport.wire import WireError, bundle_count, unbundle
from .engine import AsyncSliceCaller, Part, RunState, SliceCaller, StageRun, close_callable
from .policy import ErrorPolicy

logger = logging.getLogger("flowpipe")

STOP_GRACE = 0.5  # seconds a busy worker gets to finish its call once a run stops
POLL = 0.1  # how often a thread waiting on a worker looks at the stop switch
REMOTE_DEPTH = 2  # slices a worker loop keeps in flight to one worker (by default)


class WorkerDied(Exception):
    """The worker went away mid-conversation (its process ended, its actor died)."""


class RemoteFailure(Exception):
    """An exception from a worker that could not itself be sent back, as its text."""


# -- the worker's side ----------------------------------------------------------------


def error_reply(
    label: str, index: int | None, item: Any, exc: BaseException, what: str = ""
) -> tuple[Any, ...]:
    """An error as a reply. ``what``: "" (the stage raised), "start", "input", "output"."""
    text = _traceback_text(exc)
    try:
        exc_bytes: bytes | None = cloudpickle.dumps(exc)
    except BaseException:  # whatever its pickling raises, the error still goes back as text
        exc_bytes = None
    try:
        cloudpickle.dumps(item)
    except BaseException:
        item = None
    summary = f"{type(exc).__name__}: {exception_text(exc)}"
    return ("error", label, index, item, exc_bytes, summary, text, what)


def _traceback_text(exc: BaseException) -> str:
    """The traceback's text (``traceback`` survives a ``__str__`` that raises), its middle
    cut when a huge message would make it huge: the message is in the error already."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) <= 2 * TEXT_LIMIT:
        return text
    cut = len(text) - 2 * TEXT_LIMIT
    return f"{text[:TEXT_LIMIT]}\n... [cut: {cut} characters] ...\n{text[-TEXT_LIMIT:]}"


def _round_trips(x: Any) -> bool:
    """Whether ``x`` pickles and unpickles (an exception whose ``__init__`` takes other
    arguments than its ``args`` pickles, then fails to rebuild)."""
    try:
        cloudpickle.loads(cloudpickle.dumps(x))
    except BaseException:
        return False
    return True


def _sendable(event: tuple[Any, ...]) -> tuple[Any, ...]:
    """A policy event that the caller can rebuild: an exception that cannot travels
    as its text, an item that cannot as ``None``."""
    kind, index, what, exc = event
    if not _round_trips(exc):
        exc = RemoteFailure(f"{type(exc).__name__}: {exception_text(exc)}")
    if kind == "skip" and not _round_trips(what):
        what = [None] * len(what)
    return (kind, index, what, exc)


class SliceServer:
    """A stage as a worker runs it: built once, then called slice by slice."""

    def __init__(self, label: str, node: StageNode) -> None:
        self.label = label
        self.fn = node.stage.make_callable()
        self.counters = WorkerCounters()
        self.caller: SliceCaller | AsyncSliceCaller = (
            AsyncSliceCaller(node, self.fn, self.counters)
            if node.stage.call_kind == "async"
            else SliceCaller(node, self.fn, self.counters)
        )
        # Retries and skips, replayed by the caller (logs, an ``on_error`` callable).
        self.events: list[tuple[Any, ...]] = []
        self.caller.policy.events = self.events

    def call(
        self, items: list[Any], offset: int, part: Part | None = None, skip: int = 0
    ) -> tuple[Any, ...]:
        """The reply for one slice; the stage's own errors become error replies.

        ``part`` takes a generator stage's outputs while the slice runs (see
        ``SliceCaller``); an error it raises is raised here, not replied.
        """
        caller = self.caller
        try:
            if isinstance(caller, SliceCaller):
                outputs = caller.call(items, offset, part, skip)
            else:
                outputs = caller.call(items, offset)
        except (Aborted, WireError):  # from ``part``: the run stopped, an output cannot go
            raise
        except StageError as err:
            cause = err.__cause__ if err.__cause__ is not None else err
            return error_reply(self.label, err.index, err.item, cause)
        except BaseException as exc:  # SystemExit in a stage too: report it, do not vanish
            return error_reply(self.label, None, None, exc)  # which item: not known here
        c = self.counters
        left = caller.left_to_skip if isinstance(caller, SliceCaller) else 0
        reply = ("ok", outputs, c.errors, c.retries, c.skipped, left, self.take_events())
        c.errors = c.retries = c.skipped = 0
        return reply

    def take_events(self) -> list[tuple[Any, ...]]:
        """The retries and skips since the last call, for the caller to replay (a part
        of a generator's outputs carries them too, so they are not held back)."""
        events = [_sendable(e) for e in self.events]
        self.events.clear()
        return events

    def close(self) -> None:
        try:
            if isinstance(self.caller, AsyncSliceCaller):
                self.caller.close()
        finally:
            close_callable(self.fn)


# -- the caller's side ----------------------------------------------------------------


def wait_with_grace(
    ready: Callable[[float], bool], state: RunState, kill: Callable[[], None]
) -> None:
    """Wait until ``ready(timeout)`` says the worker has answered.

    Once the run stops, the worker gets ``STOP_GRACE`` seconds to finish its
    call (so a class stage's ``close()`` can still run), then ``kill()`` ends
    it, after which ``ready`` reports the end of the conversation.
    """
    stop_seen: float | None = None
    while not ready(POLL):
        if state.stopped:
            now = time.monotonic()
            if stop_seen is None:
                stop_seen = now
            elif now - stop_seen > STOP_GRACE:
                kill()
                stop_seen = float("inf")


def of_slice(offset: int) -> str:
    """How an error names a slice whose failing item is not known."""
    return f"of the slice from input #{offset} on"


def error_from_reply(
    reply: tuple[Any, ...], offset: int, where: str, label: str | None = None
) -> StageError:
    """Rebuild a worker's error: the original exception as ``__cause__``, its traceback text.
    ``what`` in the reply: "" (the stage raised on an item), "start", "close", "input",
    "output". ``label``: the stage's name, where the worker may not know it (it failed
    to load the stage, and with it the name)."""
    _, named, index, item, exc_bytes, summary, text, what = reply
    stage: str = named if label is None else label
    cause: BaseException
    try:
        cause = cloudpickle.loads(exc_bytes) if exc_bytes is not None else RemoteFailure(summary)
    except Exception:  # the exception class cannot be rebuilt here: keep its text
        cause = RemoteFailure(summary)
    if what == "input":
        failure = RemoteFailure(  # which input of the slice: not known
            f"an input ({of_slice(offset)}) could not be rebuilt in the {where}: {summary}"
        )
        index, item = None, None
    elif what == "output":  # which output of the slice: not known
        failure = RemoteFailure(
            f"an output ({of_slice(offset)}) cannot be sent back from the {where}: {summary}"
        )
        index = None
    else:
        failure = cause
    if failure is not cause:
        failure.__cause__ = cause
    if what in ("start", "close"):
        index = None
    err = StageError(stage, index, item, cause=failure, remote_traceback=text)
    err.__cause__ = failure
    return err


def died_in_close(label: str, where: str, how: str) -> WorkerCrashed:
    """A worker that died in a class stage's ``close()`` at the end of a run: that fails
    the run, as an exception ``close()`` raises does."""
    crash = WorkerDied(f"the {where} died ({how}) in the stage's close()")
    err = WorkerCrashed(label, None, cause=crash)
    err.__cause__ = crash
    return err


def unsendable_error(
    label: str, items: list[Any], offset: int, exc: BaseException, where: str
) -> StageError:
    """A slice that could not be sent to a worker: name its first item pickle refuses."""
    index, item = offset, None
    for k, x in enumerate(items):
        try:
            cloudpickle.dumps(x)
        except Exception:
            index, item = offset + k, x
            break
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    failure = RemoteFailure(f"an input cannot be sent to the {where}: {exc}")
    failure.__cause__ = cause
    err = StageError(label, index, item, cause=failure)
    err.__cause__ = failure
    return err


class RemoteWorker(Protocol):
    """One started worker, as a backend talks to it."""

    def send(self, items: list[Any], offset: int, bundled: bool = False, skip: int = 0) -> None:
        """Send a slice without waiting for it; ``bundled``: ``items`` are bundles of
        items (``wire.bundle``) for the worker to open; ``skip``: outputs to drop
        (handed on by a worker that died). ``StageError`` if a item cannot be
        sent, ``WorkerDied`` if the worker went away."""
        ...

    def reply(self, offset: int) -> tuple[Any, ...]:
        """The next reply for the oldest slice sent (``offset`` is its own):
        ``("part", outputs, events)`` while a generator stage runs (answer with ``more``),
        then ``("ok", ...)``; raises ``StageError`` for an error reply and
        ``WorkerDied`` when the worker went away."""
        ...

    def more(self) -> None:
        """A part was handed on: the worker may send another."""
        ...

    def exit_description(self) -> str:
        """How the worker ended ("killed by SIGKILL", "exit code 3"), for messages."""
        ...

    def close(self) -> StageError | None:
        """Let the worker finish: a class stage's ``close()`` runs, as long as it takes
        unless the run stopped (then it gets ``STOP_GRACE``); returns its error."""
        ...


class RemoteCaller:
    """The ``Caller`` of one stage worker whose calls run in a ``RemoteWorker``."""

    def __init__(
        self,
        stage_run: StageRun,
        counters: WorkerCounters,
        start_worker: Callable[[], RemoteWorker],
        *,
        what: str,
        slice_target: float,
        slice_bytes: int | None = None,
        depth: int = REMOTE_DEPTH,
    ) -> None:
        self.state: RunState = stage_run.state
        self.label = stage_run.node.label
        self.counters = counters
        self.start_worker = start_worker
        self.what = what  # "worker process", "Ray actor": for messages
        self.slice_target = slice_target
        self.slice_bytes = slice_bytes
        opts = stage_run.node.stage.options
        self.policy = ErrorPolicy(self.label, opts.retries, opts.on_error, counters)
        self.lock = threading.Lock()
        self.stage_run = stage_run
        self.depth = depth
        # submitted, not received: (items, offset, bundled, delivered to the worker;
        # None: held back until its turn)
        self.sent: deque[tuple[list[Any], int, bool, bool | None]] = deque()
        # Slices lost in a crash, to run again in their turn: (items, offset, skip,
        # the number of its items' next attempt).
        self.reruns: deque[tuple[list[Any], int, int, int]] = deque()
        self.broken = False  # a send failed: the worker is gone
        self.worker: RemoteWorker | None = None
        self.worker = self._start()

    def _start(self) -> RemoteWorker:
        if self.state.stopped:
            raise Aborted
        try:
            worker = self.start_worker()
        except WorkerDied as died:
            if self.state.stopped:
                raise Aborted from None
            raise self._crashed(None, None, died) from died
        with self.lock:
            self.worker = worker
        return worker

    def _replace(self) -> RemoteWorker:
        with self.lock:
            old, self.worker = self.worker, None
        if old is not None:
            old.close()
        return self._start()

    def call(self, items: list[Any], offset: int, part: Part | None = None) -> list[Any]:
        self.submit(items, offset)
        return self.receive(part)

    def submit(self, items: list[Any], offset: int) -> None:
        """Send a slice to the worker; ``depth`` of them may be on their way at once."""
        bundled = self.stage_run.bundles_in
        delivered: bool | None = False
        if self.reruns or any(d is None for *_, d in self.sent):
            delivered = None  # lost slices run again first: this one is sent in its turn
        elif not self.broken and self.worker is not None:
            try:
                self.worker.send(items, offset, bundled)
                delivered = True
            except WorkerDied:
                # Gone (or ended after an error reply, still to be read): ``receive``
                # reads what it sent before, then runs this slice on a fresh worker.
                self.broken = True
        self.sent.append((items, offset, bundled, delivered))

    def receive(self, part: Part | None = None) -> list[Any]:
        """The outputs of the oldest slice submitted (those not given to ``part``)."""
        if self.reruns:
            return self._one_by_one(*self.reruns.popleft(), part)
        items, offset, bundled, delivered = self.sent[0]
        assert self.worker is not None
        handed_on = 0  # outputs of this slice given to ``part``
        try:
            if delivered is None:  # held back while lost slices ran again: its turn now
                self.worker.send(items, offset, bundled)
            elif not delivered:
                raise WorkerDied
            reply = self.worker.reply(offset)
            while reply[0] == "part":
                handed_on += self._take_part(reply, part, [])
                reply = self.worker.reply(offset)
        except WorkerDied:
            if self.state.stopped:
                raise Aborted from None
            return self._recover(handed_on, part)
        self.sent.popleft()
        return self._outputs(reply)

    def _take_part(self, reply: tuple[Any, ...], part: Part | None, held: list[Any]) -> int:
        """A ``("part", outputs, events)`` reply: its events replayed, its outputs handed on
        (after ``held``, outputs of the slice that came before them) or, without
        ``part``, added to ``held``; the worker may send the next. Returns how many."""
        _, outputs, events = reply
        if events:
            self.policy.replay(events)
        if part is None:
            held.extend(outputs)
        else:
            if held:
                part(held[:])
                held.clear()
            part(outputs)
        assert self.worker is not None
        self.worker.more()
        return self._count_outputs(outputs)

    def _count_outputs(self, outputs: list[Any]) -> int:
        return bundle_count(outputs) if self.stage_run.bundles_out else len(outputs)

    def _recover(self, handed_on: int, part: Part | None) -> list[Any]:
        """The worker died: every slice sent to it is lost; of the first, ``handed_on``
        outputs came out. Without ``retries``/``on_error``: ``WorkerCrashed``. Otherwise
        they run again, in order, one item at a time on a fresh worker, to find the item
        that kills it (the first slice's first ``handed_on`` outputs are not sent again),
        each when its turn comes (``receive``), so a generator's parts go on streaming."""
        lost = [
            (unbundle(items) if bundled else items, offset)
            for items, offset, bundled, _ in self.sent
        ]
        self.sent.clear()
        self.broken = False
        first, offset = lost[0]
        crash = self._crash(offset, len(first))
        self._replace()
        if self.policy.retries == 0 and self.policy.handler == "raise":
            raise self._crashed(offset, first[0] if len(first) == 1 else first, crash)
        logger.warning("stage %r: %s; going on with a fresh %s", self.label, crash, self.what)
        self.counters.errors += 1
        if self.policy.retries:
            self.counters.retries += 1  # the slices run again, one item at a time
        attempt = 2  # the crash was the first slice's first attempt (the rest never started)
        for items, offset in lost:
            self.reruns.append((items, offset, handed_on, attempt))
            handed_on, attempt = 0, 1
        return self._one_by_one(*self.reruns.popleft(), part)

    def _one_by_one(
        self, items: list[Any], offset: int, skip: int, first: int, part: Part | None
    ) -> list[Any]:
        """Run a lost slice again, item by item; ``skip``: its first outputs, handed on
        before the crash, are not sent again (nor, after a crash here, those handed on
        by the attempt that died); ``first``: the number of each item's attempt here
        (2 for the slice the worker died on: ``retries`` counts that crash's rerun)."""
        out: list[Any] = []
        for k, item in enumerate(items):
            attempt = first
            while True:
                assert self.worker is not None
                try:
                    self.worker.send([item], offset + k, skip=skip)
                    reply = self.worker.reply(offset + k)
                    while reply[0] == "part":
                        skip += self._take_part(reply, part, out)
                        reply = self.worker.reply(offset + k)
                    out.extend(self._outputs(reply))
                    skip = reply[5]
                    break
                except WorkerDied:
                    if self.state.stopped:
                        raise Aborted from None
                    crash = self._crash(offset + k, 1)
                    self._replace()
                    try:
                        again = self.policy.should_retry([item], offset + k, crash, attempt)
                    except StageError:
                        raise self._crashed(offset + k, item, crash) from crash
                    if not again:
                        break
                    attempt += 1
        return out

    def _crash(self, offset: int, n: int) -> WorkerDied:
        assert self.worker is not None
        how = self.worker.exit_description()
        span = f"input #{offset}" if n == 1 else f"inputs #{offset}-#{offset + n - 1}"
        return WorkerDied(f"the {self.what} died ({how}) while working on {span}")

    def _crashed(self, index: int | None, item: Any, crash: WorkerDied) -> WorkerCrashed:
        err = WorkerCrashed(self.label, index, item, cause=crash)
        err.__cause__ = crash
        return err

    def _outputs(self, reply: tuple[Any, ...]) -> list[Any]:
        _, outputs, errors, retries, skipped, _left, events = reply
        self.counters.errors += errors
        self.counters.retries += retries
        self.counters.skipped += skipped
        if events:
            self.policy.replay(events)  # may raise: an ``on_error`` callable that failed
        return outputs  # type: ignore[no-any-return]

    def close(self) -> None:
        """End the worker; an error of the stage's ``close()`` is raised here."""
        with self.lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            err = worker.close()
            if err is not None:
                raise err
