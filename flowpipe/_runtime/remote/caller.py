"""The caller's side of calls elsewhere: ``RemoteCaller``, written once for every such backend.

``RemoteCaller`` is the ``Caller`` a worker loop (``core.loop.WorkerLoop``)
uses when the stage runs in a worker process or an actor: it sends slices to
one worker with up to ``depth`` in flight, reads the answers in order
(``messages``), turns a ``Failure`` back into ``StageError``, adds the
worker's counts to the stage's, and handles a worker that dies:
``WorkerCrashed``, or with ``retries``/``on_error`` the lost slices run again
item by item on a fresh worker, so the item that kills workers is found and
nothing is lost or duplicated.

A backend supplies only how to start a worker and talk to it (``RemoteWorker``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..._errors import StageError, WorkerCrashed
from ..._observe.counters import WorkerCounters
from ..._transport.buffer import Aborted
from ..core.invoke import Part
from ..core.loop import StageRun, sealed_count
from ..core.policy import ErrorPolicy
from ..core.state import Opener, RunState
from .errors import WorkerDied
from .messages import PartOutputs, Reply, SliceOutputs

logger = logging.getLogger("flowpipe")

STOP_GRACE = 0.5  # seconds a busy worker gets to finish its call once a run stops
POLL = 0.1  # how often a thread waiting on a worker looks at the stop switch
REMOTE_DEPTH = 2  # slices a worker loop keeps in flight to one worker (by default)


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


class RemoteWorker(Protocol):
    """One started worker, as a backend talks to it."""

    def send(self, items: list[Any], offset: int, sealed: bool = False, skip: int = 0) -> None:
        """Send a slice without waiting for it; ``sealed``: ``items`` are sealed slices
        for the worker to open; ``skip``: outputs to drop
        (handed on by a worker that died). ``StageError`` if a item cannot be
        sent, ``WorkerDied`` if the worker went away."""
        ...

    def reply(self, offset: int) -> Reply:
        """The next answer for the oldest slice sent (``offset`` is its own):
        ``PartOutputs`` while a generator stage runs (answer with ``more``), then
        ``SliceOutputs``; raises ``StageError`` for a ``Failure`` and ``WorkerDied``
        when the worker went away."""
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
        open_sealed: Opener | None = None,
        releases: bool = True,
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
        # Whether the worker answers a function stage's slice in parts (``core/release.py``)
        self.releases = releases
        self.open_sealed = open_sealed  # a backend that seals slices opens them (crash re-runs)
        # submitted, not received: (items, offset, sealed, delivered to the worker;
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
        sealed = self.stage_run.sealed_in
        delivered: bool | None = False
        if self.reruns or any(d is None for *_, d in self.sent):
            delivered = None  # lost slices run again first: this one is sent in its turn
        elif not self.broken and self.worker is not None:
            try:
                self.worker.send(items, offset, sealed)
                delivered = True
            except WorkerDied:
                # Gone (or ended after an error reply, still to be read): ``receive``
                # reads what it sent before, then runs this slice on a fresh worker.
                self.broken = True
        self.sent.append((items, offset, sealed, delivered))

    def receive(self, part: Part | None = None) -> list[Any]:
        """The outputs of the oldest slice submitted (those not given to ``part``)."""
        if self.reruns:
            return self._one_by_one(*self.reruns.popleft(), part)
        items, offset, sealed, delivered = self.sent[0]
        assert self.worker is not None
        handed_on = 0  # outputs of this slice given to ``part``
        try:
            if delivered is None:  # held back while lost slices ran again: its turn now
                self.worker.send(items, offset, sealed)
            elif not delivered:
                raise WorkerDied
            reply = self.worker.reply(offset)
            while isinstance(reply, PartOutputs):
                handed_on += self._take_part(reply, part, [])
                reply = self.worker.reply(offset)
        except WorkerDied:
            if self.state.stopped:
                raise Aborted from None
            return self._recover(handed_on, part)
        self.sent.popleft()
        return self._outputs(reply)

    def _take_part(self, reply: PartOutputs, part: Part | None, held: list[Any]) -> int:
        """A part: its events replayed, its outputs handed on (after ``held``, outputs
        of the slice that came before them) or, without ``part``, added to ``held``;
        the worker may send the next. Returns how many."""
        outputs, events = reply.outputs, reply.events
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
        return sealed_count(outputs) if self.stage_run.sealed_out else len(outputs)

    def _recover(self, handed_on: int, part: Part | None) -> list[Any]:
        """The worker died: every slice sent to it is lost; of the first, ``handed_on``
        outputs came out. Without ``retries``/``on_error``: ``WorkerCrashed``. Otherwise
        they run again, in order, one item at a time on a fresh worker, to find the item
        that kills it (the first slice's first ``handed_on`` outputs are not sent again),
        each when its turn comes (``receive``), so a generator's parts go on streaming."""
        lost = [
            (self._open(items) if sealed else items, offset)
            for items, offset, sealed, _ in self.sent
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
                    while isinstance(reply, PartOutputs):
                        skip += self._take_part(reply, part, out)
                        reply = self.worker.reply(offset + k)
                    out.extend(self._outputs(reply))
                    skip = reply.left
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

    def _outputs(self, reply: SliceOutputs) -> list[Any]:
        self.counters.errors += reply.errors
        self.counters.retries += reply.retries
        self.counters.skipped += reply.skipped
        if reply.events:
            self.policy.replay(reply.events)  # may raise: an ``on_error`` callable that failed
        return reply.outputs

    def _open(self, entries: list[Any]) -> list[Any]:
        assert self.open_sealed is not None, "sealed slices from a backend that cannot open them"
        return self.open_sealed(entries)

    def close(self) -> None:
        """End the worker; an error of the stage's ``close()`` is raised here."""
        with self.lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            err = worker.close()
            if err is not None:
                raise err
