"""The caller's side of calls elsewhere: ``RemoteCaller``, written once for every such backend.

``RemoteCaller`` is the ``Caller`` a worker loop (``core.loop.WorkerLoop``)
uses when the stage runs in a worker process or an actor: it sends slices to
one worker with up to ``depth`` in flight, reads the answers in order
(``messages``), turns a ``Failure`` back into ``StageError``, adds the
worker's counts to the stage's, and handles a worker that dies:
``WorkerCrashed``, or with ``retries``/``on_error`` the lost slices run again
item by item on a fresh worker, so the item that kills workers is found and
nothing is lost or duplicated.

A stage with ``timeout`` (not ``async def``: its worker bounds each coroutine
itself) sends one call per slice (one item, or one batch), and the answer must
come within ``timeout`` of when the worker could start the call (its previous
answer came, or the slice was sent; for a generator stage, of its last part).
Past that the worker is killed and replaced, and the call counts as failed with
``CallTimedOut``: retried on the fresh worker, skipped, or ``StageTimeout``.

A backend supplies only how to start a worker and talk to it (``RemoteWorker``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from ..._errors import CallTimedOut, StageError, WorkerCrashed
from ..._observe.counters import WorkerCounters
from ..._transport.buffer import Aborted
from ..core import keep
from ..core.invoke import Part
from ..core.loop import StageRun
from ..core.parts import sealed_count
from ..core.policy import ErrorPolicy
from ..core.shaping import MAX_SLICE
from ..core.state import Opener, RunState
from .errors import Overdue, WorkerDied
from .messages import PartOutputs, Reply, SliceOutputs

logger = logging.getLogger("flowpipe")

STOP_GRACE = 0.5  # seconds a busy worker gets to finish its call once a run stops
POLL = 0.1  # how often a thread waiting on a worker looks at the stop switch
REMOTE_DEPTH = 2  # slices a worker loop keeps in flight to one worker (by default)


def wait_with_grace(
    ready: Callable[[float], bool],
    state: RunState,
    kill: Callable[[], None],
    give_up_at: float | None = None,
) -> None:
    """Wait until ``ready(timeout)`` says the worker has answered.

    Once the run stops, the worker gets ``STOP_GRACE`` seconds to finish its
    call (so a class stage's ``close()`` can still run), then ``kill()`` ends
    it, after which ``ready`` reports the end of the conversation. Past
    ``give_up_at`` (a ``time.monotonic()`` instant), raises ``Overdue``.
    """
    stop_seen: float | None = None
    wait = POLL
    while not ready(wait):
        if give_up_at is not None:
            left = give_up_at - time.monotonic()
            if left <= 0:
                raise Overdue
            wait = min(POLL, left)
        if state.stopped:
            now = time.monotonic()
            if stop_seen is None:
                stop_seen = now
            elif now - stop_seen > STOP_GRACE:
                kill()
                stop_seen = float("inf")


class RemoteWorker(Protocol):
    """One started worker, as a backend talks to it."""

    def send(
        self,
        items: list[Any],
        offset: int,
        sealed: bool = False,
        skip: int = 0,
        parts: bool = False,
    ) -> None:
        """Send a slice without waiting for it; ``sealed``: ``items`` are sealed slices
        for the worker to open; ``skip``: outputs to drop
        (handed on by a worker that died); ``parts``: the worker may answer a function
        stage's slice in parts (``PartOutputs``), the caller has a sink for them.
        ``StageError`` if a item cannot be sent, ``WorkerDied`` if the worker went away."""
        ...

    def reply(self, offset: int, give_up_at: float | None = None) -> Reply:
        """The next answer for the oldest slice sent (``offset`` is its own):
        ``PartOutputs`` while a generator stage runs (answer with ``more``), then
        ``SliceOutputs``; raises ``StageError`` for a ``Failure``, ``WorkerDied``
        when the worker went away, and ``Overdue`` when none came by ``give_up_at``
        (a ``time.monotonic()`` instant)."""
        ...

    def kill(self) -> None:
        """End the worker now, inside a call (one past the stage's ``timeout``)."""
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

    def park(self) -> bool:
        """The run ended: keep the worker, its stage built, for a later run
        (``keep_alive``); ``False`` if it cannot be kept (then it is closed)."""
        ...


class Sent(NamedTuple):
    """A slice submitted and not received yet."""

    items: list[Any]
    offset: int
    sealed: bool  # ``items`` are sealed slices
    parts: bool  # the worker may answer it in parts
    delivered: bool | None  # sent to the worker; False: the send failed; None: held back


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
        resume: Callable[[Any], None] | None = None,
        releases: bool = True,
        slot: int | None = None,
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
        # An async stage's worker bounds each coroutine itself (``asyncio.wait_for``).
        timed = opts.timeout is not None and stage_run.node.stage.call_kind != "async"
        self.timeout = opts.timeout if timed else None
        self.max_slice = 1 if timed else MAX_SLICE  # timed: one call per slice
        self.clock_from = 0.0  # when the worker could start on the oldest slice sent
        self.sent: deque[Sent] = deque()  # submitted, not received, in order
        # Slices lost in a crash, to run again in their turn: (items, offset, skip,
        # the number of its items' next attempt).
        self.reruns: deque[tuple[list[Any], int, int, int]] = deque()
        self.broken = False  # a send failed: the worker is gone
        # A crash whose input is not known yet: the next crash while lost slices run
        # again one by one is that input's (``_recover``).
        self.hunting: WorkerDied | None = None
        # A ``keep_alive`` stage: a worker kept from an earlier run is taken and
        # ``resume``d for this one (the backend says how), and parked at the end.
        self.keep_key = keep.key_of(stage_run.node) if resume is not None else None
        self.resume = resume
        self.slot = slot  # the worker's number in its stage: a kept worker of that slot first
        self.worker: RemoteWorker | None = None
        self.worker = self._start()

    def _start(self) -> RemoteWorker:
        if self.state.stopped:
            raise Aborted
        try:
            worker = self._kept() or self.start_worker()
        except WorkerDied as died:
            if self.state.stopped:
                raise Aborted from None
            raise self._crashed(None, None, died) from died
        with self.lock:
            self.worker = worker
        return worker

    def _kept(self) -> RemoteWorker | None:
        """A worker kept from an earlier run, resumed for this one; one that died
        while kept is closed and the next is tried (then a fresh one starts)."""
        while (kept := keep.take(self.keep_key, self.state, self.slot)) is not None:
            assert self.resume is not None
            try:
                self.resume(kept)
            except WorkerDied:
                kept.close()
                continue
            except BaseException:
                kept.close()
                raise
            worker: RemoteWorker = kept
            return worker
        return None

    def _replace(self) -> RemoteWorker:
        with self.lock:
            old, self.worker = self.worker, None
        if old is not None:
            old.close()
        t0 = time.perf_counter()
        try:
            return self._start()
        finally:
            self.counters.startup += time.perf_counter() - t0

    def call(self, items: list[Any], offset: int, part: Part | None = None) -> list[Any]:
        self.submit(items, offset, part is not None)
        return self.receive(part)

    def submit(self, items: list[Any], offset: int, parts: bool = False) -> None:
        """Send a slice to the worker; ``depth`` of them may be on their way at once.
        ``parts``: ``receive`` will have a sink for outputs handed on while it runs."""
        sealed = self.stage_run.sealed_in
        delivered: bool | None = False
        if self.reruns or any(s.delivered is None for s in self.sent):
            delivered = None  # lost slices run again first: this one is sent in its turn
        elif not self.broken and self.worker is not None:
            try:
                self.worker.send(items, offset, sealed, parts=parts)
                delivered = True
                if not self.sent:
                    self.clock_from = time.monotonic()
            except WorkerDied:
                # Gone (or ended after an error reply, still to be read): ``receive``
                # reads what it sent before, then runs this slice on a fresh worker.
                self.broken = True
        self.sent.append(Sent(items, offset, sealed, parts, delivered))

    def receive(self, part: Part | None = None) -> list[Any]:
        """The outputs of the oldest slice submitted (those not given to ``part``).

        Without ``part``, outputs that come in parts all the same are held and
        returned with the rest: a slice's outputs are never dropped."""
        if self.reruns:
            return self._rerun(part)
        items, offset, sealed, parts, delivered = self.sent[0]
        assert self.worker is not None
        handed_on = 0  # outputs of this slice given to ``part``
        held: list[Any] = []  # ... or, without ``part``, kept for the answer
        try:
            if delivered is None:  # held back while lost slices ran again: its turn now
                self.worker.send(items, offset, sealed, parts=parts)
                self.clock_from = time.monotonic()
            elif not delivered:
                raise WorkerDied
            reply = self._reply(offset)
            while isinstance(reply, PartOutputs):
                n = self._take_part(reply, part, held)
                handed_on += n if part is not None else 0
                reply = self._reply(offset)
        except WorkerDied as died:
            if self.state.stopped:
                raise Aborted from None
            return self._recover(handed_on, part, died.blameless)
        except Overdue:
            return self._overdue(items, offset, handed_on, part)
        self.sent.popleft()
        outputs = self._outputs(reply)
        return held + outputs if held else outputs

    def _reply(self, offset: int) -> Reply:
        """The worker's next answer; with ``timeout``, ``Overdue`` past it (the clock
        restarts at each answer: a generator's next part has ``timeout`` too)."""
        assert self.worker is not None
        if self.timeout is None:
            return self.worker.reply(offset)
        reply = self.worker.reply(offset, self.clock_from + self.timeout)
        self.clock_from = time.monotonic()  # the next part, or the next slice if sent, from now
        return reply

    def _overdue(self, items: list[Any], offset: int, skip: int, part: Part | None) -> list[Any]:
        """The oldest slice, one call (an item, or a batch), ran past ``timeout``: the
        worker is killed and replaced, the slices sent after it go again in their turn,
        and the call is retried (on the fresh worker), skipped, or ``StageTimeout``.
        ``skip``: a generator's outputs already handed on, not sent again."""
        exc: Exception = self._timed_out()
        later = list(self.sent)[1:]
        self.sent.clear()
        self.sent.extend(s._replace(delivered=None) for s in later)
        attempt = 1
        while self._should_retry(items, offset, exc, attempt):
            attempt += 1
            held: list[Any] = []
            try:
                assert self.worker is not None
                self.worker.send(items, offset, skip=skip, parts=part is not None)
                self.clock_from = time.monotonic()
                reply = self._reply(offset)
                while isinstance(reply, PartOutputs):
                    skip += self._take_part(reply, part, held)
                    reply = self._reply(offset)
                return held + self._outputs(reply)
            except Overdue:
                exc = self._timed_out()
            except WorkerDied:
                if self.state.stopped:
                    raise Aborted from None
                exc = self._crash(offset, len(items))
                self._replace()
        return []

    def _should_retry(self, items: list[Any], offset: int, exc: Exception, attempt: int) -> bool:
        """The policy's answer for a call that timed out or whose worker died (then
        ``WorkerCrashed`` if the run must fail)."""
        try:
            return self.policy.should_retry(items, offset, exc, attempt)
        except StageError:
            if not isinstance(exc, WorkerDied):
                raise
            raise self._crashed(offset, items[0] if len(items) == 1 else items, exc) from exc

    def _timed_out(self) -> CallTimedOut:
        """Kill the worker whose call ran past ``timeout``, start a fresh one; the error."""
        assert self.worker is not None
        self.worker.kill()
        self._replace()
        return CallTimedOut(
            f"the call took longer than timeout={self.timeout:g} s (the {self.what} was killed)"
        )

    def _take_part(self, reply: PartOutputs, part: Part | None, held: list[Any]) -> int:
        """A part: its events replayed, its outputs handed on (after ``held``, outputs
        of the slice that came before them) or, without ``part``, added to ``held``;
        the worker may send the next. Returns how many."""
        outputs, events = reply.outputs, reply.events
        self.counters.add_usage(reply.cpu, reply.queued, reply.rss, reply.worker_cpu, reply.wall)
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

    def _recover(self, handed_on: int, part: Part | None, blameless: bool = False) -> list[Any]:
        """The worker died: every slice sent to it is lost; of the first, ``handed_on``
        outputs came out. They run again, in order, one item at a time on a fresh
        worker, each when its turn comes (``receive``), so a generator's parts go on
        streaming (the first slice's first ``handed_on`` outputs are not sent again).

        Which input killed the worker is not known (it may be in any slice sent): the
        first crash while they run again is taken for that input's second attempt, so
        the error names it (``index``, ``item``) and ``retries`` counts what was
        configured. Without ``retries``/``on_error``, that crash fails the run with
        ``WorkerCrashed``; a crash that does not come again fails it too, once the lost
        slices ran, naming no input. A batch stage's slice is its input: no search; nor
        is there one for a ``blameless`` death (a lost node): without ``retries`` the
        run fails at once, without waiting for a fresh worker to search on."""
        lost = [(self._open(s.items) if s.sealed else s.items, s.offset) for s in self.sent]
        self.sent.clear()
        self.broken = False
        first, offset = lost[0]
        n = sum(len(items) for items, _ in lost)
        crash = self._crash(offset, n)
        fail = self.policy.retries == 0 and self.policy.handler == "raise"
        if fail and blameless:
            raise self._crashed(None, None, crash)
        if fail and (n == 1 or self.stage_run.node.stage.options.batch is not None):
            # No fresh worker to wait for: its start could take long, or never come
            # (a lost node held the only resources), and nothing would run on it.
            raise self._crashed(offset, first[0] if len(first) == 1 else first, crash)
        try:
            self._replace()
        except WorkerCrashed as no_fresh:  # e.g. a lost node held the only place it fits
            note = WorkerDied(f"{crash}; {no_fresh.__cause__}")
            raise self._crashed(offset, first[0] if len(first) == 1 else first, note) from crash
        self.counters.errors += 1
        if fail:
            logger.info("stage %r: %s; running them again one by one", self.label, crash)
        else:
            logger.warning("stage %r: %s; going on with a fresh %s", self.label, crash, self.what)
            if self.policy.retries:
                self.counters.retries += 1  # the slices run again, one item at a time
        self.hunting = crash
        for items, offset in lost:
            self.reruns.append((items, offset, handed_on, 1))
            handed_on = 0
        return self._rerun(part)

    def _rerun(self, part: Part | None) -> list[Any]:
        """The next lost slice, run again item by item; after the last, a crash whose
        input was not found fails the run if nothing allows going on."""
        out = self._one_by_one(*self.reruns.popleft(), part)
        if not self.reruns and self.hunting is not None:
            crash, self.hunting = self.hunting, None
            if self.policy.retries == 0 and self.policy.handler == "raise":
                note = WorkerDied(f"{crash}; running them again one by one did not crash it")
                raise self._crashed(None, None, note) from crash
        return out

    def _one_by_one(
        self, items: list[Any], offset: int, skip: int, first: int, part: Part | None
    ) -> list[Any]:
        """Run a lost slice again, item by item; ``skip``: its first outputs, handed on
        before the crash, are not sent again (nor, after a crash here, those handed on
        by the attempt that died); ``first``: the number of each item's attempt here."""
        out: list[Any] = []
        for k, item in enumerate(items):
            attempt = first
            while True:
                assert self.worker is not None
                try:
                    self.worker.send([item], offset + k, skip=skip, parts=part is not None)
                    self.clock_from = time.monotonic()
                    reply = self._reply(offset + k)
                    while isinstance(reply, PartOutputs):
                        skip += self._take_part(reply, part, out)
                        reply = self._reply(offset + k)
                    out.extend(self._outputs(reply))
                    skip = reply.left
                    break
                except (WorkerDied, Overdue) as lost:
                    exc: Exception
                    if isinstance(lost, Overdue):  # StageTimeout if not retried or skipped
                        exc = self._timed_out()
                    elif self.state.stopped:
                        raise Aborted from None
                    else:
                        exc = self._crash(offset + k, 1)
                        if self.hunting is not None:  # the input that killed the worker
                            self.hunting = None  # before: this was its second attempt
                            attempt = max(attempt, 2)
                        # Asked before a fresh worker starts: failing needs none, and a
                        # lost node may have held the only resources it could start on.
                        again = self._should_retry([item], offset + k, exc, attempt)
                        self._replace()
                        if not again:
                            break
                        attempt += 1
                        continue
                    again = self._should_retry([item], offset + k, exc, attempt)
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
        self.counters.add_usage(reply.cpu, reply.queued, reply.rss, reply.worker_cpu, reply.wall)
        self.counters.errors += reply.errors
        self.counters.retries += reply.retries
        self.counters.skipped += reply.skipped
        if reply.events:
            self.policy.replay(reply.events)  # may raise: an ``on_error`` callable that failed
        return reply.outputs

    def _open(self, entries: list[Any]) -> list[Any]:
        assert self.open_sealed is not None, "sealed slices from a backend that cannot open them"
        return self.open_sealed(entries)

    def park(self) -> keep.Kept | None:
        """The run ended: the worker, kept for a later run (``keep_alive``); ``None``
        if it cannot be (the backend keeps none, or it is not idle): ``close`` it."""
        if self.resume is None or self.sent or self.reruns or self.broken:
            return None
        with self.lock:
            worker, self.worker = self.worker, None
        if worker is not None and worker.park():
            return worker
        with self.lock:
            self.worker = worker
        return None

    def close(self) -> None:
        """End the worker; an error of the stage's ``close()`` is raised here."""
        with self.lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            err = worker.close()
            if err is not None:
                raise err
