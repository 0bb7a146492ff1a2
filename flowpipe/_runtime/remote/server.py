"""The worker's side of a call elsewhere: a stage built once, then called slice by slice.

``SliceServer`` runs in a worker process (``backends/process/child.py``) and in
a Ray actor (``backends/ray.py``). It calls slices with the core's
``SliceCaller`` (retries, ``on_error``, batch checks), exactly as a worker
thread does, and answers with a message (``messages``): the outputs and what
it counted, or a ``Failure`` that carries the exception (pickled on its own),
its text and the remote traceback. What the caller must see happen (retry and
skip log lines, an ``on_error`` callable) is recorded as policy events and
replayed in the caller's process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..._errors import TEXT_LIMIT, StageError, exception_text
from ..._observe.counters import WorkerCounters
from ..._observe.usage import ThreadClock, process_cpu, resident_bytes
from ..._transport.buffer import Aborted
from ..._transport.wire import WireError
from ..core.aio import AsyncSliceCaller
from ..core.fused import FusedCaller, slice_caller
from ..core.invoke import Part, SliceCaller, close_callable
from ..core.policy import PolicyEvent
from .messages import Failure, PartOutputs, SegmentReport, SliceOutputs
from .sources import traceback_text

RSS_SECONDS = 0.05  # a worker reads its resident memory at most this often

if TYPE_CHECKING:
    from ..._plan.plan import StageNode


class RemoteFailure(Exception):
    """An exception from a worker that could not itself be sent back, as its text."""


def failure(
    label: str, index: int | None, item: Any, exc: BaseException, what: str = ""
) -> Failure:
    """An error as a message. ``what``: "" (the stage raised), "start", "close", "input",
    "output"."""
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
    return Failure(label, index, item, exc_bytes, summary, text, what)


def _traceback_text(exc: BaseException) -> str:
    """The traceback's text (``traceback`` survives a ``__str__`` that raises), its middle
    cut when a huge message would make it huge: the message is in the error already."""
    text = traceback_text(exc)  # from the user's code on, shipped code named by its file
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


def _sendable(event: PolicyEvent) -> PolicyEvent:
    """A policy event that the caller can rebuild: an exception that cannot travels
    as its text, an item that cannot as ``None``."""
    kind, index, what, exc = event
    if not _round_trips(exc):
        exc = RemoteFailure(f"{type(exc).__name__}: {exception_text(exc)}")
    if kind == "skip" and not _round_trips(what):
        what = [None] * len(what)
    return PolicyEvent(kind, index, what, exc)


class SliceServer:
    """A stage as a worker runs it: built once, then called slice by slice."""

    def __init__(self, label: str, node: StageNode) -> None:
        self.label = label
        self.fn = node.stage.make_callable()
        self.counters = WorkerCounters()
        self.caller: SliceCaller | AsyncSliceCaller = (
            AsyncSliceCaller(node, self.fn, self.counters)
            if node.stage.call_kind == "async"
            else slice_caller(node, self.fn, self.counters)  # a fused group's: its stages in turn
        )
        # Retries and skips, replayed by the caller (logs, an ``on_error`` callable).
        self.events: list[PolicyEvent] = []
        self.caller.policy.events = self.events
        # What the worker uses from here on (building the stage was its start): in its
        # calls, the calling thread's own CPU and wait for a core (as a worker thread
        # counts them), and the whole process's CPU.
        self.clock = ThreadClock()
        self.worker_mark = process_cpu()
        self.used: tuple[float, float | None, float] | None = None  # the last call's
        self.rss: int | None = None  # resident memory, read at most every RSS_SECONDS
        self.rss_at = -RSS_SECONDS

    def usage(self) -> dict[str, Any]:
        """What the worker used since its last answer, as fields of an answer: ``cpu``,
        ``queued`` and ``wall`` of its last call (a generator's parts: none yet),
        ``worker_cpu`` of the whole process, ``rss`` (read at most every ``RSS_SECONDS``:
        reading it costs about 11 µs, more than a cheap slice's own hand-off)."""
        worker = process_cpu()
        now = time.monotonic()
        if now - self.rss_at >= RSS_SECONDS:
            self.rss, self.rss_at = resident_bytes(), now
        cpu, queued, wall = self.used if self.used is not None else (None, None, None)
        used = {
            "cpu": cpu,
            "queued": queued,
            "wall": wall,
            "worker_cpu": worker - self.worker_mark,
            "rss": self.rss,
        }
        self.used, self.worker_mark = None, worker
        return used

    def call(
        self,
        items: list[Any],
        offset: int,
        part: Part | None = None,
        skip: int = 0,
        clock: ThreadClock | None = None,
    ) -> SliceOutputs | Failure:
        """The answer for one slice; the stage's own errors become a ``Failure``.

        ``part`` takes a generator stage's outputs while the slice runs (see
        ``SliceCaller``); an error it raises is raised here, not answered.
        ``clock``: the calling thread's own, when it is not the thread that built
        this server (a clock times the thread it was made in).
        """
        caller = self.caller
        clock = self.clock if clock is None else clock
        clock.begin()
        try:
            if isinstance(caller, SliceCaller):
                outputs = caller.call(items, offset, part, skip)
            else:
                outputs = caller.call(items, offset)
        except (Aborted, WireError):  # from ``part``: the run stopped, an output cannot go
            raise
        except StageError as err:
            cause = err.__cause__ if err.__cause__ is not None else err
            # ``err.stage``: the stage of a fused group that failed (else this one)
            return failure(err.stage, err.index, err.item, cause)
        except BaseException as exc:  # SystemExit in a stage too: report it, do not vanish
            return failure(self.label, None, None, exc)  # which item: not known here
        finally:
            self.used = (*clock.end(), clock.wall)
        c = self.counters
        left = caller.left_to_skip if isinstance(caller, SliceCaller) else 0
        done = SliceOutputs(
            outputs, c.errors, c.retries, c.skipped, left, self.take_events(), **self.usage()
        )
        c.errors = c.retries = c.skipped = 0
        return done

    def part_outputs(self, outputs: list[Any], report: SegmentReport | None = None) -> PartOutputs:
        """Outputs of a slice that is still running (a generator's, or those computed
        before a slow call), with the events and the usage since the last answer."""
        return PartOutputs(outputs, self.take_events(), report, **self.usage())

    def relabel(self, label: str) -> None:
        """A kept worker serves a run that calls its stage ``label`` (``keep_alive``)."""
        self.label = self.caller.policy.label = label
        if isinstance(self.caller, SliceCaller):
            self.caller.label = label

    def take_events(self) -> list[PolicyEvent]:
        """The retries and skips since the last call, for the caller to replay (a part
        of a generator's outputs carries them too, so they are not held back)."""
        # A part may be sent from the releaser's thread while the slice goes on adding
        # events: take those there are now, and only those.
        n = len(self.events)
        events = [_sendable(e) for e in self.events[:n]]
        del self.events[:n]
        return events

    def close(self) -> None:
        self.clock.close()
        try:
            if isinstance(self.caller, AsyncSliceCaller):
                self.caller.close()
        finally:
            try:
                close_callable(self.fn)
            finally:
                if isinstance(self.caller, FusedCaller):
                    self.caller.close_fused()
