"""The body of a worker process: receive slices, call the stage, send outputs back.

Started by ``backend.WorkerProcess``, forked by the fork server or booted as a
fresh interpreter (``python -c "...child.main(conn_fd, lifeline_fd)"``):
nothing of the parent's ``__main__`` is imported or run here, so a script
without an ``if __name__ == "__main__":`` guard is safe, and functions
defined in ``__main__``, a notebook or ``python -c`` arrive by value through
cloudpickle.

The conversation is ``remote.messages`` on one socket (``wire`` encoding):
``Environment``, then ``LoadStage`` (answered ``Ready`` or ``Failure``), then
``CallSlice``s (answered ``PartOutputs``... ``SliceOutputs`` or ``Failure``;
each ``PartOutputs`` is answered ``More``, and at most ``PARTS_AHEAD`` wait
unanswered), then ``Close`` (answered ``Closed``; exit 0). A ``keep_alive``
stage's worker gets ``Park`` at the end of a run instead (answered ``Ready``:
it forgets the run's segments, keeps the stage) and ``Resume`` when a later
run takes it (answered ``Ready``: that run's label, prefix and plan). Every answer from
here carries ``report``: the shared-memory segments this process keeps arrays
over, and those it let go (``recycle.report``).

A thread reads the socket (``Inbox``), so the parent can send the next slice
while this process works on one, and this process never blocks on a full
socket while it writes a large reply. The child ignores SIGINT and lives in
its own session: Ctrl-C reaches only the parent, which ends its workers. If
the parent dies, the lifeline pipe reaches end-of-file and a watchdog thread
unlinks the shared-memory segments this process made and ends it at once.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from typing import Any, NamedTuple

from ...._transport.conn import Connection

EXIT_PARENT_GONE = 70
PARTS_AHEAD = 2  # parts of a generator stage's outputs sent before the parent took one on


def _watch_parent(lifeline_fd: int) -> None:
    try:
        while os.read(lifeline_fd, 1):
            pass
    except OSError:
        pass
    from ...._transport import recycle
    from .stacks import forget_stacks_file

    recycle.unlink_made()  # no one will give our segments back or sweep them
    forget_stacks_file()
    os._exit(EXIT_PARENT_GONE)  # the parent is gone: no one will read our outputs


class HungUp(NamedTuple):
    """The inbox's own note: the parent closed the socket."""


class Unreadable(NamedTuple):
    """The inbox's own note: a message could not be rebuilt here (an input)."""

    error: BaseException


class Inbox:
    """Reads every message as it arrives, in a thread; ``More`` gives credit for a part."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.closing = threading.Event()
        self.credit = threading.Semaphore(PARTS_AHEAD)
        threading.Thread(target=self._read, daemon=True).start()

    def _end(self) -> None:
        self.closing.set()
        self.credit.release(PARTS_AHEAD + 1)  # a part waiting for credit sees ``closing``

    def _read(self) -> None:
        from ...._transport import recycle, wire
        from ...remote.messages import Close, More

        while True:
            try:
                message = wire.recv(self.conn)
            except (EOFError, OSError):
                self.queue.put(HungUp())
                self._end()
                return
            except wire.WireError as exc:
                self.queue.put(Unreadable(exc))
                return
            if isinstance(message, More):
                recycle.give_back(message.released)  # segments of ours nobody sees any more
                self.credit.release()
                continue
            if isinstance(message, Close):
                self._end()
            self.queue.put(message)
            if isinstance(message, Close):
                return

    def wait_for_credit(self) -> bool:
        """Wait until a part may go; False once the run is closing."""
        self.credit.acquire()
        return not self.closing.is_set()


class Worker:
    """One stage in this process: calls its slices, packs and sends what they give."""

    def __init__(self, conn: Connection, label: str, node: Any, prefix: str, seal: bool) -> None:
        from ...remote.server import SliceServer

        self.conn = conn
        self.label = label
        self.prefix = prefix
        self.seal = seal  # the plan: this stage's outputs go out as sealed slices
        self.server = SliceServer(label, node)
        self.inbox: Inbox | None = None

    def send(self, message: Any) -> None:
        from ...._transport import wire

        wire.send(self.conn, message, None)

    def pack(self, outputs: list[Any]) -> list[Any]:
        """Large outputs stay in shared memory and the parent gets handles; for a next
        stage in worker processes too, the whole slice is one sealed bundle."""
        from ...._transport import wire

        if not self.seal:
            return wire.pack_outputs(outputs, self.prefix)
        return [wire.bundle(outputs, self.prefix)] if outputs else outputs

    def send_part(self, outputs: list[Any]) -> None:
        """A generator stage's outputs, sent while it runs; waits for credit."""
        from ...._transport import recycle
        from ...._transport.buffer import Aborted

        assert self.inbox is not None
        if not self.inbox.wait_for_credit():
            raise Aborted
        report = recycle.report()
        self.send(self.server.part_outputs(self.pack(outputs), report))

    def serve(self) -> int:
        """Answer slices until told to close; the exit code."""
        from ...._transport import recycle, wire
        from ...remote.messages import CallSlice, Park, Ready, Resume
        from ...remote.server import failure

        self.inbox = inbox = Inbox(self.conn)
        while True:
            message = inbox.queue.get()
            if inbox.closing.is_set():  # the run stopped: slices still queued here are not wanted
                return 0
            if isinstance(message, Unreadable):  # an input that cannot be rebuilt here
                bad = message.error
                self.send(failure(self.label, None, None, bad.__cause__ or bad, "input"))
                return 1
            if isinstance(message, Park):  # kept for a later run: its segments are swept
                recycle.end_run()
                self.send(Ready())
                continue
            if isinstance(message, Resume):  # a later run: its names and its plan
                self.label, self.prefix, self.seal = message
                self.server.relabel(self.label)
                self.send(Ready())
                continue
            if not isinstance(message, CallSlice):  # HungUp, Close
                return 0
            try:
                code = self.answer(message)
            except wire.WireError as exc:  # an output that cannot be pickled
                self.send(failure(self.label, None, None, exc.__cause__ or exc, "output"))
                return 1
            if code is not None:
                return code

    def answer(self, call: Any) -> int | None:
        """Call one slice and send its outputs; an exit code if this worker is done
        (the stage failed, or the run stopped while a part waited)."""
        from ...._transport import recycle, wire
        from ...._transport.buffer import Aborted
        from ...remote.messages import Failure

        recycle.give_back(call.released)  # segments of ours nobody sees any more
        items = wire.unbundle(call.items) if call.sealed else call.items
        offset, skip = call.offset, call.skip
        part = self.send_part if call.parts else None  # the caller has a sink for parts
        del call
        try:
            reply = self.server.call(items, offset, part, skip)
        except Aborted:  # sending a part: the run stopped
            return 0
        del items
        if isinstance(reply, Failure):
            self.send(reply)
            return 1
        done = reply._replace(outputs=self.pack(reply.outputs))
        del reply  # arrays of this slice that nothing keeps are gone now
        self.send(done._replace(report=recycle.report()))
        return None

    def close(self) -> None:
        """Run the stage's ``close()`` and say how it went (the parent is waiting)."""
        from ...._transport import recycle
        from ...remote.messages import Closed
        from ...remote.server import failure

        report = None
        try:
            self.server.close()
        except BaseException as exc:  # a class stage's close() failed: the run fails
            report = failure(self.label, None, None, exc, "close")
        try:
            self.send(Closed(report))
        except OSError:  # the parent is gone
            pass
        recycle.discard_free()


def serve(conn: Connection) -> int:
    """The conversation with the parent, from its first message to ``Closed``."""
    from ...._transport import wire
    from ...remote.messages import Environment, LoadStage, Ready
    from ...remote.server import failure
    from ...remote.sources import register

    env: Environment = wire.recv(conn)
    sys.path[:], sys.argv[:] = env.path, env.argv
    if env.stacks:  # the run watches for stalls
        from .stacks import write_stacks_on_signal

        write_stacks_on_signal(env.stacks)
    label = "?"
    try:
        load: LoadStage = wire.recv(conn)
        label = load.label
        register(load.sources)  # tracebacks name the user's file and line
        worker = Worker(conn, label, load.node, load.prefix, load.seal_outputs)
    except BaseException as exc:  # the parent names the stage: we may not know it
        if isinstance(exc, wire.WireError) and exc.__cause__ is not None:
            exc = exc.__cause__  # what unpickling the stage raised (a missing module)
        wire.send(conn, failure(label, None, None, exc, "start"), None)
        return 1
    wire.send(conn, Ready(), None)
    try:
        return worker.serve()
    finally:
        worker.close()


def main(conn_fd: int, lifeline_fd: int) -> None:
    from ...._transport import wire

    # Handles of the parent's segments arriving here are mapped, not kept (the
    # segments of a pipeline this worker runs itself are its own: ``wire._owned``).
    wire.IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends us
    threading.Thread(target=_watch_parent, args=(lifeline_fd,), daemon=True).start()
    conn = Connection(conn_fd)
    try:
        code = serve(conn)
    except (EOFError, OSError):  # the parent hung up: nothing left to report to
        code = 0
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: user threads must not keep a worker alive
