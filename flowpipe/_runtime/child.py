"""The body of a worker process: receive slices, call the stage, send outputs back.

Started by ``process.WorkerProcess`` as a fresh interpreter
(``python -c "...child.main(conn_fd, lifeline_fd)"``): nothing of the
parent's ``__main__`` is imported or run here, so a script without an
``if __name__ == "__main__":`` guard is safe, and functions defined in
``__main__``, a notebook or ``python -c`` arrive by value through cloudpickle.

Conversation (``wire`` messages on one socket)::

    parent                                  child
    (sys.path, sys.argv) ──────────────►    the parent's, so imports and argv-reading code agree
    (label, stage, prefix, bundle_out) ►    build the callable (a class stage's instance)
                        ◄───────────────    ("ready",) | ("error", ...)
    ("call", items, offset, bundled, released, skip)
                        ───────────────►    SliceCaller.call(items, offset)
                        ◄───────────────    a generator stage, while it runs:
                                            ("part", outputs, events, (held, dropped))
    ("more", released)  ───────────────►    (one per part: at most PARTS_AHEAD unanswered)
                        ◄───────────────    ("ok", outputs, errors, retries, skipped, left,
                                                   (held, dropped))
                                            | ("error", ...)
    ("close",)          ───────────────►    stage.close()
                        ◄───────────────    ("closed", None | error reply); exit 0

The child ignores SIGINT and lives in its own session: Ctrl-C reaches only the
parent, which ends its workers. If the parent dies, the lifeline pipe reaches
end-of-file and a watchdog thread unlinks the shared-memory segments this
process made and ends it at once.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

EXIT_PARENT_GONE = 70
PARTS_AHEAD = 2  # parts of a generator stage's outputs sent before the parent took one on


def _watch_parent(lifeline_fd: int) -> None:
    try:
        while os.read(lifeline_fd, 1):
            pass
    except OSError:
        pass
    from .._transport import recycle

    recycle.unlink_made()  # no one will give our segments back or sweep them
    os._exit(EXIT_PARENT_GONE)  # the parent is gone: no one will read our outputs


def _read_messages(
    conn: Connection,
    inbox: queue.SimpleQueue[Any],
    closing: threading.Event,
    credit: threading.Semaphore,
) -> None:
    """Read every message as it arrives, so that the parent can send the next slice
    while this process works on one (and never blocks on a full socket while this
    process writes a large reply). A ``("more",)`` gives ``credit`` for a part."""
    from .._transport import recycle, wire

    def end() -> None:
        closing.set()
        credit.release(PARTS_AHEAD + 1)  # a part waiting for credit sees ``closing``

    while True:
        try:
            message = wire.recv(conn)
        except (EOFError, OSError):
            inbox.put(("eof",))
            end()
            return
        except wire.WireError as exc:
            inbox.put(("unreadable", exc))
            return
        if message[0] == "more":
            recycle.give_back(message[1])  # segments of ours nobody sees any more
            credit.release()
            continue
        if message[0] == "close":
            end()
        inbox.put(message)
        if message[0] == "close":
            return


def serve(conn: Connection) -> int:
    from .._transport import recycle, wire
    from .._transport.buffer import Aborted
    from .remote import SliceServer, error_reply

    sys.path[:], sys.argv[:] = wire.recv(conn)
    label = "?"
    try:
        label, node, prefix, bundle_out = wire.recv(conn)
        server = SliceServer(label, node)
    except BaseException as exc:  # the parent names the stage: we may not know it
        if isinstance(exc, wire.WireError) and exc.__cause__ is not None:
            exc = exc.__cause__  # what unpickling the stage raised (a missing module)
        wire.send(conn, error_reply(label, None, None, exc, "start"), None)
        return 1
    wire.send(conn, ("ready",), None)
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    closing = threading.Event()
    credit = threading.Semaphore(PARTS_AHEAD)
    threading.Thread(
        target=_read_messages, args=(conn, inbox, closing, credit), daemon=True
    ).start()

    def pack(outputs: list[Any]) -> list[Any]:
        # Large outputs stay in shared memory; the parent gets handles. For
        # a next stage in worker processes too, the whole slice is one bundle.
        if not bundle_out:
            return wire.pack_outputs(outputs, prefix)
        return [wire.bundle(outputs, prefix)] if outputs else outputs

    def send_part(outputs: list[Any]) -> None:
        """A generator stage's outputs, sent while it runs; waits for credit."""
        credit.acquire()
        if closing.is_set():
            raise Aborted
        events = server.take_events()
        wire.send(conn, ("part", pack(outputs), events, recycle.report()), None)

    try:
        while True:
            message = inbox.get()
            if closing.is_set():  # the run stopped: slices still queued here are not wanted
                return 0
            if message[0] == "eof":
                return 0
            if message[0] == "unreadable":  # an input that cannot be rebuilt here
                bad: BaseException = message[1]
                wire.send(conn, error_reply(label, None, None, bad.__cause__ or bad, "input"), None)
                return 1
            if message[0] == "close":
                return 0
            _, items, offset, bundled, released, skip = message
            del message
            recycle.give_back(released)  # segments of ours nobody sees any more
            try:
                reply = server.call(
                    wire.unbundle(items) if bundled else items, offset, send_part, skip
                )
                del items
                if reply[0] == "error":
                    wire.send(conn, reply, None)
                    return 1
                answer = ("ok", pack(reply[1]), *reply[2:])
                del reply  # arrays of this slice that nothing keeps are gone now
                wire.send(conn, (*answer, recycle.report()), None)
                del answer
            except Aborted:  # sending a part: the run stopped
                return 0
            except wire.WireError as exc:  # an output that cannot be pickled
                cause = exc.__cause__ or exc
                wire.send(conn, error_reply(label, None, None, cause, "output"), None)
                return 1
    finally:
        report: tuple[Any, ...] | None = None
        try:
            server.close()
        except BaseException as exc:  # a class stage's close() failed: the run fails
            report = error_reply(label, None, None, exc, "close")
        try:
            wire.send(conn, ("closed", report), None)
        except OSError:  # the parent is gone
            pass
        recycle.discard_free()


def main(conn_fd: int, lifeline_fd: int) -> None:
    from .._transport import wire

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
